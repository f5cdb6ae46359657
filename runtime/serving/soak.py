"""``python -m runtime.serving.soak``: a soak test of ``audiotoken-rt serve`` (``just soak``;
``tests/test_serve_soak.py`` runs a short one, marked slow).

It starts the server on loopback ports with its default limits (``runtime.serving.bench.start``, from .venv-serve,
where PyTriton lives), has the CLI draw the reference picture of each good request (``audiotoken-rt generate`` on
the same clip with the same options: the given clips, and a 10 s stereo clip at 384 kHz that it writes, near the
most samples ``--max-samples`` lets in), then lets ``--clients`` threads send a seeded mix for ``--seconds``: good
requests (over HTTP or gRPC, to the IMAGE or the PNG model), each of which must be answered with the CLI's picture
bit for bit, and hostile ones in turn, every kind the server bounds, each of which must be refused with one line
that says what it should (``HOSTILE``). A sampler adds up the memory of the server's process tree (the ``serve``
process, tritonserver and its Python stubs) every half second: resident set (RSS, shared pages counted in every
process that maps them) and proportional set (PSS). At the end the server must be ready, its peak RSS within
``--max-rss-mb``, and SIGTERM must stop it with exit 0. The figures go to the terminal and to ``--json``; any failed
check exits 1. Loopback only, bounded in time and in memory.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from runtime.audio import MAX_SAMPLE_RATE
from runtime.pipeline import MAX_PROMPT_BYTES
from runtime.serving.bench import start
from runtime.serving.serve import MODEL, PNG_MODEL, RequestLimits, processes

CLI = Path(sys.executable).parent / "audiotoken-rt"
MAX_SAMPLES = RequestLimits().max_samples  # the server runs with its default limits
SAMPLE_SECONDS = 0.5  # how often the memory is read


def i32(value: int) -> np.ndarray:
    return np.array([[value]], np.int32)


def i64(value: int) -> np.ndarray:
    return np.array([[value]], np.int64)


def text(value: bytes) -> np.ndarray:
    return np.array([[value]], object)


@dataclass(frozen=True)
class Good:
    """A request that must be answered with the picture the CLI draws from ``clip`` with ``options``."""

    name: str
    clip: Path
    options: tuple[str, ...]  # generate's
    inputs: dict = field(default_factory=dict)  # the same, as the server's inputs (AUDIO and SAMPLE_RATE aside)


@dataclass(frozen=True)
class Hostile:
    """A request that must be refused with one line holding ``says``: a good one with ``change`` (None: left out)."""

    name: str
    change: dict
    says: str
    model: str = MODEL


def good_requests(clips: list[Path], folder: Path) -> list[Good]:
    wide = folder / "stereo-384k.wav"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (10 * MAX_SAMPLE_RATE, 2)).astype(np.float32)  # [N, 2]
    sf.write(wide, noise, MAX_SAMPLE_RATE, subtype="FLOAT")
    night = ("a photo of <*> at night", "blurry")
    return [
        Good("plain", clips[0], ("--seed", "1", "--steps", "4"), {"SEED": i64(1), "STEPS": i32(4)}),
        Good(
            "prompted ddim",
            clips[-1],
            ("--seed", "2", "--steps", "3", "--prompt", night[0], "--negative-prompt", night[1])
            + ("--scheduler", "ddim", "--guidance", "3"),
            {
                "SEED": i64(2),
                "STEPS": i32(3),
                "PROMPT": text(night[0].encode()),
                "NEGATIVE_PROMPT": text(night[1].encode()),
                "SCHEDULER": text(b"ddim"),
                "GUIDANCE": np.array([[3.0]], np.float32),
            },
        ),
        Good(
            "euler-a",
            clips[0],
            ("--seed", "3", "--steps", "4", "--scheduler", "euler-a"),
            {"SEED": i64(3), "STEPS": i32(4), "SCHEDULER": text(b"euler-a")},
        ),
        Good("384 kHz stereo", wide, ("--seed", "4", "--steps", "2"), {"SEED": i64(4), "STEPS": i32(2)}),
        Good(
            "ddim, eta 0.5, trailing",
            clips[0],
            ("--seed", "5", "--steps", "3", "--scheduler", "ddim", "--eta", "0.5", "--spacing", "trailing"),
            {
                "SEED": i64(5),
                "STEPS": i32(3),
                "SCHEDULER": text(b"ddim"),
                "ETA": np.array([[0.5]], np.float32),
                "SPACING": text(b"trailing"),
            },
        ),
    ]


HOSTILE = [
    Hostile("STEPS 100000", {"STEPS": i32(100_000)}, "STEPS 100000: expected 1 to"),
    Hostile("STEPS 0", {"STEPS": i32(0)}, "STEPS 0: expected 1 to"),
    Hostile(
        "10,000 samples at 1 Hz",
        {"AUDIO": np.zeros((1, 10_000, 1), np.float32), "SAMPLE_RATE": i32(1)},
        "SAMPLE_RATE 1:",
    ),
    Hostile("SAMPLE_RATE 0", {"SAMPLE_RATE": i32(0)}, "SAMPLE_RATE 0:"),
    Hostile("SAMPLE_RATE 1 GHz", {"SAMPLE_RATE": i32(1_000_000_000)}, "SAMPLE_RATE 1000000000:"),
    Hostile("AUDIO over --max-samples", {"AUDIO": np.zeros((1, MAX_SAMPLES + 1, 1), np.float32)}, "--max-samples"),
    Hostile("AUDIO NaN", {"AUDIO": np.full((1, 1000, 1), np.nan, np.float32)}, "not finite"),
    Hostile("AUDIO Inf", {"AUDIO": np.full((1, 1000, 2), np.inf, np.float32)}, "not finite"),
    Hostile("AUDIO empty", {"AUDIO": np.zeros((1, 0, 1), np.float32)}, "memoryview"),  # PyTriton's own failure
    Hostile("AUDIO float64", {"AUDIO": np.zeros((1, 1000, 1), np.float64)}, "AUDIO"),  # Triton's own refusal
    Hostile("AUDIO missing", {"AUDIO": None}, "AUDIO"),
    Hostile("PROMPT without <*>", {"PROMPT": text(b"a photo of a dog")}, "holds <*> 0 times"),
    Hostile("PROMPT too long", {"PROMPT": text(b"<*>" + b"x" * MAX_PROMPT_BYTES)}, "PROMPT: "),
    Hostile("NEGATIVE_PROMPT too long", {"NEGATIVE_PROMPT": text(b"y" * 100_000)}, "NEGATIVE_PROMPT: 100000 bytes"),
    Hostile("PROMPT not UTF-8", {"PROMPT": text(b"<*> \xc3\x28")}, "PROMPT: not UTF-8"),
    Hostile("GUIDANCE inf", {"GUIDANCE": np.array([[np.inf]], np.float32)}, "GUIDANCE inf: expected a finite"),
    Hostile("GUIDANCE nan", {"GUIDANCE": np.array([[np.nan]], np.float32)}, "GUIDANCE nan: expected a finite"),
    Hostile("GUIDANCE 1e6", {"GUIDANCE": np.array([[1e6]], np.float32)}, "guidance"),
    Hostile("SEED -2", {"SEED": i64(-2)}, "seed -2"),
    Hostile("SCHEDULER unknown", {"SCHEDULER": text(b"magic")}, "--scheduler is 'magic'"),
    Hostile("SCHEDULER too long", {"SCHEDULER": text(b"m" * 10_000)}, "SCHEDULER: 10000 bytes"),
    Hostile("ETA 2", {"SCHEDULER": text(b"ddim"), "ETA": np.array([[2.0]], np.float32)}, "--eta is 2.0"),
    # a scheduler without an eta named too: hostile changes are laid over a good request, which may name ddim
    Hostile("ETA with euler", {"SCHEDULER": text(b"euler"), "ETA": np.array([[0.5]], np.float32)}, "has no eta"),
    Hostile("SPACING unknown", {"SPACING": text(b"sideways")}, "--spacing is 'sideways'"),
    Hostile("FAST without the fast bundle", {"FAST": np.array([[True]])}, "--fast needs"),
    Hostile("PICTURE not a picture", {"PICTURE": text(b"GIF89a" + b"\0" * 64)}, "PICTURE", "audiotoken_edit"),
    Hostile("STRENGTH nan", {"STRENGTH": np.array([[np.nan]], np.float32)}, "STRENGTH nan", "audiotoken_edit"),
]


def tensors(protocol: str, values: dict) -> list:
    """tritonclient inputs from numpy arrays (Triton's batch of one in front)."""
    if protocol == "http":
        from tritonclient.http import InferInput
    else:
        from tritonclient.grpc import InferInput
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in values.items():
        one = InferInput(name, list(array.shape), "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype))
        one.set_data_from_numpy(array)
        inputs.append(one)
    return inputs


def cli_picture(bundle: str, good: Good, folder: Path) -> np.ndarray:
    """The picture ``audiotoken-rt generate`` draws for ``good`` ([H, W, 3] uint8)."""
    from PIL import Image

    out = folder / good.name.replace(" ", "-")
    command = [str(CLI), "generate", str(good.clip), "--engines", bundle, "--out", str(out), *good.options]
    subprocess.run(command, check=True, capture_output=True)
    with Image.open(out / f"{good.clip.stem}.png") as picture:
        return np.asarray(picture)


def tree_memory(root: int) -> dict[str, tuple[int, int]]:
    """(RSS, PSS) in bytes of process ``root`` and all its descendants, added up by command name (from /proc)."""
    table = processes()
    pids, found = [root], {}
    for pid in pids:
        pids.extend(child for child, (parent, _) in table.items() if parent == pid)
        try:
            rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
            pss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
        except (OSError, StopIteration):  # gone meanwhile
            continue
        name = table.get(pid, (0, "?"))[1]
        found[name] = tuple(a + 1024 * b for a, b in zip(found.get(name, (0, 0)), (rss, pss), strict=True))
    return found


def total(memory: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(RSS, PSS) of a ``tree_memory`` reading, in bytes."""
    return sum(rss for rss, _ in memory.values()), sum(pss for _, pss in memory.values())


class Soak:
    """The clients' tallies and the memory samples, shared by the threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.hostile = 0  # hostile requests sent
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.memory: list[tuple[float, int, int]] = []  # (seconds, RSS, PSS)

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)


def client(k: int, ports: tuple[int, int], goods: list, hostile: list[Hostile], deadline: float, soak: Soak) -> None:
    """Client ``k``: good requests and hostile ones in turn (these in order, from the k-th on), until ``deadline``."""
    from PIL import Image
    from tritonclient.grpc import InferenceServerClient as GrpcClient
    from tritonclient.http import InferenceServerClient as HttpClient
    from tritonclient.utils import InferenceServerException

    connections = {
        "http": HttpClient(f"127.0.0.1:{ports[0]}", network_timeout=600),
        "grpc": GrpcClient(f"127.0.0.1:{ports[1]}"),
    }
    rng = np.random.default_rng(k)
    turn = k
    while time.monotonic() < deadline:
        protocol = ("http", "grpc")[int(rng.integers(2))]
        good, inputs, expected = goods[int(rng.integers(len(goods)))]
        if turn % 2 == 0:
            model = (MODEL, PNG_MODEL)[int(rng.integers(2))]
            started = time.perf_counter()
            try:
                answer = connections[protocol].infer(model, tensors(protocol, inputs))
            except InferenceServerException as exc:
                soak.fail(f"{good.name} ({protocol}, {model}): refused: {exc}")
                turn += 1
                continue
            latency = time.perf_counter() - started
            if model == MODEL:
                picture = answer.as_numpy("IMAGE")[0]
            else:
                with Image.open(io.BytesIO(answer.as_numpy("PNG")[0][0])) as png:
                    picture = np.asarray(png)
            if not np.array_equal(picture, expected):
                soak.fail(f"{good.name} ({protocol}, {model}): not the CLI's picture")
            with soak.lock:
                soak.answered[good.name] = soak.answered.get(good.name, 0) + 1
                soak.latencies.append(latency)
        else:
            bad = hostile[(turn // 2) % len(hostile)]
            with soak.lock:
                soak.hostile += 1
            values = {name: value for name, value in {**inputs, **bad.change}.items() if value is not None}
            try:
                connections[protocol].infer(bad.model, tensors(protocol, values))
                soak.fail(f"{bad.name} ({protocol}): answered, not refused")
            except InferenceServerException as exc:
                said = str(exc)
                if bad.says not in said or "\n" in said or "Traceback" in said:
                    soak.fail(f"{bad.name} ({protocol}): refused with {said!r}, expected one line holding {bad.says!r}")
                else:
                    with soak.lock:
                        soak.refused[bad.name] = soak.refused.get(bad.name, 0) + 1
        turn += 1


def sample_memory(pid: int, stop: threading.Event, soak: Soak, started: float) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        rss, pss = total(tree_memory(pid))
        with soak.lock:
            soak.memory.append((time.monotonic() - started, rss, pss))


def run(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="audiotoken-soak-"))
    log = folder / "server.log"
    options = ["--instances", str(args.instances), "--max-queue", str(4 * args.clients), "--timeout", "600"]
    process, http, grpc = start(args.bundle, options, log)
    report: dict = {"bundle": args.bundle, "seconds": args.seconds, "clients": args.clients, "log": str(log)}
    soak = Soak()
    try:
        goods = []
        for good in good_requests(args.clips, folder):
            samples, rate = sf.read(good.clip, dtype="float32", always_2d=True)  # [N, C], as the CLI reads it
            inputs = {"AUDIO": samples[None], "SAMPLE_RATE": i32(rate), **good.inputs}
            goods.append((good, inputs, cli_picture(args.bundle, good, folder)))
        edit_base = {"PICTURE": text(picture_bytes()), "STRENGTH": np.array([[0.5]], np.float32)}
        hostile = [
            Hostile(h.name, {**edit_base, **h.change}, h.says, h.model) if h.model != MODEL else h for h in HOSTILE
        ]
        rss, pss = total(tree_memory(process.pid))
        report["memory_at_start_mb"] = {"rss": rss / 2**20, "pss": pss / 2**20}
        started = time.monotonic()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(process.pid, stop, soak, started), daemon=True)
        sampler.start()
        deadline = started + args.seconds
        threads = [
            threading.Thread(target=client, args=(k, (http, grpc), goods, hostile, deadline, soak))
            for k in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        report["pss_at_end_by_process_mb"] = {name: pss / 2**20 for name, (_, pss) in tree_memory(process.pid).items()}
        from tritonclient.http import InferenceServerClient

        ready = InferenceServerClient(f"127.0.0.1:{http}")
        report["ready_at_end"] = ready.is_server_ready() and all(
            ready.is_model_ready(name) for name in (MODEL, PNG_MODEL, "audiotoken_edit")
        )
    finally:
        process.send_signal(signal.SIGTERM)
        report["exit_code"] = process.wait(timeout=120)
    peak_rss = max((m[1] for m in soak.memory), default=0)
    report.update(
        wall_s=wall,
        answered=soak.answered,
        refused=soak.refused,
        good_requests=sum(soak.answered.values()),
        hostile_requests=soak.hostile,
        good_latency_p50_s=float(np.percentile(soak.latencies, 50)) if soak.latencies else None,
        good_latency_p95_s=float(np.percentile(soak.latencies, 95)) if soak.latencies else None,
        memory_mb={
            "rss_peak": peak_rss / 2**20,
            "pss_peak": max((m[2] for m in soak.memory), default=0) / 2**20,
            "rss_end": soak.memory[-1][1] / 2**20 if soak.memory else None,
            "samples": len(soak.memory),
            "rss_every_30_s": [round(rss / 2**20) for rss in every(soak.memory, 30)],
        },
        failures=soak.failures,
    )
    missing = [g.name for g, _, _ in goods if not soak.answered.get(g.name)] + [
        h.name for h in HOSTILE if not soak.refused.get(h.name)
    ]
    if missing:
        soak.failures.append(f"never checked: {', '.join(missing)}")
    if peak_rss > args.max_rss_mb * 2**20:
        soak.failures.append(f"peak RSS {peak_rss / 2**20:.0f} MB over --max-rss-mb {args.max_rss_mb}")
    if not report["ready_at_end"]:
        soak.failures.append("the server was not ready at the end")
    if report["exit_code"] != 0:
        soak.failures.append(f"SIGTERM: exit {report['exit_code']}")
    report["passed"] = not soak.failures
    return report


def every(memory: list[tuple[float, int, int]], seconds: float) -> list[int]:
    """The RSS of the first sample at or after each multiple of ``seconds``."""
    picked, due = [], 0.0
    for at, rss, _ in memory:
        if at >= due:
            picked.append(rss)
            due += seconds
    return picked


def picture_bytes() -> bytes:
    """A small PNG, the picture of the hostile edit requests."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 200)).save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.serving.soak", description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument(
        "clips", type=Path, nargs="+", help="clips of the good requests (the first and the last are used)"
    )
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--max-rss-mb", type=float, default=4096, help="the bound on the server tree's peak RSS")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = run(args)
    memory, start = report["memory_mb"], report["memory_at_start_mb"]
    answered = ", ".join(f"{name} {count}" for name, count in sorted(report["answered"].items()))
    print(
        f"{report['good_requests']} good requests answered with the CLI's picture ({answered}); "
        f"{sum(report['refused'].values())} of {report['hostile_requests']} hostile ones refused in one line; "
        f"{args.clients} clients, {report['wall_s']:.0f} s; server tree RSS {start['rss']:.0f} MB at start, peak "
        f"{memory['rss_peak']:.0f} MB (PSS peak {memory['pss_peak']:.0f} MB), {memory['rss_end']:.0f} MB at the end; "
        f"ready at the end: {report['ready_at_end']}; SIGTERM: exit {report['exit_code']}",
        flush=True,
    )
    for failure in report["failures"]:
        print(f"FAILED: {failure}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
