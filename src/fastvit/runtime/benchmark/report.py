"""The benchmark's results and their report: a markdown table of latency, throughput, share of the
matmul peak, memory and output differences, every ratio against the peer path measured in the same run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["PEER_PATH", "REFERENCE_PATH", "BenchmarkResult", "PathResult"]

REFERENCE_PATH = "eager"
"""The path whose outputs the others are compared with."""
PEER_PATH = "ort"
"""The path every speed ratio is taken against."""


@dataclass
class PathResult:
    key: str
    label: str
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
    versions: dict[str, str]
    command: str
    seconds: float

    def markdown(self) -> str:
        big = max(self.batch_sizes)
        peer = self.paths.get(PEER_PATH)
        peer_b1 = peer.median_ms(1) if peer and not peer.error else None
        peer_big = peer.throughput(big) if peer and not peer.error else None
        fp32_peak = self.matmul.get("float32")
        lines = [
            f"{self.name} at {self.input_size[1]}×{self.input_size[2]}, {self.gflop_per_image:.2f} GFLOP/image; "
            f"{self.machine}; {self.threads} threads; matmul (torch.mm, best of two measurements in this run) "
            f"fp32 {fp32_peak:.1f} GFLOP/s, bf16 {self.matmul.get('bfloat16', float('nan')):.2f} GFLOP/s.",
            "",
            f"| path | batch 1: median ms | × ORT | batch {big}: img/s | × ORT | GFLOP/s (% of fp32 mm) "
            f"| peak MiB (b{big}) | first call s | max abs Δ vs fp32 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for result in self.paths.values():
            if result.error:
                lines.append(f"| {result.label} | – | – | – | – | – | – | – | {result.error[:80]} |")
                continue
            b1 = result.median_ms(1)
            thr = result.throughput(big)
            rate = thr * self.gflop_per_image if thr else (1e3 / b1 * self.gflop_per_image if b1 else None)
            cells = [
                result.label,
                f"{b1:.1f}" if b1 else "–",
                f"{b1 / peer_b1:.2f}" if b1 and peer_b1 else "–",
                f"{thr:.1f}" if thr else "–",
                f"{thr / peer_big:.2f}" if thr and peer_big else "–",
                f"{rate:.1f} ({100 * rate / fp32_peak:.0f} %)" if rate and fp32_peak else "–",
                f"{result.peak_mib[big]:.0f}" if result.peak_mib.get(big) is not None else "–",
                f"{result.first_call_s:.2f}",
                "ref." if result.key == REFERENCE_PATH else (f"{result.max_abs_diff:.1e}"
                                                             if result.max_abs_diff is not None else "–"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [f"- {r.label.strip('*')}: {r.note}" for r in self.paths.values() if r.note]
        lines += [
            "",
            f"× ORT: time ratio at batch 1 (lower is better), throughput ratio at batch {big} (higher is better), "
            f"against {self.paths[PEER_PATH].label if PEER_PATH in self.paths else 'ONNX Runtime'}. "
            f"GFLOP/s is at batch {big}. Other processes used {100 * self.foreign_cpu:.0f} % of the machine's CPU "
            f"time during the measurements.",
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
            "foreign_cpu": self.foreign_cpu, "machine": self.machine, "versions": self.versions,
            "paths": {k: vars(v) for k, v in self.paths.items()},
        }

