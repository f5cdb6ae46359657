"""``audiotoken-rt serve`` for real: Triton (PyTriton's tritonserver, CPU) on loopback ports, called with tritonclient
over HTTP and gRPC. The served picture is the CLI's, pixel for pixel; 40 requests from 8 clients are all answered or
refused at once (a full queue), none lost. Safe to face a network: by default every port listens on loopback only,
Triton's admin APIs answer 403 without PyTriton's token, every bad request (out of any bound, malformed, non-finite)
is refused with exactly one line naming its input over both protocols and the server keeps serving, a request that
waits past --timeout is refused, and Triton's CPU-only start-up noise is held back. Stopping: SIGTERM lets the
request in flight finish; a second signal stops at once, leaving no process behind. PyTriton needs numpy < 2, so
the server runs from .venv-serve (``just setup-serve``); without it these tests skip, saying so."""

from __future__ import annotations

import io
import ipaddress
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from tests.support import REPO

SERVE = REPO / ".venv-serve" / "bin" / "audiotoken-rt"
STEPS = 2


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Server:
    """A running ``audiotoken-rt serve`` and clients for it."""

    def __init__(self, bundle: Path, log: Path, *options: str):
        if not SERVE.exists():
            pytest.skip("needs .venv-serve (PyTriton wants numpy < 2): run `just setup-serve`")
        self.http, self.grpc, self.metrics = free_ports(3)
        command = [
            str(SERVE),
            "serve",
            str(bundle),
            "--http-port",
            str(self.http),
            "--grpc-port",
            str(self.grpc),
            "--metrics-port",
            str(self.metrics),
            *options,
        ]  # fmt: skip  (the default address: loopback)
        self.log = log
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                if self.client().is_model_ready("audiotoken_edit"):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(1)
        self.stop()
        pytest.fail(f"the server did not get ready in 180 s: {log.read_text()[-2000:]}")

    def client(self, protocol: str = "http"):
        if protocol == "http":
            from tritonclient.http import InferenceServerClient

            return InferenceServerClient(f"127.0.0.1:{self.http}", network_timeout=300)
        from tritonclient.grpc import InferenceServerClient

        return InferenceServerClient(f"127.0.0.1:{self.grpc}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def tensors(protocol: str, **values) -> list:
    """tritonclient inputs from numpy arrays (Triton's batch of one in front)."""
    if protocol == "http":
        from tritonclient.http import InferInput
    else:
        from tritonclient.grpc import InferInput
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, value in values.items():
        array = np.asarray(value)
        dtype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
        one = InferInput(name, list(array.shape), dtype)
        one.set_data_from_numpy(array)
        inputs.append(one)
    return inputs


def request(clip: Path, protocol: str = "http", **extra) -> list:
    samples, rate = sf.read(clip, dtype="float32", always_2d=True)  # [N, C]
    values = {
        "AUDIO": samples[None],
        "SAMPLE_RATE": np.array([[rate]], np.int32),
        "SEED": np.array([[11]], np.int64),
        "STEPS": np.array([[STEPS]], np.int32),
        **extra,
    }
    return tensors(protocol, **values)


MAX_SAMPLES = 200_000  # the server's --max-samples: a 10 s clip at 16 kHz (160_000) fits


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    running = Server(tiny_bundle, log, "--instances", "2", "--max-queue", "4", "--max-samples", str(MAX_SAMPLES))
    yield running
    assert running.stop() == 0, running.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def narrow_server(tiny_bundle, tmp_path_factory):
    """Two instances, a short queue wait and room for long requests: for the queue timeout, then stopping."""
    log = tmp_path_factory.mktemp("serve") / "narrow.log"
    running = Server(
        tiny_bundle, log, "--instances", "2", "--max-queue", "2", "--timeout", "0.2", "--max-steps", "1000"
    )
    yield running
    running.stop()  # test_sigterm_drains_..._a_second_signal_stops_at_once stops it first, and checks how


def test_the_served_picture_is_the_cli_picture_over_http_and_grpc(server, tiny_bundle, clips, tmp_path):
    from audiotoken_rt.cli import app

    args = ["generate", str(clips[0]), "--engines", str(tiny_bundle), "--out", str(tmp_path), "--seed", "11"]
    assert CliRunner().invoke(app, [*args, "--steps", str(STEPS)]).exit_code == 0
    cli = np.asarray(Image.open(tmp_path / f"{clips[0].stem}.png"))
    for protocol in ("http", "grpc"):
        answer = server.client(protocol).infer("audiotoken", request(clips[0], protocol))
        assert np.array_equal(answer.as_numpy("IMAGE")[0], cli), protocol
        assert answer.as_numpy("SEED_USED").tolist() == [[11]]
    png = server.client().infer("audiotoken_png", request(clips[0])).as_numpy("PNG")[0][0]
    with Image.open(io.BytesIO(png)) as picture:
        assert np.array_equal(np.asarray(picture), cli) and picture.text["audiotoken:seed"] == "11"


def test_the_recipes_eta_and_spacing_are_served_as_the_cli_draws_them(server, tiny_bundle, clips, tmp_path):
    from audiotoken_rt.cli import app

    recipe = ["--scheduler", "ddim", "--eta", "0.5", "--spacing", "trailing", "--steps", str(STEPS)]
    args = ["generate", str(clips[0]), "--engines", str(tiny_bundle), "--out", str(tmp_path), "--seed", "11", *recipe]
    assert CliRunner().invoke(app, args).exit_code == 0
    cli = np.asarray(Image.open(tmp_path / f"{clips[0].stem}.png"))
    inputs = {"SCHEDULER": text(b"ddim"), "ETA": np.array([[0.5]], np.float32), "SPACING": text(b"trailing")}
    for protocol in ("http", "grpc"):
        answer = server.client(protocol).infer("audiotoken", request(clips[0], protocol, **inputs))
        assert np.array_equal(answer.as_numpy("IMAGE")[0], cli), protocol
    png = server.client().infer("audiotoken_png", request(clips[0], **inputs)).as_numpy("PNG")[0][0]
    with Image.open(io.BytesIO(png)) as picture:
        assert (picture.text["audiotoken:eta"], picture.text["audiotoken:timestep_spacing"]) == ("0.5", "trailing")


def test_edit_is_served_at_the_pictures_own_size(server, clips):
    source = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(source, "PNG")
    extra = {"PICTURE": np.array([[source.getvalue()]], object), "STRENGTH": np.array([[0.5]], np.float32)}
    png = server.client().infer("audiotoken_edit", request(clips[0], **extra)).as_numpy("PNG")[0][0]
    with Image.open(io.BytesIO(png)) as edited:
        assert edited.size == (80, 48) and edited.text["audiotoken:strength"] == "0.5"


def test_forty_requests_from_eight_clients_are_answered_or_refused_at_once(server, clips):
    from tritonclient.utils import InferenceServerException

    outcomes: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        connection = server.client()
        for _ in range(5):
            try:
                image = connection.infer("audiotoken", request(clips[1])).as_numpy("IMAGE")
                outcome = "answered" if image.shape[-1] == 3 else "wrong"
            except InferenceServerException as exc:
                outcome = "refused" if "queue" in str(exc).lower() else f"error: {exc}"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(outcomes) == 40 and set(outcomes) <= {"answered", "refused"}, outcomes
    assert outcomes.count("answered") >= 2
    assert server.client().is_server_live() and server.client().is_model_ready("audiotoken")


def listening(port: int) -> set[str]:
    """The addresses a TCP port listens on on this machine (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
                address = ipaddress.ip_address(words)
                found.add(str(getattr(address, "ipv4_mapped", None) or address))  # ::ffff:127.0.0.1 is 127.0.0.1
    return found


def test_every_port_listens_on_loopback_only_by_default(server):
    for port in (server.http, server.grpc, server.metrics):
        assert listening(port) == {"127.0.0.1"}, port


# Triton's admin APIs (PyTriton's protected endpoints: model repository, logging, trace, shared memory, statistics)
ADMIN_HTTP = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/audiotoken/unload"),
    ("POST", "/v2/repository/models/audiotoken/load"),
    ("GET", "/v2/logging"),
    ("POST", "/v2/logging"),
    ("GET", "/v2/trace/setting"),
    ("POST", "/v2/trace/setting"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/probe/register"),
    ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/models/audiotoken/stats"),
]


def test_the_admin_apis_refuse_a_request_without_pytritons_token(server, clips):
    from tritonclient.utils import InferenceServerException

    for method, path in ADMIN_HTTP:
        admin = urllib.request.Request(
            f"http://127.0.0.1:{server.http}{path}", method=method, data=b"{}" if method == "POST" else None
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(admin, timeout=30)
        assert refused.value.code == 403, (method, path)
    grpc = server.client("grpc")
    for call in (
        grpc.get_model_repository_index,
        lambda: grpc.unload_model("audiotoken"),
        grpc.get_log_settings,
        grpc.get_trace_settings,
        grpc.get_system_shared_memory_status,
        grpc.get_cuda_shared_memory_status,
        grpc.get_inference_statistics,
    ):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    assert server.client().is_model_ready("audiotoken")  # still loaded; inference and health stay open
    assert server.client("grpc").infer("audiotoken", request(clips[0], "grpc")).as_numpy("IMAGE").shape[-1] == 3


def text(value: bytes) -> np.ndarray:
    return np.array([[value]], object)


BAD_REQUESTS = [  # (change to a good request, what the one line must say)
    ({"AUDIO": None}, "AUDIO"),  # Triton's own "expected ... inputs": a required input is missing
    ({"AUDIO": np.zeros((1, 100, 1), np.float64)}, "AUDIO"),  # Triton's own: FP64 where FP32 is expected
    ({"AUDIO": np.full((1, 100, 1), np.nan, np.float32)}, "AUDIO: 100 of 100 samples are not finite"),
    # PyTriton's proxy fails on an empty tensor before serve sees it: a server error, one line all the same
    ({"AUDIO": np.zeros((1, 0, 1), np.float32)}, "memoryview"),
    (
        {"AUDIO": np.zeros((1, MAX_SAMPLES // 2 + 1, 2), np.float32)},
        f"more than this server's --max-samples {MAX_SAMPLES}",
    ),
    ({"SAMPLE_RATE": np.array([[0]], np.int32)}, "SAMPLE_RATE 0: expected 4000 to 384000 Hz"),
    (
        {"AUDIO": np.zeros((1, 10_000, 1), np.float32), "SAMPLE_RATE": np.array([[1]], np.int32)},
        "SAMPLE_RATE 1: expected",
    ),
    ({"SAMPLE_RATE": np.array([[384_001]], np.int32)}, "SAMPLE_RATE 384001: expected 4000 to 384000 Hz"),
    ({"STEPS": np.array([[0]], np.int32)}, "STEPS 0: expected 1 to 100 (this server's --max-steps)"),
    ({"STEPS": np.array([[100_000]], np.int32)}, "STEPS 100000: expected 1 to 100 (this server's --max-steps)"),
    ({"PROMPT": text(b"a photo of a dog")}, "holds <*> 0 times"),
    ({"PROMPT": text(b"<*> " * 1000)}, "PROMPT: 4000 bytes, more than the 1000 it may hold"),
    ({"NEGATIVE_PROMPT": text(b"x" * 5000)}, "NEGATIVE_PROMPT: 5000 bytes, more than the 1000 it may hold"),
    ({"PROMPT": text(b"a photo of <*>\xff")}, "PROMPT: not UTF-8 text"),
    ({"PROMPT": text(b"a photo\nof a dog")}, "holds <*> 0 times"),  # a line break quoted in the message
    ({"SCHEDULER": text(b"magic")}, "--scheduler is 'magic'"),
    ({"SCHEDULER": text(b"m" * 1000)}, "SCHEDULER: 1000 bytes"),
    ({"GUIDANCE": np.array([[np.inf]], np.float32)}, "GUIDANCE inf: expected a finite number"),
    ({"GUIDANCE": np.array([[np.nan]], np.float32)}, "GUIDANCE nan: expected a finite number"),
    ({"GUIDANCE": np.array([[0.5]], np.float32)}, "guidance is 0.5"),  # the range is GenerationOptions.check's
    ({"GUIDANCE": np.array([[1e6]], np.float32)}, "guidance is 1"),
    ({"SEED": np.array([[-2]], np.int64)}, "seed -2: expected an integer from 0"),
    ({"FAST": np.array([[True]], np.bool_)}, "--fast needs a bundle with LCM-LoRA fused"),
    ({"ETA": np.array([[0.5]], np.float32)}, "--eta 0.5: dpm++2m has no eta"),  # the bundle's scheduler takes none
    ({"SCHEDULER": text(b"ddim"), "ETA": np.array([[1.5]], np.float32)}, "--eta is 1.5"),
    ({"ETA": np.array([[np.inf]], np.float32)}, "ETA inf: expected a finite number"),
    ({"SPACING": text(b"sideways")}, "--spacing is 'sideways'"),
    ({"SPACING": text(b"s" * 1000)}, "SPACING: 1000 bytes"),
]


@pytest.mark.parametrize("change, message", BAD_REQUESTS, ids=[m[:40] for _, m in BAD_REQUESTS])
def test_a_bad_request_is_refused_in_one_line_naming_it_and_the_server_keeps_serving(server, clips, change, message):
    from tritonclient.utils import InferenceServerException

    samples, rate = sf.read(clips[0], dtype="float32", always_2d=True)
    values = {
        "AUDIO": samples[None],
        "SAMPLE_RATE": np.array([[rate]], np.int32),
        "STEPS": np.array([[STEPS]], np.int32),
    }
    values = {k: v for k, v in {**values, **change}.items() if v is not None}
    codes = {"http": "500", "grpc": "StatusCode.INTERNAL"} if message == "memoryview" else {
        "http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}  # fmt: skip
    for protocol, code in codes.items():
        with pytest.raises(InferenceServerException) as caught:
            server.client(protocol).infer("audiotoken", tensors(protocol, **values))
        said = str(caught.value)
        assert message in said and "\n" not in said and "Traceback" not in said, (protocol, said)
        assert said.startswith(f"[{code}] "), said
    assert server.client().infer("audiotoken", request(clips[0])).as_numpy("IMAGE").shape[-1] == 3


def test_a_bad_edit_is_refused_in_one_line(server, clips):
    from tritonclient.utils import InferenceServerException

    picture = io.BytesIO()
    Image.new("RGB", (32, 32)).save(picture, "PNG")
    for change, message in (
        ({"PICTURE": text(b"not a picture")}, "PICTURE"),
        ({"STRENGTH": np.array([[np.nan]], np.float32)}, "STRENGTH nan: expected a finite number"),
    ):
        values = {"PICTURE": text(picture.getvalue()), "STRENGTH": np.array([[0.5]], np.float32), **change}
        with pytest.raises(InferenceServerException) as caught:
            server.client().infer("audiotoken_edit", request(clips[0], **values))
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_tritons_cpu_only_start_up_noise_is_held_back_and_explained_once(server):
    from runtime.serving.serve import CPU_ONLY_NOISE, CPU_ONLY_NOTE, LOAD_NOISE

    log = server.log.read_text()
    assert not [marker for marker in CPU_ONLY_NOISE + LOAD_NOISE if marker in log]
    assert log.count(CPU_ONLY_NOTE.split(":")[0]) <= 1  # once where there was some, never on a machine without it
    assert "successfully loaded 'audiotoken_edit'" in log  # Triton's other lines pass


def in_background(server: Server, clip: Path, steps: int) -> tuple[threading.Thread, list[str]]:
    """A request of ``steps`` steps sent from a thread; its outcome ("answered", or the error) lands in the list."""
    outcome: list[str] = []

    def send() -> None:
        try:
            server.client().infer("audiotoken", request(clip, STEPS=np.array([[steps]], np.int32)))
            outcome.append("answered")
        except Exception as exc:  # Triton's error, or the connection closed under it
            outcome.append(repr(exc))

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def test_tritons_output_passes_in_whole_lines_without_the_noise():
    from runtime.serving.serve import TritonLog

    out = io.StringIO()
    log = TritonLog(out, ("CUDA", "NVML"), "(no GPU: held back)")
    for piece in ("I1206 loading: audio", "token:1\nW1206 CUDA driver", " too old\nI1206 lo", "aded\nError: NVML\n"):
        log.write(piece)  # PyTriton prints Triton's output in pieces as they come
    assert out.getvalue() == "I1206 loading: audiotoken:1\n(no GPU: held back)\nI1206 loaded\n"


def test_a_request_that_waits_past_the_timeout_is_refused(narrow_server, clips):
    from tritonclient.utils import InferenceServerException

    busy = [in_background(narrow_server, clips[0], 990) for _ in range(2)]  # both instances, 2 s or more each
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="timeout") as caught:
        narrow_server.client().infer("audiotoken", request(clips[0]))
    assert time.monotonic() - started < 60 and "\n" not in str(caught.value)
    for thread, outcome in busy:
        thread.join(timeout=300)
        assert outcome == ["answered"]


def descendants(root: int) -> set[int]:
    from runtime.serving.serve import processes

    table, found = processes(), {root}
    while grown := {pid for pid, (parent, _) in table.items() if parent in found} - found:
        found |= grown
    return found - {root}


def test_sigterm_drains_the_requests_in_flight_and_a_second_signal_stops_at_once(narrow_server, clips):
    processes = descendants(narrow_server.process.pid)
    assert len(processes) >= 2  # tritonserver and its Python stubs
    # two requests on the two instances: whatever the machine's speed, the long one still runs when the short one ends
    short, short_outcome = in_background(narrow_server, clips[0], 400)  # about 1 s beside the other on 2 idle cores
    long, long_outcome = in_background(narrow_server, clips[0], 990)
    time.sleep(0.8)  # both in flight
    os.kill(narrow_server.process.pid, signal.SIGTERM)
    short.join(timeout=120)
    assert short_outcome == ["answered"]  # drained
    assert narrow_server.process.poll() is None and not long_outcome  # still draining the long one
    os.kill(narrow_server.process.pid, signal.SIGINT)  # Ctrl-C: at once
    stopped = time.monotonic()
    assert narrow_server.process.wait(timeout=30) == 128 + signal.SIGINT, narrow_server.log.read_text()[-2000:]
    assert time.monotonic() - stopped < 5
    long.join(timeout=60)
    assert long_outcome and long_outcome != ["answered"]
    deadline = time.monotonic() + 30  # the stubs see Triton gone within a few seconds
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in processes):
        time.sleep(0.5)
    assert not [pid for pid in processes if Path(f"/proc/{pid}").exists()]
    log = narrow_server.log.read_text()
    assert "waiting up to 25 s for those in flight" in log and "stopped at once" in log  # 25: the default --drain


def test_serve_says_that_another_address_is_unauthenticated():
    from audiotoken_rt.cli import app
    from runtime.errors import ConfigError
    from runtime.serving.serve import ServeOptions

    assert not ServeOptions().exposed and ServeOptions().address == "127.0.0.1"
    assert ServeOptions(address="0.0.0.0").exposed and not ServeOptions(address="::1").exposed
    with pytest.raises(ConfigError, match="--address 'example.com': expected an IP address"):
        ServeOptions(address="example.com").check()
    with pytest.raises(ConfigError, match="--timeout 0"):
        ServeOptions(timeout=0).check()
    help_text = " ".join(CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "UNAUTHENTICATED" in help_text and "127.0.0.1" in help_text


def test_an_unforeseen_failure_is_one_line_for_the_client_and_a_traceback_in_the_log(caplog):
    from runtime.errors import AudioLoadError, NumericsError
    from runtime.serving.serve import Models, RequestError, ServerError

    models = Models(pipeline=None)

    def broken(request):
        raise ValueError("operands could not be broadcast\ntogether with shapes (3,) (4,)")

    with pytest.raises(ServerError) as caught:
        models.answer([{}], broken)
    assert str(caught.value) == (
        "unexpected ValueError: operands could not be broadcast (the server's log has the traceback)"
    )
    assert caught.value.__traceback__ is None and "broken" in caplog.text  # the traceback, server-side

    def refused(request):
        raise AudioLoadError("AUDIO: holds\nno samples", hint="send some")

    with pytest.raises(RequestError, match="^AUDIO: holds no samples \\(hint: send some\\)$"):
        models.answer([{}], refused)

    def damaged(request):  # the bundle's fault, not the request's: a 500 that names no path of the server
        raise NumericsError("denoise: 4 of 4 values are NaN; check /srv/bundles/sd14 with info --verify full")

    with pytest.raises(ServerError) as caught:
        models.answer([{}], damaged)
    assert str(caught.value) == "the server could not draw this request (NumericsError; the server's log says why)"
    assert "/srv/bundles/sd14" in caplog.text


# Triton's load error when a second instance missed PyTriton's handshake (from a CI run's server log)
MISSED_HANDSHAKE = (
    "[400] load failed for model 'audiotoken_png': version 1 is at UNAVAILABLE state: Internal: TritonModelException: "
    'Model initialize error: Traceback (most recent call last):\n  File "/tmp/folderuE8sQd/1/model.py", line 425, in '
    "initialize\n    inference_handler_config = get_config_from_handshake_server(handshake_socket)\n  File "
    '"/tmp/folderuE8sQd/1/communication.py", line 550, in get_config_from_handshake_server\n    '
    "sock.connect(socket_path.as_posix())\nConnectionRefusedError: [Errno 111] Connection refused\n"
)


class RefusingTriton:
    """Stands in for a PyTriton ``Triton`` whose model loads fail with the given Triton messages, then succeed."""

    def __init__(self, failures: list[str]):
        self.failures = failures
        self.sessions = 0

    def start(self) -> None:  # one session: bind a model, as serve does
        from runtime.serving.serve import bind

        self.sessions += 1
        bind(self, "audiotoken_png", [], [], [], None)

    def bind(self, **_) -> None:
        from tritonclient.utils import InferenceServerException

        if self.failures:
            raise InferenceServerException(self.failures.pop(0))


@pytest.mark.parametrize("misses", [0, 1, 2])
def test_a_load_that_missed_pytritons_handshake_restarts_triton(misses):
    from rich.console import Console

    from runtime.serving.serve import with_start_retries

    triton = RefusingTriton([MISSED_HANDSHAKE] * misses)
    console = Console(record=True, width=300)
    with_start_retries(triton.start, console)
    assert triton.sessions == misses + 1
    assert console.export_text().count("missed PyTriton's start-up handshake") == misses


def test_a_load_that_keeps_missing_the_handshake_or_fails_otherwise_is_one_line():
    from rich.console import Console

    from runtime.errors import ConfigError
    from runtime.serving.serve import START_ATTEMPTS, with_start_retries

    triton = RefusingTriton([MISSED_HANDSHAKE] * START_ATTEMPTS)
    with pytest.raises(
        ConfigError, match=f"model audiotoken_png: .*missed PyTriton's start-up handshake {START_ATTEMPTS} times"
    ):
        with_start_retries(triton.start, Console(quiet=True))
    assert triton.sessions == START_ATTEMPTS

    other = RefusingTriton(["[400] load failed for model 'audiotoken_png': out of memory"])
    with pytest.raises(ConfigError, match="Triton could not load model audiotoken_png .*out of memory"):
        with_start_retries(other.start, Console(quiet=True))
    assert other.sessions == 1  # not a race: no second try
