"""Load test of ``fastvit serve`` on loopback, against the in-process Predictor measured in the same run.

One run:

1. the server (``fastvit serve`` in a child process, random weights, so nothing is downloaded) and
   the in-process Predictor (another child process, warmed for the server's batch sizes); for
   concurrency 1, 8 and 32, three slices of requests, each after a slice of in-process calls, so
   that both see the machine's busy and quiet moments alike: requests/s, p50/p95/p99 latency and
   the batches the server formed and ran (from its /metrics), against the in-process batch-1
   latency, decode + batch 1 of the same photo, and images/s at each batch size;
2. 1,000 bad requests in a row, mixed kinds (empty, not an image, truncated, decompression bomb,
   over the upload limit, unsupported media type, unknown route, missing and wrong key, bad
   query): each must get its 4xx; the server must then still answer correctly, and its resident
   memory must not grow by 50 MB or more;
3. 10,000 mixed requests (predict on photos of several sizes, embed, batch, a few bad ones) at
   concurrency 8: latency and resident memory per 1,000-request window, which must stay flat;
4. SIGTERM: the server must exit with status 0.

The client is a small asyncio HTTP/1.1 client with keep-alive connections and prebuilt requests,
so it takes little of the CPU the server needs. The targets are printed as ratios with PASS/FAIL.

    python benchmarks/serve.py                       # the full run (several minutes)
    python benchmarks/serve.py --scale 0.1           # a tenth of the requests, to try it out
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "images"
KEY = "benchmark-key"
UPLOAD_LIMIT_MB = 2
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


# ----------------------------------------------------------------------------------------------
# Requests, prebuilt
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One prebuilt request and the status it must get."""

    kind: str
    raw: bytes
    expected: int
    closes: bool = False  # the body is never sent (Expect: 100-continue): use a fresh connection after


def request(path: str, body: bytes = b"", content_type: str | None = "image/jpeg", key: str | None = KEY,
            method: str = "POST", headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if method == "POST":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "benchmark-boundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
                    + data + b"\r\n" for name, data in files) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def photos() -> dict[str, bytes]:
    """The test photos as JPEGs, as a phone app would upload them (several sizes)."""
    from PIL import Image

    encoded = {}
    for path in sorted(IMAGES.iterdir()):
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=90)
        encoded[path.stem] = buffer.getvalue()
    return encoded


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def bad_calls(photo: bytes) -> list[Call]:
    """One request of each kind of bad input, with its status."""
    over = (UPLOAD_LIMIT_MB << 20) + 1
    form, form_type = multipart([("a.jpg", photo), ("b.jpg", photo)])
    return [
        Call("empty body", request("/v1/predict"), 400),
        Call("not an image", request("/v1/predict", b"plain text, not a photo\n"), 422),
        Call("truncated", request("/v1/predict", photo[: len(photo) // 3]), 422),
        Call("decompression bomb", request("/v1/predict", png_header_only(10_000, 10_000), "image/png"), 422),
        Call("over the upload limit", request("/v1/predict", length=over, headers={"Expect": "100-continue"}), 413,
             closes=True),
        Call("unsupported media type", request("/v1/predict", b'{"url": "http://example.com/cat.jpg"}',
                                               "application/json"), 415),
        Call("two files on /v1/predict", request("/v1/predict", form, form_type), 400),
        Call("unknown route", request("/v1/classify", photo), 404),
        Call("missing key", request("/v1/predict", photo, key=None), 401),
        Call("wrong key", request("/v1/predict", photo, key="guess"), 401),
        Call("bad top_k", request("/v1/predict?top_k=-1", photo), 400),
    ]


def good_calls(images: dict[str, bytes]) -> list[Call]:
    form, form_type = multipart([(f"{name}.jpg", data) for name, data in list(images.items())[:2]])
    return [
        *[Call(f"predict {name}", request("/v1/predict", data), 200) for name, data in images.items()],
        Call("embed", request("/v1/embed?normalize=true", images["coffee"]), 200),
        Call("batch of 2", request("/v1/predict/batch", form, form_type), 200),
    ]


# ----------------------------------------------------------------------------------------------
# A small keep-alive HTTP client
# ----------------------------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, call: Call) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(call.raw)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", head)[1])
        body = await self.reader.readexactly(length)
        if call.closes or re.search(r"(?im)^connection:\s*close", head):
            self.writer.close()
            self.writer = None
        return status, body


@dataclass
class Phase:
    """What one load phase measured."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


async def load(port: int, calls: list[Call], concurrency: int, on_done=None) -> Phase:
    """Send ``calls`` in order over ``concurrency`` connections; check each status."""
    phase = Phase()
    queue = iter(calls)

    async def worker() -> None:
        connection = Connection(port)
        for call in queue:
            start = time.perf_counter()
            status, body = await connection.send(call)
            phase.latencies.append(time.perf_counter() - start)
            phase.statuses[status] += 1
            if status != call.expected or (status >= 400 and b'"reason"' not in body):
                phase.wrong.append(f"{call.kind}: {status} {body[:120]!r}")
            if on_done is not None:
                on_done(phase)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - start
    return phase


# ----------------------------------------------------------------------------------------------
# The server and what it reports
# ----------------------------------------------------------------------------------------------


def start_server(checkpoint: Path, log: Path, input_size: int | None) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "fastvit", "serve", "--checkpoint", str(checkpoint), "--port", "0",
               "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--max-batch-size", str(max(BATCH_SIZES))]
    if input_size:
        command += ["--input-size", str(input_size), str(input_size)]
    process = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "FASTVIT_API_KEY": KEY})
    deadline = time.monotonic() + 600
    port = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        if not port and (found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())):
            port = int(found[1])
        if port and "model ready" in log.read_text():
            return process, port
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready in time:\n{log.read_text()}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def scrape(port: int) -> dict[str, float]:
    metrics = Call("metrics", request("/metrics", method="GET", content_type=None), 200)
    status, body = await Connection(port).send(metrics)
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def batch_histogram(before: dict[str, float], after: dict[str, float]) -> str:
    """Model calls per gathered batch size (the buckets of fastvit_batch_size), between two scrapes."""
    cumulative = {int(float(bound)): after[name] - before.get(name, 0.0)
                  for name in after if (bound := _le(name, "fastvit_batch_size_bucket")) not in (None, "+Inf")}
    previous, parts = 0.0, []
    for bound in sorted(cumulative):
        if cumulative[bound] - previous:
            parts.append(f"≤{bound}: {int(cumulative[bound] - previous)}")
        previous = cumulative[bound]
    return ", ".join(parts) or "-"


def model_calls(before: dict[str, float], after: dict[str, float]) -> str:
    """Model calls by batch size (fastvit_model_calls_total), between two scrapes."""
    calls = {}
    for name, value in after.items():
        if found := re.fullmatch(r'fastvit_model_calls_total\{batch_size="(\d+)"\}', name):
            calls[int(found[1])] = int(value - before.get(name, 0.0))
    return ", ".join(f"{size}: {count}" for size, count in sorted(calls.items()) if count) or "-"


def _le(name: str, family: str) -> str | None:
    found = re.fullmatch(rf'{family}\{{le="([^"]+)"\}}', name)
    return found[1] if found else None


# ----------------------------------------------------------------------------------------------
# In-process reference: a child process (``--in-process CHECKPOINT``) that measures on request, so
# that its measurements and the server's take turns and share the machine's busy and quiet moments
# ----------------------------------------------------------------------------------------------


def in_process(checkpoint: str, input_size: int | None, photo_path: str) -> None:
    """Answer each JSON request on stdin with the seconds of the calls it asks for, one JSON line each:
    ``{"batch": B, "repeats": N}`` (the Predictor on a batch of B), ``{"decode": true, "repeats": N}``
    (decode + transform + batch 1 of the photo)."""
    import torch

    import fastvit
    from fastvit.data import load_image

    model = fastvit.create_model("fastvit_t8", checkpoint_path=checkpoint).eval()
    size = (3, input_size, input_size) if input_size else None
    predictor = fastvit.Predictor(model, inplace=True, input_size=size)
    predictor.prepare(BATCH_SIZES, outputs=("forward",), freeze=True)
    transform = predictor.transform()
    photo = Path(photo_path).read_bytes()
    batches = {batch: torch.zeros(batch, *predictor.input_size) for batch in BATCH_SIZES}
    print("ready", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        if ask.get("decode"):
            run = lambda: predictor(transform(load_image(photo)).unsqueeze(0))  # noqa: E731
        else:
            run = lambda: predictor(batches[ask["batch"]])  # noqa: E731
        seconds = []
        for _ in range(ask["repeats"]):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        print(json.dumps(seconds), flush=True)


class Reference:
    """The in-process child: ``seconds(batch=B, repeats=N)`` or ``seconds(decode=True, repeats=N)``."""

    def __init__(self, checkpoint: Path, input_size: int | None, photo: Path):
        command = [sys.executable, __file__, "--in-process", str(checkpoint), "--photo", str(photo)]
        if input_size:
            command += ["--input-size", str(input_size)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the in-process reference failed to start")

    def seconds(self, **ask) -> list[float]:
        self.process.stdin.write(json.dumps(ask) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


ROUNDS = 3
"""Each concurrency level is measured in this many slices, each after a slice of in-process calls."""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


@dataclass
class Loaded:
    """The load phases at concurrency 1, 8 and 32, with the in-process calls measured between slices."""

    phases: dict[int, Phase] = field(default_factory=dict)
    rows: list[str] = field(default_factory=list)
    reference: dict[str, list[float]] = field(default_factory=dict)  # seconds per call, by what was run

    def best_batch(self) -> tuple[int, float]:
        """The in-process batch size with the most images/s, and that rate."""
        rates = {batch: batch / statistics.median(self.reference[f"batch {batch}"]) for batch in BATCH_SIZES}
        batch = max(rates, key=rates.get)
        return batch, rates[batch]


async def load_levels(port: int, predict: Call, reference: Reference, scaled) -> Loaded:
    loaded = Loaded()
    for concurrency, count in ((1, 150), (8, 400), (32, 800)):
        await load(port, [predict] * 2 * concurrency, concurrency)  # connections opened, caches warm
        before = await scrape(port)
        phase = Phase()
        for _ in range(ROUNDS):
            if concurrency == 1:
                loaded.reference.setdefault("batch 1", []).extend(reference.seconds(batch=1, repeats=20))
                loaded.reference.setdefault("decode", []).extend(reference.seconds(decode=True, repeats=15))
            if concurrency == 32:
                for batch in BATCH_SIZES:
                    calls = reference.seconds(batch=batch, repeats=max(2, 32 // batch))
                    loaded.reference.setdefault(f"batch {batch}", []).extend(calls)
            part = await load(port, [predict] * max(1, scaled(count) // ROUNDS), concurrency)
            phase.latencies += part.latencies
            phase.statuses.update(part.statuses)
            phase.wrong += part.wrong
            phase.seconds += part.seconds
        after = await scrape(port)
        loaded.phases[concurrency] = phase
        percentiles = " | ".join(f"{phase.percentile(q):.1f}" for q in (50, 95, 99))
        loaded.rows.append(f"| {concurrency} | {len(phase.latencies)} | {len(phase.latencies) / phase.seconds:.1f} | "
                           f"{percentiles} | {batch_histogram(before, after)} | {model_calls(before, after)} |")
    return loaded


def report_levels(loaded: Loaded) -> list[tuple[str, bool]]:
    best_batch, best_rate = loaded.best_batch()
    batch1, decode = median_ms(loaded.reference["batch 1"]), median_ms(loaded.reference["decode"])
    print("In-process Predictor (same weights and batch sizes, measured between the server's slices):")
    print(f"  batch 1: {batch1:.1f} ms; decode + transform + batch 1 of chelsea.jpg: {decode:.1f} ms")
    rates = ", ".join(f"{batch}: {batch / statistics.median(loaded.reference[f'batch {batch}']):.1f}"
                      for batch in BATCH_SIZES)
    print(f"  images/s by batch size: {rates}\n")
    print("Served (POST /v1/predict, chelsea.jpg, keep-alive connections):\n")
    print("| concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | gathered batches by size "
          "| model calls by size |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    print("\n".join(loaded.rows))
    c1, c8, c32 = (loaded.phases[level] for level in (1, 8, 32))
    served_rate = len(c32.latencies) / c32.seconds
    p50 = c1.percentile(50)
    return [
        (f"concurrency 32: {served_rate:.1f} images/s = {served_rate / best_rate:.0%} of in-process "
         f"{best_rate:.1f} (batch {best_batch}); target >= 70 %", served_rate >= 0.7 * best_rate),
        (f"concurrency 1: p50 {p50:.1f} ms = in-process batch 1 {batch1:.1f} ms {p50 - batch1:+.1f} ms "
         f"(decode + batch 1 in-process: {decode:.1f} ms, {p50 - decode:+.1f} ms); target <= +3 ms",
         p50 <= batch1 + 3),
        (f"concurrency 8: p99 {c8.percentile(99):.1f} ms = {c8.percentile(99) / c8.percentile(50):.2f} x p50; "
         "target <= 3x", c8.percentile(99) <= 3 * c8.percentile(50)),
    ]


async def bad_requests(port: int, process: subprocess.Popen, images: dict[str, bytes], predict: Call,
                       count: int) -> tuple[str, bool]:
    """``count`` bad requests in a row, then a good one that must get the answer it got before."""
    _, before = await Connection(port).send(predict)
    bad = bad_calls(images["chelsea"])
    rss_before = rss_mb(process.pid)
    phase = await load(port, [bad[index % len(bad)] for index in range(count)], 8)
    rss_after = rss_mb(process.pid)
    status, after = await Connection(port).send(predict)
    still_correct = status == 200 and json.loads(after)["top_k"] == json.loads(before)["top_k"]
    for wrong in phase.wrong[:5]:
        print(f"  wrong answer: {wrong}")
    return (f"{count} bad requests ({len(bad)} kinds): {count - len(phase.wrong)} got their 4xx "
            f"({dict(sorted(phase.statuses.items()))}); correct afterwards: {still_correct}; resident memory "
            f"{rss_before:.0f} -> {rss_after:.0f} MB ({rss_after - rss_before:+.1f}); target < +50 MB",
            not phase.wrong and still_correct and rss_after - rss_before < 50)


async def mixed_requests(port: int, process: subprocess.Popen, images: dict[str, bytes], count: int) -> bool:
    """``count`` mixed requests at concurrency 8; latency and memory per tenth must stay flat."""
    kinds = good_calls(images) + bad_calls(images["chelsea"])[:4]
    calls = [kinds[(index * 7) % len(kinds)] for index in range(count)]
    window = max(1, count // 10)
    windows: list[tuple[float, float, float]] = []  # p50, p99, resident MB after each window
    rss_start = rss_mb(process.pid)

    def window_done(phase: Phase) -> None:
        if len(phase.latencies) % window == 0:
            latest = sorted(phase.latencies[-window:])
            windows.append((latest[len(latest) // 2] * 1000, latest[int(0.99 * len(latest))] * 1000,
                            rss_mb(process.pid)))

    phase = await load(port, calls, 8, on_done=window_done)
    print(f"\n{count} mixed requests at concurrency 8 ({len(kinds)} kinds: predict on 4 photos, embed, a batch "
          f"of 2, 4 kinds of bad input): {count / phase.seconds:.1f} req/s, {len(phase.wrong)} wrong answers")
    print(f"resident memory {rss_start:.0f} MB at the start; per {window}-request window:\n")
    print("| window | p50 ms | p99 ms | resident MB |")
    print("|---:|---:|---:|---:|")
    for index, (p50, p99, rss) in enumerate(windows, 1):
        print(f"| {index} | {p50:.1f} | {p99:.1f} | {rss:.0f} |")
    first, last = windows[0], windows[-1]
    flat = not phase.wrong and last[0] <= 1.25 * first[0] and last[2] - rss_start < 50
    print(f"\n  {verdict(flat)}  latency and memory flat: last window p50 {last[0] / first[0]:.2f} x the first "
          f"(target <= 1.25), memory {last[2] - rss_start:+.1f} MB (target < +50 MB)")
    return flat


async def benchmark(args: argparse.Namespace, work: Path) -> int:
    from safetensors.torch import save_file

    import fastvit

    checkpoint = work / "fastvit_t8.safetensors"
    save_file({key: value.contiguous() for key, value in fastvit.create_model("fastvit_t8").state_dict().items()},
              checkpoint)
    images = photos()
    photo_path = work / "chelsea.jpg"
    photo_path.write_bytes(images["chelsea"])
    print(f"photos: {', '.join(f'{name} {len(data) // 1024} KiB' for name, data in images.items())}")
    scaled = lambda count: max(1, round(count * args.scale))  # noqa: E731

    reference = Reference(checkpoint, args.input_size, photo_path)
    process, port = start_server(checkpoint, work / "server.log", args.input_size)
    print(f"server pid {process.pid} on port {port}: {rss_mb(process.pid):.0f} MB resident when ready\n")
    predict = Call("predict chelsea", request("/v1/predict", images["chelsea"]), 200)
    loaded = await load_levels(port, predict, reference, scaled)
    reference.close()
    checks = report_levels(loaded)
    checks.append(await bad_requests(port, process, images, predict, scaled(1000)))
    print("\nTargets:")
    for text, ok in checks:
        print(f"  {verdict(ok)}  {text}")
    flat = await mixed_requests(port, process, images, scaled(10_000))
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(timeout=120)
    print(f"\n  {verdict(exit_code == 0)}  SIGTERM: exit status {exit_code}")
    return 0 if all(ok for _, ok in checks) and flat and exit_code == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count (default 1)")
    parser.add_argument("--input-size", type=int, help="serve at this image side (default: the model's 256)")
    parser.add_argument("--in-process", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--photo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        in_process(args.in_process, args.input_size, args.photo)
        return 0
    with tempfile.TemporaryDirectory() as work:
        return asyncio.run(benchmark(args, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
