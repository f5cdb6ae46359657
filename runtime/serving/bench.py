"""``python -m runtime.serving.bench``: load figures of ``audiotoken-rt serve`` (``just bench-serve``).

For each instance count it starts the server on loopback ports (from .venv-serve, where PyTriton lives), its queue
holding every request and timing none out, sends ``--requests`` requests from ``--clients`` concurrent tritonclient
HTTP clients (the same clip, seeds 0, 1, ...), and records requests per minute, p50 and p95 latency and how many
were refused; then it stops the server (SIGTERM) and goes on. A table goes to the terminal and the figures to
``--json``. The server and this client share the machine, as on a single box in production; a benchmark, never a
test.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SERVE = Path(sys.executable).parent / "audiotoken-rt"
READY_SECONDS = 900  # each instance of each model starts a Triton Python stub process: slow on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: str, options: list[str], log: Path) -> tuple[subprocess.Popen, int, int]:
    """The server on free loopback ports with more ``options``, ready, its output in ``log``: its process, HTTP and
    gRPC ports (``runtime.serving.soak`` starts it so too)."""
    from tritonclient.http import InferenceServerClient

    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [str(SERVE), "serve", bundle, "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port",
               str(metrics), *options]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}; see {log}")
        try:
            if InferenceServerClient(f"127.0.0.1:{http}").is_model_ready("audiotoken_edit"):
                return process, http, grpc
        except Exception:  # not listening yet
            pass
        time.sleep(1)
    process.kill()
    raise SystemExit(f"the server did not get ready in {READY_SECONDS} s; see {log}")


def load(port: int, clip: Path, requests: int, clients: int, steps: int | None) -> dict:
    """Send ``requests`` requests from ``clients`` threads; latencies of the answered ones, and the refused count."""
    from tritonclient.http import InferenceServerClient, InferInput
    from tritonclient.utils import InferenceServerException

    samples, rate = sf.read(clip, dtype="float32", always_2d=True)  # [N, C]
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def tensor(name, array, dtype):
        one = InferInput(name, list(array.shape), dtype)
        one.set_data_from_numpy(array)
        return one

    def client() -> None:
        nonlocal refused
        connection = InferenceServerClient(f"127.0.0.1:{port}", network_timeout=3600)
        while True:
            with lock:
                seed = next(counter, None)
            if seed is None:
                return
            inputs = [
                tensor("AUDIO", samples[None], "FP32"),
                tensor("SAMPLE_RATE", np.array([[rate]], np.int32), "INT32"),
                tensor("SEED", np.array([[seed]], np.int64), "INT64"),
            ]
            if steps:
                inputs.append(tensor("STEPS", np.array([[steps]], np.int32), "INT32"))
            started = time.perf_counter()
            try:
                connection.infer("audiotoken", inputs)
                with lock:
                    latencies.append(time.perf_counter() - started)
            except InferenceServerException:
                with lock:
                    refused += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "answered": len(latencies),
        "refused": refused,
        "requests_per_minute": len(latencies) / wall * 60,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.serving.bench", description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("clip", type=Path)
    parser.add_argument("--instances", default="1,2,4", help="instance counts to measure, comma-separated")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per request (default: the recipe)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    figures = {}
    for instances in (int(n) for n in args.instances.split(",")):
        log = Path(tempfile.gettempdir()) / f"audiotoken-serve-bench-{instances}.log"
        # every request may wait its turn, however long the ones before it take (a CPU draws SD 1.5 slowly)
        options = ["--instances", str(instances), "--max-queue", str(args.requests), "--timeout", "86400"]
        process, port, _ = start(args.bundle, options, log)
        try:
            figures[instances] = load(port, args.clip, args.requests, args.clients, args.steps)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        f = figures[instances]
        print(
            f"{instances} instance(s): {f['requests_per_minute']:.1f} requests/min, p50 {f['p50_s']:.2f} s, "
            f"p95 {f['p95_s']:.2f} s, {f['answered']} answered, {f['refused']} refused",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"bundle": args.bundle, "clients": args.clients, "requests": args.requests, "steps": args.steps}
        args.json.write_text(json.dumps({**report, "instances": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
