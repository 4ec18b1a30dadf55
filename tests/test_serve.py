"""``fastvit serve``: real server processes on free ports, their answers against the plain model, every
kind of bad input, the API key, a full queue, the timeout, metrics, SIGTERM with a request in flight,
and the web page in headless Chromium."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="fastvit serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="fastvit serve needs the serve extra: pip install -e '.[serve]'")

from fastvit.cli import main
from fastvit.data import create_transform, imagenet_classes, load_image, resolve_data_config
from fastvit.serve.batcher import bucket_sizes, plan_calls

from conftest import synthetic_model

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "images"
SIZE = 64  # the servers run the model at 64 x 64: fast to warm up and to run
KEY = "s3cret-key"
READY_TIMEOUT_S = 120


@dataclass
class Server:
    """A ``fastvit serve`` process and where it listens."""

    process: subprocess.Popen
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_ready(self, workers: int = 1) -> None:
        """Until each worker process has warmed up its model."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited:\n{self.log.read_text()}"
            log = self.log.read_text()
            if not self.port and (found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log)):
                self.port = int(found[1])
            if self.port and log.count("model ready") == workers:
                return
            time.sleep(0.2)
        raise AssertionError(f"the server was not ready in {READY_TIMEOUT_S} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start(log: Path, checkpoint: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    command = [sys.executable, "-m", "fastvit", "serve", "--checkpoint", str(checkpoint), "--port", "0",
               "--input-size", str(SIZE), str(SIZE), *args]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, **(env or {})})
    return Server(process, log)


def call(server: Server, method: str, path: str, body=None, content_type: str | None = None,
         key: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request on a keep-alive connection (a client that says
    'Connection: close' may see the server close while it still sends a refused body); 0 when the
    connection fails."""
    headers = dict(headers or {})
    if content_type:
        headers["Content-Type"] = content_type
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, _lower(response.headers), response.read()
    except ConnectionError:
        return 0, {}, b""
    finally:
        connection.close()


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def call_json(server: Server, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
              **options) -> tuple[int, dict]:
    status, headers, data = call(server, method, path, body, content_type, **options)
    assert headers.get("content-type", "").startswith("application/json"), data
    return status, json.loads(data)


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, str]:
    boundary = "fastvit-test-boundary-7d1c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------------------------
# The servers (started together, they warm up while each other imports) and the reference model
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory, checkpoint):
    """main: batch sizes 1, 2, 4 and a 1 MiB upload limit; guarded: two worker processes, an API
    key from the environment and a 1 ms timeout; small: room for one image at a time, half a second
    for an upload to arrive, and the user's own OpenMP spin count."""
    logs = tmp_path_factory.mktemp("serve-logs")
    started = {
        "main": start(logs / "main.log", checkpoint, "--max-batch-size", "4", "--threads", "1", "--max-upload-mb", "1"),
        "guarded": start(logs / "guarded.log", checkpoint, "--workers", "2", "--max-batch-size", "1", "--threads", "1",
                         "--timeout", "0.001", env={"FASTVIT_API_KEY": KEY}),
        "small": start(logs / "small.log", checkpoint, "--max-batch-size", "1", "--threads", "1", "--max-queue", "1",
                       "--upload-timeout", "0.5", env={"GOMP_SPINCOUNT": "5000"}),
    }
    try:
        for name, server in started.items():
            server.wait_until_ready(workers=2 if name == "guarded" else 1)
        yield started
    finally:
        for server in started.values():  # SIGTERM: with SIGKILL, worker processes outlive their supervisor
            try:
                server.stop()
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture(scope="module")
def reference():
    """The plain eval model (unfused) and its transform at the servers' input size, run on one
    thread while the servers share the cores (several OpenMP teams on two cores crawl)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = synthetic_model("fastvit_t8")
    yield model, create_transform(**resolve_data_config(args={"input_size": (3, SIZE, SIZE)}, model=model))
    torch.set_num_threads(threads)


def reference_outputs(reference, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(pooled pre-logits, softmax probabilities) of the plain model on an image's bytes."""
    model, transform = reference
    with torch.inference_mode():
        features = model.forward_features(transform(load_image(data)).unsqueeze(0))
        pooled, logits = model.forward_head(features, pre_logits=True), model.forward_head(features)
    return pooled[0].numpy(), logits[0].softmax(-1).numpy()


def assert_top_k(answer: list[dict], probabilities: np.ndarray, k: int) -> None:
    expected = np.argsort(-probabilities)[:k]
    assert [entry["index"] for entry in answer] == expected.tolist()
    names = imagenet_classes()
    assert [entry["label"] for entry in answer] == [names[index] for index in expected]
    np.testing.assert_allclose([entry["probability"] for entry in answer], probabilities[expected], rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# How a gathered batch becomes model calls
# ----------------------------------------------------------------------------------------------


def test_bucket_sizes_stay_within_the_compiled_shapes():
    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(1000) == [1, 16, 32, 64, 128, 256, 512, 1000]  # 8: the Predictor's bound


def test_batches_run_as_the_fastest_calls_of_warmed_sizes():
    costs = {1: 1.0, 2: 1.2, 4: 1.5, 8: 2.5}  # seconds per call: a call costs more than its images
    plans = plan_calls(costs, 8)
    assert plans[1] == [1] and plans[2] == [2] and plans[4] == [4] and plans[8] == [8]
    assert plans[3] == [4]  # one padded call beats a call of 2 and one of 1
    assert sorted(plans[5]) == [1, 4] and plans[7] == [8]
    for count, plan in enumerate(plans):
        assert all(size in costs for size in plan) and sum(plan) >= count and sum(plan[:-1]) < count or not plan
    assert plan_calls({1: 1.0, 4: 5.0}, 4)[4] == [1, 1, 1, 1]  # padding never pays when calls are per image


def test_a_batch_waits_for_uploads_being_decoded_and_a_lone_request_never_waits():
    import asyncio

    from fastvit.serve.batcher import DynamicBatcher
    from fastvit.serve.metrics import Metrics

    calls: list[int] = []

    def decode(upload: bytes) -> torch.Tensor:
        time.sleep(0.3 if upload == b"slow" else 0.0)
        return torch.zeros(3, 2, 2, dtype=torch.uint8)

    def model(images: torch.Tensor) -> list[int]:
        calls.append(len(images))
        return list(range(len(images)))

    async def scenario() -> float:
        batcher = DynamicBatcher(decode, model, max_batch_size=4, max_wait=10.0, max_queue=8, timeout=30,
                                 decode_threads=2, metrics=Metrics())
        await batcher.start(lambda sizes: {size: 0.01 + 0.001 * size for size in sizes})  # batching pays
        start = time.perf_counter()
        await batcher.submit([b"quick"])
        lone = time.perf_counter() - start
        await asyncio.gather(batcher.submit([b"quick"]), batcher.submit([b"slow"]))
        await batcher.close()
        return lone

    lone_seconds = asyncio.run(scenario())
    assert lone_seconds < 1.0  # nothing else was decoding: no wait for max_wait's 10 s
    assert calls == [1, 2]  # the quick upload waited for the slow one rather than run alone


# ----------------------------------------------------------------------------------------------
# Answers equal the model's
# ----------------------------------------------------------------------------------------------


def test_the_command_restarts_itself_with_short_openmp_spins(servers):
    """``fastvit serve`` runs with OpenMP threads that sleep soon after a model call (GNU OpenMP
    reads this when torch loads, so the command restarts itself, in the same process), in its
    worker processes too, unless the user set how OpenMP threads wait."""
    def environment(pid: int) -> dict[str, str]:
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)

    if not sys.platform.startswith("linux"):
        pytest.skip("GNU OpenMP's setting is only made on Linux")
    main_server, guarded = servers["main"].process, servers["guarded"].process
    workers = [int(pid) for pid in Path(f"/proc/{guarded.pid}/task/{guarded.pid}/children").read_text().split()]
    for pid in [main_server.pid, guarded.pid, *workers]:
        assert environment(pid).get("GOMP_SPINCOUNT") == "10000"
    assert environment(servers["small"].process.pid)["GOMP_SPINCOUNT"] == "5000"
    assert len(workers) >= 2


def test_predict_equals_the_plain_model(servers, reference):
    main_server = servers["main"]
    for name in ("chelsea.png", "rocket.jpg"):
        data = (IMAGES / name).read_bytes()
        _, probabilities = reference_outputs(reference, data)
        status, answer = call_json(main_server, "POST", "/v1/predict", data, "image/png")
        assert status == 200 and answer["model"] == "fastvit_t8"
        assert_top_k(answer["top_k"], probabilities, 5)
        status, answer = call_json(main_server, "POST", "/v1/predict?top_k=3", *multipart([(name, data)]))
        assert status == 200
        assert_top_k(answer["top_k"], probabilities, 3)


def test_embed_equals_pre_logits(servers, reference):
    main_server = servers["main"]
    data = (IMAGES / "coffee.png").read_bytes()
    pooled, probabilities = reference_outputs(reference, data)
    status, answer = call_json(main_server, "POST", "/v1/embed", data, "image/png")
    assert status == 200 and answer["size"] == 768 and not answer["normalized"]
    np.testing.assert_allclose(answer["embedding"], pooled, rtol=1e-4, atol=1e-5)
    assert answer["norm"] == pytest.approx(float(np.linalg.norm(pooled)), rel=1e-4)

    status, answer = call_json(main_server, "POST", "/v1/embed?normalize=true", data, "image/png")
    np.testing.assert_allclose(answer["embedding"], pooled / np.linalg.norm(pooled), rtol=1e-4, atol=1e-6)
    assert answer["norm"] == pytest.approx(1.0, abs=1e-6)

    status, headers, raw = call(main_server, "POST", "/v1/embed", data, "image/png",
                                headers={"Accept": "application/octet-stream"})
    assert status == 200 and headers["x-embedding-size"] == "768"
    np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), pooled, rtol=1e-4, atol=1e-5)
    status, headers, raw = call(main_server, "POST", "/v1/embed", data, "image/png",
                                headers={"Accept": "application/json, application/octet-stream;q=0"})
    assert status == 200 and headers["content-type"] == "application/json"  # q=0: not acceptable

    status, answer = call_json(main_server, "POST", "/v1/embed?projected=1", data, "image/png")
    assert status == 200 and answer["size"] == 1000  # the model's own output: logits here
    np.testing.assert_allclose(torch.tensor(answer["embedding"]).softmax(-1), probabilities, rtol=1e-4, atol=1e-7)


def test_batch_route_answers_each_image(servers, reference):
    names = ["chelsea.png", "coffee.png", "rocket.jpg"]  # 0.8 MiB in all: under the server's limit
    files = [(name, (IMAGES / name).read_bytes()) for name in names]
    files.insert(1, ("notes.txt", b"not an image"))
    files.append(("empty.jpg", b""))
    status, answer = call_json(servers["main"], "POST", "/v1/predict/batch?top_k=2", *multipart(files))
    assert status == 200
    results = answer["results"]
    assert [result["filename"] for result in results] == [name for name, _ in files]
    assert [result["status"] for result in results] == [200, 422, 200, 200, 400]
    assert "not an image format" in results[1]["reason"] and "empty" in results[4]["reason"]
    for result, (_, data) in zip(results, files):
        if result["status"] == 200:
            assert_top_k(result["top_k"], reference_outputs(reference, data)[1], 2)


def test_models_health_docs_and_page(servers):
    main_server = servers["main"]
    status, answer = call_json(main_server, "GET", "/v1/models")
    model = answer["models"][0]
    assert status == 200 and model["name"] == "fastvit_t8" and model["checkpoint"] == "fastvit_t8.safetensors"
    assert (model["classes"], model["input_size"]) == (1000, [3, SIZE, SIZE])
    assert (model["precision"], model["backend"]) == ("fp32", "torch")
    assert model["batch_sizes"] == [1, 2, 4] and model["serving"]["max_batch_size"] == 4
    assert call_json(main_server, "GET", "/healthz") == (200, {"status": "alive"})
    assert call_json(main_server, "GET", "/readyz") == (200, {"status": "ready"})
    status, document = call_json(main_server, "GET", "/openapi.json")
    assert status == 200 and {"/v1/predict", "/v1/predict/batch", "/v1/embed", "/v1/models"} <= set(document["paths"])
    healthz = document["paths"]["/healthz"]["get"]
    assert healthz["security"] == [] and "401" not in healthz["responses"]  # open: it never asks for the key
    assert "401" in document["paths"]["/v1/predict"]["post"]["responses"]
    for path, marker in (("/", b'id="file"'), ("/docs", b"docs.js"), ("/static/page.js", b"v1/predict"),
                         ("/static/page.css", b"#classes")):
        status, _, body = call(main_server, "GET", path)
        assert status == 200 and marker in body, path


# ----------------------------------------------------------------------------------------------
# Bad input: a status and a reason, never a crash or a traceback
# ----------------------------------------------------------------------------------------------

BAD_REQUESTS = {
    "empty body": ("POST", "/v1/predict", b"", "image/jpeg", 400, "empty upload"),
    "not an image": ("POST", "/v1/predict", b"hello, world\n", "image/jpeg", 422, "not an image format"),
    "truncated": ("POST", "/v1/predict", (IMAGES / "rocket.jpg").read_bytes()[:5000], "image/jpeg", 422, "truncated"),
    "decompression bomb": ("POST", "/v1/predict", png_header_only(10_000, 10_000), "image/png", 422,
                           "decompression bomb"),
    "too large": ("POST", "/v1/embed", b"\xff" * (1 << 20 | 1), "image/jpeg", 413,
                  "larger than this server's limit of 1 MiB"),
    "unsupported media type": ("POST", "/v1/predict", b"{}", "application/json", 415, "unsupported media type"),
    "several files on a one-image route": ("POST", "/v1/predict", *multipart([("a.jpg", b"1"), ("b.jpg", b"2")]), 400,
                                           "2 files"),
    "form without a file": ("POST", "/v1/predict", b"--x--\r\n", "multipart/form-data; boundary=x", 400, "no file"),
    "raw body on the batch route": ("POST", "/v1/predict/batch", b"\xff\xd8", "image/jpeg", 415, "multipart"),
    "bad top_k": ("POST", "/v1/predict?top_k=0", b"\xff\xd8", "image/jpeg", 400, "top_k must be"),
    "superscript top_k": ("POST", "/v1/predict?top_k=%C2%B2", b"\xff\xd8", "image/jpeg", 400, "top_k must be"),
    "bad flag": ("POST", "/v1/embed?normalize=maybe", b"\xff\xd8", "image/jpeg", 400, "normalize must be true"),
    "unknown route": ("GET", "/v2/predict", None, None, 404, "no such route"),
    "wrong method": ("GET", "/v1/predict", None, None, 405, "not allowed"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_status_and_a_reason(servers, case):
    method, path, body, content_type, expected, reason = BAD_REQUESTS[case]
    status, answer = call_json(servers["main"], method, path, body, content_type)
    assert status == expected and answer["status"] == expected and reason in answer["reason"], answer
    assert "Traceback" not in json.dumps(answer)


def test_an_upload_over_the_limit_is_refused_before_it_is_sent(servers):
    """413 on the declared length alone, before a byte of the body, and on a chunked body as soon
    as it passes the limit; the server then still answers."""
    main_server = servers["main"]
    connection = http.client.HTTPConnection("127.0.0.1", main_server.port, timeout=30)
    connection.putrequest("POST", "/v1/predict")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(50 << 20))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit of 1 MiB" in json.loads(response.read())["reason"]
    connection.close()

    chunks = (b"\xff" * 65536 for _ in range(64))  # 4 MiB without a declared length
    status, answer = call_json(main_server, "POST", "/v1/predict", chunks, "image/jpeg")
    assert status == 413 and "limit of 1 MiB" in answer["reason"]
    status, answer = call_json(main_server, "POST", "/v1/predict", (IMAGES / "chelsea.png").read_bytes(), "image/png")
    assert status == 200 and len(answer["top_k"]) == 5


def test_a_client_that_hangs_up_mid_upload_is_no_server_error(servers):
    """A client gone before its body ended is logged as such, not as a failure with a traceback."""
    main_server = servers["main"]
    connection = http.client.HTTPConnection("127.0.0.1", main_server.port, timeout=30)
    connection.putrequest("POST", "/v1/predict")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(500_000))
    connection.endheaders()
    connection.send((IMAGES / "chelsea.png").read_bytes()[:20_000])
    connection.close()
    deadline = time.monotonic() + 30
    while "client disconnected" not in main_server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = main_server.log.read_text()
    assert "client disconnected during the upload" in log and "Traceback" not in log
    status, answer = call_json(main_server, "POST", "/v1/predict", (IMAGES / "chelsea.png").read_bytes(), "image/png")
    assert status == 200 and len(answer["top_k"]) == 5


def test_metrics_count_requests_batches_and_the_queue(servers):
    main_server = servers["main"]

    def sample(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    before = call(main_server, "GET", "/metrics")[2].decode()
    data = (IMAGES / "chelsea.png").read_bytes()
    for _ in range(2):
        call(main_server, "POST", "/v1/predict", data, "image/png")
    call(main_server, "GET", "/nowhere")
    status, headers, body = call(main_server, "GET", "/metrics")
    after = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    ok = 'fastvit_requests_total{route="/v1/predict",status="200"}'
    assert sample(after, ok) - sample(before, ok) == 2
    not_found = 'fastvit_requests_total{route="other",status="404"}'
    assert sample(after, not_found) - sample(before, not_found) == 1
    count = 'fastvit_request_duration_seconds_count{route="/v1/predict"}'
    assert sample(after, count) - sample(before, count) >= 2
    everything = 'fastvit_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"}'
    assert sample(after, everything) == sample(after, count)
    assert sample(after, "fastvit_batch_size_count") - sample(before, "fastvit_batch_size_count") == 2
    assert sample(after, 'fastvit_batch_size_bucket{le="1"}') - sample(before, 'fastvit_batch_size_bucket{le="1"}') == 2
    assert "# TYPE fastvit_queue_depth gauge" in after and sample(after, "fastvit_images_in_flight") == 0


# ----------------------------------------------------------------------------------------------
# API key, a full queue, the timeout
# ----------------------------------------------------------------------------------------------


def test_api_key_guards_every_route_but_healthz(servers):
    guarded = servers["guarded"]
    assert call_json(guarded, "GET", "/healthz") == (200, {"status": "alive"})
    for path in ("/v1/models", "/", "/metrics", "/openapi.json", "/nowhere"):
        status, headers, body = call(guarded, "GET", path)
        assert status == 401 and "needs an API key" in json.loads(body)["reason"], path
        assert headers["www-authenticate"].startswith("Basic")
    status, answer = call_json(guarded, "GET", "/v1/models", key="wrong")
    assert status == 401 and answer["reason"] == "wrong API key"
    basic = "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": basic}):
        assert call(guarded, "GET", "/v1/models", headers=headers)[0] == 200


def test_a_request_past_the_timeout_gets_504(servers):
    status, answer = call_json(servers["guarded"], "POST", "/v1/predict", (IMAGES / "chelsea.png").read_bytes(),
                               "image/png", key=KEY)
    assert status == 504 and "timeout of 0.001 s" in answer["reason"]


def stalled_upload(port: int) -> socket.socket:
    """A connection that sends a request's headers and 30 of its body's 69 bytes, then nothing."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 69\r\n\r\n"
                   + b"\x89PNG" + b"\0" * 26)
    return client


def answer_of(client: socket.socket) -> tuple[bytes, dict]:
    """The status line and JSON body of the one answer on ``client``."""
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        data = client.recv(4096)
        if not data:
            break
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_stalled_upload_gets_408_and_its_connection_back(servers):
    """A client that stops sending its body used to hold its connection for ever (no timeout ran
    before the upload was in): a slow-upload attack needed no more than that."""
    started = time.monotonic()
    with stalled_upload(servers["small"].port) as client:
        status, answer = answer_of(client)
    assert status.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 20
    assert answer["reason"] == "the upload did not arrive within 0.5 s"
    assert call_json(servers["small"], "GET", "/healthz")[0] == 200


def test_a_stopping_server_answers_an_upload_still_arriving_with_503(tmp_path, checkpoint):
    """At the end of the grace period a stopping server cancels what is left: an upload still
    arriving got a plain-text 500 and the log a traceback."""
    server = start(tmp_path / "stopping.log", checkpoint, "--timeout", "1", "--threads", "1")
    try:
        server.wait_until_ready()
        with stalled_upload(server.port) as client:
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            status, answer = answer_of(client)
        assert status.startswith(b"HTTP/1.1 503 ") and answer["reason"].startswith("the server is stopping")
        assert server.process.wait(timeout=60) == 0
        assert "Traceback" not in server.log.read_text()
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_worker_processes_share_the_port_and_stop_on_sigterm(servers):
    guarded = servers["guarded"]
    log = guarded.log.read_text()
    workers = set(re.findall(r"Started server process \[(\d+)\]", log))
    assert len(workers) == 2 and log.count("model ready") == 2
    assert all(call(guarded, "GET", "/readyz", key=KEY)[0] == 200 for _ in range(6))
    assert guarded.stop() == 0
    log = guarded.log.read_text()
    assert len(set(re.findall(r"Finished server process \[(\d+)\]", log))) == 2 and "Traceback" not in log


def test_worker_processes_stop_when_their_supervisor_is_killed(checkpoint, tmp_path):
    """Killed with SIGKILL, the supervisor cannot stop its workers: they stop by themselves (they used
    to go on answering on the port, holding it against the next server)."""
    server = start(tmp_path / "orphans.log", checkpoint, "--workers", "2", "--max-batch-size", "1", "--threads", "1")
    server.wait_until_ready(workers=2)
    workers = [int(pid) for pid in set(re.findall(r"Started server process \[(\d+)\]", server.log.read_text()))]
    assert len(workers) == 2
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, f"orphaned workers still running:\n{server.log.read_text()}"
        time.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    assert "supervisor process" in server.log.read_text()


def test_a_full_queue_answers_503_with_retry_after(servers):
    """While a large photo is being decoded, the only place in the queue is taken."""
    small = servers["small"]
    large = io.BytesIO()
    Image.open(IMAGES / "astronaut.png").convert("RGB").resize((4000, 3000)).save(large, "JPEG", quality=95)
    occupant = ThreadPoolExecutor(1).submit(call, small, "POST", "/v1/predict", large.getvalue(), "image/jpeg")
    while "fastvit_images_in_flight 1" not in call(small, "GET", "/metrics")[2].decode():
        assert not occupant.done(), occupant.result()
    status, headers, body = call(small, "POST", "/v1/predict", (IMAGES / "chelsea.png").read_bytes(), "image/png")
    assert status == 503 and int(headers["retry-after"]) >= 1 and "busy" in json.loads(body)["reason"]
    assert occupant.result()[0] == 200
    assert call(small, "POST", "/v1/predict", (IMAGES / "chelsea.png").read_bytes(), "image/png")[0] == 200


# ----------------------------------------------------------------------------------------------
# SIGTERM: no new connections, the request in flight answered, exit status 0
# ----------------------------------------------------------------------------------------------


def test_sigterm_finishes_the_request_in_flight_and_exits_0(servers, reference):
    small = servers["small"]
    data = (IMAGES / "chelsea.png").read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", small.port, timeout=30)
    connection.putrequest("POST", "/v1/predict")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    connection.send(data[: len(data) // 2])  # the request is in flight: half its body has arrived
    time.sleep(0.3)
    small.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # the listening socket closes
        try:
            socket.create_connection(("127.0.0.1", small.port), timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
        time.sleep(0.05)
    connection.send(data[len(data) // 2:])
    response = connection.getresponse()
    assert response.status == 200
    assert_top_k(json.loads(response.read())["top_k"], reference_outputs(reference, data)[1], 5)
    assert small.process.wait(timeout=30) == 0
    log = small.log.read_text()
    assert "Traceback" not in log and "Finished server process" in log


@pytest.mark.parametrize("started_by", ["create_app", "serve"])
def test_the_model_is_built_warmed_up_and_run_on_one_thread(monkeypatch, checkpoint, started_by):
    """Every thread that runs torch's parallel ops gets an OpenMP team of its own, and two teams on
    the same cores slow every op: the server builds, warms up and runs its model on one thread,
    whether the app builds it or ``serve`` does (to fail before listening)."""
    import asyncio
    import threading

    import uvicorn

    from fastvit.serve.app import create_app
    from fastvit.serve.server import serve
    from fastvit.serve.service import ModelService
    from fastvit.serve.settings import ServeSettings

    threads: set[int] = set()
    build, call = ModelService.from_settings.__func__, ModelService.__call__

    def recording_build(cls, settings):
        threads.add(threading.get_ident())
        return build(cls, settings)

    def recording_call(self, images):
        threads.add(threading.get_ident())
        return call(self, images)

    monkeypatch.setattr(ModelService, "from_settings", classmethod(recording_build))
    monkeypatch.setattr(ModelService, "__call__", recording_call)
    settings = ServeSettings("fastvit_t8", checkpoint=str(checkpoint), input_size=(SIZE, SIZE), max_batch_size=2,
                             threads=1, port=0)
    if started_by == "serve":
        apps = []
        monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: apps.append(server.config.app))
        serve(settings)
        app = apps[0]
    else:
        app = create_app(settings)

    async def serve_one() -> list:
        async with app.router.lifespan_context(app):
            batcher = app.state.serving.batcher
            while not batcher.ready:
                await asyncio.sleep(0.05)
            return await batcher.submit([(IMAGES / "rocket.jpg").read_bytes()])

    assert len(asyncio.run(serve_one())) == 1
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_class_names_from_a_trained_checkpoint_or_a_labels_file(tmp_path):
    from safetensors.torch import save_file

    from fastvit.models.checkpoints import METADATA_CLASSES
    from fastvit.serve.service import ModelService

    weights = tmp_path / "three.safetensors"
    model = synthetic_model("fastvit_t8", num_classes=3)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, weights, metadata={METADATA_CLASSES: json.dumps(["cat", "dog", "bird"])})
    trained = ModelService("fastvit_t8", checkpoint=str(weights), input_size=(SIZE, SIZE))
    assert trained.class_names == ("cat", "dog", "bird")
    labelled = ModelService("fastvit_t8", checkpoint=str(weights), class_names=["a", "b", "c"], input_size=(SIZE, SIZE))
    assert labelled.class_names == ("a", "b", "c")


def test_fast_decoding_serves_nearly_the_exact_embedding(checkpoint):
    """``--decode fast``: uploads go through the same decoder as batch jobs, close to the exact one."""
    from fastvit.serve.service import ModelService

    exact = ModelService("fastvit_t8", checkpoint=str(checkpoint), input_size=(SIZE, SIZE))
    fast = ModelService("fastvit_t8", checkpoint=str(checkpoint), input_size=(SIZE, SIZE), decode="fast")
    uploads = [path.read_bytes() for path in sorted(IMAGES.iterdir())[:3]]
    exact_images = torch.stack([exact.decode(data) for data in uploads])
    fast_images = torch.stack([fast.decode(data) for data in uploads])
    assert exact_images.dtype == fast_images.dtype == torch.uint8 and exact_images.shape == fast_images.shape
    assert (exact_images.float() - fast_images.float()).abs().mean() < 2.0
    similarity = torch.cosine_similarity(exact(exact_images).embedding, fast(fast_images).embedding)
    assert similarity.min() > 0.99


def test_model_errors_end_the_command_in_one_line(checkpoint, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    code = main(["serve", "--checkpoint", str(checkpoint), "--labels", str(labels), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err == "fastvit serve: error: the labels name 3 classes, the model has 1000\n"


# ----------------------------------------------------------------------------------------------
# The web page in a real browser
# ----------------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no browser: install Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
def test_the_page_shows_the_api_top_5_in_chromium(servers, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="the browser test needs selenium: pip install -e '.[test]'")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    main_server = servers["main"]
    photo = IMAGES / "chelsea.png"
    status, expected = call_json(main_server, "POST", "/v1/predict?top_k=5", photo.read_bytes(), "image/png")
    assert status == 200
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,800",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(main_server.url + "/")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait = WebDriverWait(browser, 30)
        wait.until(lambda page: page.find_element(By.TAG_NAME, "body").get_attribute("data-classified") == "yes")
        rows = browser.find_elements(By.CSS_SELECTOR, "#classes li")
        shown = [(int(row.get_attribute("data-index")), row.find_element(By.CLASS_NAME, "label").text,
                  row.find_element(By.CLASS_NAME, "percent").text) for row in rows]
        assert shown == [(entry["index"], entry["label"].split(",")[0], f"{entry['probability'] * 100:.1f} %")
                         for entry in expected["top_k"]]
        assert browser.find_element(By.ID, "preview").get_attribute("naturalWidth") == str(Image.open(photo).width)
        browser.save_screenshot(str(tmp_path / "classes.png"))

        browser.find_element(By.ID, "tab-embedding").click()
        wait.until(lambda page: page.find_element(By.ID, "dimension").text == "768")
        status, embedding = call_json(main_server, "POST", "/v1/embed", photo.read_bytes(), "image/png")
        assert browser.find_element(By.ID, "norm").text == f"{embedding['norm']:.4f}"
        browser.save_screenshot(str(tmp_path / "embedding.png"))
    finally:
        browser.quit()
