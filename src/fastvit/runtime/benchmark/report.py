"""The benchmark's results and their report: a markdown table of latency, throughput, share of the
matmul peak, memory and output differences, every ratio against the peers (ONNX Runtime, and OpenVINO
at the same precision) measured in the same run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["OPENVINO_PATHS", "PEER_PATH", "REFERENCE_PATH", "BenchmarkResult", "PathResult"]

REFERENCE_PATH = "eager"
"""The path whose outputs the others are compared with."""
PEER_PATH = "ort"
"""The path the "× ORT" ratios are taken against."""
OPENVINO_PATHS = ("openvino_fp32", "openvino")
"""The paths the "× OV" ratios are taken against: the first that runs at the same precision."""


@dataclass
class PathResult:
    key: str
    label: str
    precision: str = "fp32"
    latency_ms: list[float] = field(default_factory=list)  # batch-1 call times
    batch_ms: dict[int, list[float]] = field(default_factory=dict)  # batch -> call times (ms)
    peak_mib: dict[int, float] = field(default_factory=dict)
    setup_s: float = float("nan")
    first_call_s: float = float("nan")
    max_abs_diff: float | None = None
    top1_agree: float | None = None
    note: str = ""
    error: str = ""

    def median_ms(self, batch: int) -> float | None:
        times = self.batch_ms.get(batch)
        return statistics.median(times) if times else None

    def throughput(self, batch: int) -> float | None:
        median = self.median_ms(batch)
        return batch / median * 1e3 if median else None


@dataclass
class BenchmarkResult:
    name: str
    input_size: tuple[int, int, int]
    gflop_per_image: float
    batch_sizes: tuple[int, ...]
    threads: int
    matmul: dict[str, float]
    paths: dict[str, PathResult]
    foreign_cpu: float
    machine: str
    capabilities: dict[str, bool] | None
    bf16_native: bool
    versions: dict[str, str]
    command: str
    seconds: float

    def _peer(self, key: str | None) -> PathResult | None:
        result = self.paths.get(key) if key else None
        return result if result is not None and not result.error else None

    def _openvino_peer(self, precision: str) -> PathResult | None:
        return next((p for p in map(self._peer, OPENVINO_PATHS) if p is not None and p.precision == precision), None)

    def header(self) -> str:
        """The model, the machine (CPU, its capabilities, native bf16) and the matmul peaks."""
        flags = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in (self.capabilities or {}).items())
        return (
            f"{self.name} at {self.input_size[1]}×{self.input_size[2]}, {self.gflop_per_image:.2f} GFLOP/image; "
            f"{self.machine} ({flags or 'capabilities unknown'}; native bf16 in oneDNN: "
            f"{'yes' if self.bf16_native else 'no'}); {self.threads} threads; matmul (torch.mm, best of two "
            f"measurements in this run) fp32 {self.matmul.get('float32', float('nan')):.1f} GFLOP/s, "
            f"bf16 {self.matmul.get('bfloat16', float('nan')):.1f} GFLOP/s."
        )

    def markdown(self) -> str:
        big = max(self.batch_sizes)
        ort = self._peer(PEER_PATH)
        lines = [
            self.header(),
            "",
            f"| path | precision | batch 1: median ms | × ORT | × OV | batch {big}: img/s | × ORT | × OV "
            f"| GFLOP/s (% of mm peak) | peak MiB (b{big}) | first call s | max abs Δ vs fp32 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for result in self.paths.values():
            if result.error:
                dashes = " | ".join(["–"] * 9)
                lines.append(f"| {result.label} | {result.precision} | {dashes} | {result.error} |")
                continue
            ov = self._openvino_peer(result.precision)
            b1, thr = result.median_ms(1), result.throughput(big)
            rate = thr * self.gflop_per_image if thr else (1e3 / b1 * self.gflop_per_image if b1 else None)
            peak = self.matmul.get("bfloat16" if result.precision == "bf16" else "float32")
            cells = [
                result.label,
                result.precision,
                _number(b1, ".1f"),
                _ratio(b1, ort.median_ms(1) if ort else None),
                _ratio(b1, ov.median_ms(1) if ov else None),
                _number(thr, ".1f"),
                _ratio(thr, ort.throughput(big) if ort else None),
                _ratio(thr, ov.throughput(big) if ov else None),
                f"{rate:.1f} ({100 * rate / peak:.0f} %)" if rate and peak else "–",
                _number(result.peak_mib.get(big), ".0f"),
                f"{result.first_call_s:.2f}",
                "ref." if result.key == REFERENCE_PATH else _number(result.max_abs_diff, ".1e"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [f"- {r.label.strip('*')}: {r.note}" for r in self.paths.values() if r.note]
        lines += [
            "",
            f"× ORT, × OV: time ratio at batch 1 (lower is better), throughput ratio at batch {big} (higher is "
            f"better), against {ort.label if ort else 'ONNX Runtime'} and against OpenVINO at the path's own "
            f"precision. GFLOP/s is at batch {big}, as a share of the matmul peak at the path's precision. Other "
            f"processes used {100 * self.foreign_cpu:.0f} % of the machine's CPU time during the measurements.",
            *notes,
            "",
            f"Versions: {', '.join(f'{k} {v}' for k, v in self.versions.items())}. Run: `{self.command}` "
            f"({self.seconds:.0f} s).",
        ]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "name": self.name, "input_size": self.input_size, "gflop_per_image": self.gflop_per_image,
            "batch_sizes": self.batch_sizes, "threads": self.threads, "matmul_gflops": self.matmul,
            "foreign_cpu": self.foreign_cpu, "machine": self.machine, "capabilities": self.capabilities,
            "bf16_native": self.bf16_native, "versions": self.versions,
            "paths": {k: vars(v) for k, v in self.paths.items()},
        }


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "–"


def _ratio(value: float | None, peer: float | None) -> str:
    return f"{value / peer:.2f}" if value and peer else "–"
