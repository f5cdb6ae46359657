"""``audiotoken-rt serve`` for real: Triton (PyTriton's tritonserver, CPU) on loopback ports, called with tritonclient
over HTTP and gRPC. The served picture is the CLI's, pixel for pixel; 40 requests from 8 clients are all answered or
refused at once (a full queue), none lost; every bad request is an error naming its input and the server keeps
serving; SIGTERM lets the request in flight finish. PyTriton needs numpy < 2, so the server runs from .venv-serve
(``just setup-serve``); without it these tests skip, saying so."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
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

    def __init__(self, bundle: Path, log: Path, instances: int = 2, max_queue: int = 4):
        if not SERVE.exists():
            pytest.skip("needs .venv-serve (PyTriton wants numpy < 2): run `just setup-serve`")
        self.http, self.grpc, metrics = free_ports(3)
        command = [str(SERVE), "serve", str(bundle), "--address", "127.0.0.1", "--http-port", str(self.http),
                   "--grpc-port", str(self.grpc), "--metrics-port", str(metrics), "--instances", str(instances),
                   "--max-queue", str(max_queue)]  # fmt: skip
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


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    running = Server(tiny_bundle, tmp_path_factory.mktemp("serve") / "server.log")
    yield running
    assert running.stop() == 0, running.log.read_text()[-2000:]


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
    with Image.open(__import__("io").BytesIO(png)) as picture:
        assert np.array_equal(np.asarray(picture), cli) and picture.text["audiotoken:seed"] == "11"


def test_edit_is_served_at_the_pictures_own_size(server, clips):
    import io

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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"AUDIO": None}, "AUDIO"),  # Triton's "missing required input(s) ['AUDIO']", or ours: "AUDIO: missing"
        ({"AUDIO": np.full((1, 100, 1), np.nan, np.float32)}, "AUDIO: 100 of 100 samples are not finite"),
        ({"AUDIO": np.zeros((1, 100, 1), np.float64)}, "AUDIO"),
        ({"PROMPT": np.array([[b"a photo of a dog"]], object)}, "holds <*> 0 times"),
        ({"STEPS": np.array([[0]], np.int32)}, "steps is 0"),
        ({"STEPS": np.array([[100000]], np.int32)}, "num_inference_steps: expected 1..1000"),
        ({"SCHEDULER": np.array([[b"magic"]], object)}, "unknown scheduler 'magic'"),
        ({"SAMPLE_RATE": np.array([[0]], np.int32)}, "sample rate must be a positive number"),
    ],
)
def test_a_bad_request_is_an_error_naming_it_and_the_server_keeps_serving(server, clips, change, message):
    from tritonclient.utils import InferenceServerException

    samples, rate = sf.read(clips[0], dtype="float32", always_2d=True)
    values = {
        "AUDIO": samples[None],
        "SAMPLE_RATE": np.array([[rate]], np.int32),
        "STEPS": np.array([[STEPS]], np.int32),
    }
    values = {k: v for k, v in {**values, **change}.items() if v is not None}
    with pytest.raises(InferenceServerException) as caught:
        server.client().infer("audiotoken", tensors("http", **values))
    assert message in str(caught.value)
    assert server.client().infer("audiotoken", request(clips[0])).as_numpy("IMAGE").shape[-1] == 3


def test_sigterm_lets_the_request_in_flight_finish(tiny_bundle, clips, tmp_path):
    own = Server(tiny_bundle, tmp_path / "server.log", instances=1, max_queue=1)
    answers = []

    def slow() -> None:
        answers.append(own.client().infer("audiotoken", request(clips[0], STEPS=np.array([[40]], np.int32))))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(1.5)  # the request is in flight
    os.kill(own.process.pid, signal.SIGTERM)
    thread.join(timeout=300)
    assert own.process.wait(timeout=180) == 0, own.log.read_text()[-2000:]
    assert len(answers) == 1 and answers[0].as_numpy("IMAGE").shape[-1] == 3


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
        from runtime.serve import bind

        self.sessions += 1
        bind(self, "audiotoken_png", [], [], [], None)

    def bind(self, **_) -> None:
        from tritonclient.utils import InferenceServerException

        if self.failures:
            raise InferenceServerException(self.failures.pop(0))


@pytest.mark.parametrize("misses", [0, 1, 2])
def test_a_load_that_missed_pytritons_handshake_restarts_triton(misses):
    from rich.console import Console

    from runtime.serve import with_start_retries

    triton = RefusingTriton([MISSED_HANDSHAKE] * misses)
    console = Console(record=True, width=300)
    with_start_retries(triton.start, console)
    assert triton.sessions == misses + 1
    assert console.export_text().count("missed PyTriton's start-up handshake") == misses


def test_a_load_that_keeps_missing_the_handshake_or_fails_otherwise_is_one_line():
    from rich.console import Console

    from runtime.errors import ConfigError
    from runtime.serve import START_ATTEMPTS, with_start_retries

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
