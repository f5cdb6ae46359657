"""``audiotoken-rt serve``: the pipeline behind Triton Inference Server, through NVIDIA's PyTriton.

Place in the data flow: a client's request (KServe v2 over HTTP or gRPC, any tritonclient) -> Triton (queueing,
instances, metrics) -> PyTriton -> ``Models.draw_image`` / ``draw_png`` / ``edit_png`` here, which read the
request's tensors into ``GenerationOptions`` / ``EditOptions`` -> ``runtime.pipeline.Pipeline`` -> the picture
(uint8 [H, W, 3]) or a PNG with its metadata (``runtime.picture.save_png``'s chunks).

Models (inputs with Triton's batch dimension of 1 in front; optional ones may be left out):
- ``audiotoken``: AUDIO float32 [N, C] samples (mono: [N, 1]), SAMPLE_RATE int32 [1]; optional PROMPT,
  NEGATIVE_PROMPT, SCHEDULER bytes [1], SEED int64 [1], STEPS int32 [1], GUIDANCE float32 [1], FAST bool [1]
  -> IMAGE uint8 [H, W, 3], SEED_USED int64 [1];
- ``audiotoken_png``: the same -> PNG bytes [1] (the picture with its PNG text chunks), SEED_USED;
- ``audiotoken_edit``: the same plus PICTURE bytes [1] (a PNG, JPEG or WebP file's bytes), optional MASK bytes [1]
  and STRENGTH float32 [1] -> PNG bytes [1] at the picture's size, SEED_USED.
Triton fixes each input's rank, hence AUDIO as [N, C] rather than "[N] or [N, C]".

Concurrency: each model runs ``instances`` copies (Triton model instances) over one shared, thread-safe
``Pipeline``; requests beyond them wait in Triton's queue up to ``max_queue`` (a dynamic batcher of batch 1 with
a reject-when-full queue policy), and one more is refused at once with Triton's "exceeds maximum queue size" error.
A bad request is answered with a Triton error whose message names the input (``RequestError``) and the server
keeps serving. SIGINT or SIGTERM stops Triton, which waits up to ``DRAIN_SECONDS`` for in-flight requests.
A model load that fails on PyTriton's start-up race (``HANDSHAKE_RACE``) starts Triton again, up to
``START_ATTEMPTS`` times, with the bundle left open.

PyTriton needs numpy < 2, so it lives in its own environment (``just setup-serve`` makes ``.venv-serve``), as the
OpenVINO build of ONNX Runtime does. Its Python stub is linked against the system ``libpython3.11``; under another
3.11 build (pyenv, conda) it fails until ``LD_LIBRARY_PATH`` leads to the running interpreter's own library,
which ``serve`` arranges before Triton starts.
"""

from __future__ import annotations

import os
import signal
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer

from runtime.backends import DEVICES, backend_names
from runtime.command import choice, option, options_from, reports_errors
from runtime.errors import AudioTokenError, ConfigError, first_line

SERVE_HINT = (
    "PyTriton needs numpy < 2: `just setup-serve` makes .venv-serve with it, then run .venv-serve/bin/audiotoken-rt "
    "serve ... (or pip install 'audiotoken-rt[serve]' in an environment of its own)"
)
DRAIN_SECONDS = 60  # how long a stopping server waits for the requests in flight
# PyTriton 0.7's model instances after the first fetch its config from a Unix socket that the first instance's
# stub binds, then listens on, and give up after 1 s. Under Triton's parallel instance loading one can find the file
# before the listen (ConnectionRefusedError: 2 in 8 starts of 4 instances on 2 loaded cores) or not at all in time
# (TimeoutError: seen with 8 instances), and the model's load fails. Triton's error then carries this function's
# name, and serve starts Triton again.
HANDSHAKE_RACE = "get_config_from_handshake_server"
START_ATTEMPTS = 3
MODEL, PNG_MODEL, EDIT_MODEL = "audiotoken", "audiotoken_png", "audiotoken_edit"


@dataclass(frozen=True)
class ServeOptions:
    """Where and how wide to serve; the ``help`` of each field is the ``serve`` option's help."""

    http_port: int = field(default=8000, metadata={"help": "HTTP port (KServe v2)."})
    grpc_port: int = field(default=8001, metadata={"help": "gRPC port (KServe v2)."})
    metrics_port: int = field(default=8002, metadata={"help": "Prometheus metrics port (/metrics)."})
    address: str = field(default="0.0.0.0", metadata={"help": "Address the HTTP and gRPC servers listen on."})
    instances: int = field(default=1, metadata={"help": "Requests each model runs at once (Triton model instances)."})
    max_queue: int = field(
        default=8, metadata={"help": "Requests each model holds waiting beyond those; one more is refused at once."}
    )

    def check(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a port 1-65535")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ConfigError("--http-port, --grpc-port and --metrics-port must differ")
        if self.instances < 1 or self.max_queue < 1:
            raise ConfigError(f"--instances {self.instances}, --max-queue {self.max_queue}: each must be at least 1")


class RequestError(Exception):
    """A bad request, answered as Triton's error message. It reports no traceback, so the message the client reads
    ends in this one line (naming the input) rather than in the server's stack."""

    @property
    def __traceback__(self):
        return None

    @__traceback__.setter
    def __traceback__(self, value) -> None:
        pass


def scalar(request, name: str, kind: type, default=None):
    """An optional [1]-shaped input as a Python value (bytes decoded as UTF-8), or ``default`` when absent."""
    if name not in request:
        return default
    values = np.asarray(request[name]).reshape(-1)  # Triton's batch of one, flattened
    if values.size != 1:
        raise RequestError(f"{name}: expected one value, got {values.size}")
    value = values[0]
    if kind is str:
        if not isinstance(value, (bytes, np.bytes_)):
            raise RequestError(f"{name}: expected bytes (UTF-8 text), got {values.dtype}")
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{name}: not UTF-8 text ({exc.reason})") from None
    if kind is bytes:
        return bytes(value)
    return kind(value)


def read_audio(request) -> tuple[np.ndarray, int]:
    """AUDIO [1, N, C] float32 and SAMPLE_RATE [1, 1] -> samples [N, C], rate; a missing, malformed, empty or
    non-finite one is a RequestError naming it (the rate's range is checked by ``runtime.audio.prepare_waveform``)."""
    for name in ("AUDIO", "SAMPLE_RATE"):
        if name not in request:
            raise RequestError(f"{name}: missing (AUDIO float32 [N, C] samples and SAMPLE_RATE int32 [1] are required)")
    audio = np.asarray(request["AUDIO"])
    if audio.dtype != np.float32 or audio.ndim != 3:
        raise RequestError(f"AUDIO: expected float32 [1, N, C] (batch of one), got {audio.dtype} {list(audio.shape)}")
    if audio.size == 0:
        raise RequestError(f"AUDIO: holds no samples (shape {list(audio.shape)})")
    bad = audio.size - int(np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise RequestError(f"AUDIO: {bad} of {audio.size} samples are not finite (NaN or Inf)")
    return audio[0], scalar(request, "SAMPLE_RATE", int)


class Models:
    """The served models' inference functions over one pipeline (thread-safe: instances call it concurrently)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def options(self, request, kind):
        """The request's optional inputs as ``kind`` (GenerationOptions or EditOptions), checked."""
        fields = {
            "prompt": scalar(request, "PROMPT", str),
            "negative_prompt": scalar(request, "NEGATIVE_PROMPT", str, ""),
            "scheduler": scalar(request, "SCHEDULER", str),
            "seed": scalar(request, "SEED", int),
            "steps": scalar(request, "STEPS", int),
            "guidance": scalar(request, "GUIDANCE", float),
            "fast": scalar(request, "FAST", bool, False),
        }
        if "STRENGTH" in request:
            fields["strength"] = scalar(request, "STRENGTH", float)
        return kind(**{name: value for name, value in fields.items() if value is not None})

    def answer(self, requests, draw) -> list[dict]:
        """Run ``draw(request) -> dict`` on each request; the runtime's one-line errors become RequestErrors."""
        answers = []
        for request in requests:
            try:
                answers.append(draw(request))
            except AudioTokenError as exc:
                raise RequestError(str(exc) + (f" (hint: {exc.hint})" if exc.hint else "")) from None
        return answers

    def generation(self, request):
        from runtime.pipeline import GenerationOptions

        samples, rate = read_audio(request)
        return self.pipeline.draw(samples, self.options(request, GenerationOptions), sample_rate=rate)

    def draw_image(self, requests) -> list[dict]:
        def draw(request) -> dict:
            result = self.generation(request)
            return {
                "IMAGE": np.asarray(result.pictures[0])[None],  # [1, H, W, 3] uint8
                "SEED_USED": np.array([[result.seeds[0]]], np.int64),
            }

        return self.answer(requests, draw)

    def draw_png(self, requests) -> list[dict]:
        return self.answer(requests, lambda request: png_answer(self.generation(request), self.bundle_id))

    def edit_png(self, requests) -> list[dict]:
        from runtime.pipeline import EditOptions
        from runtime.source_picture import load_picture

        def draw(request) -> dict:
            picture = scalar(request, "PICTURE", bytes)
            if picture is None:
                raise RequestError("PICTURE: missing (the bytes of a PNG, JPEG or WebP file)")
            mask = scalar(request, "MASK", bytes)
            samples, rate = read_audio(request)
            result = self.pipeline.draw_edit(
                load_picture(picture, name="PICTURE"),
                samples,
                self.options(request, EditOptions),
                mask=mask,
                sample_rate=rate,
            )
            return png_answer(result, self.bundle_id)

        return self.answer(requests, draw)

    @property
    def bundle_id(self) -> str:
        return self.pipeline.bundle.manifest.bundle_id


def png_answer(result, bundle_id: str) -> dict:
    """A drawn picture as PNG bytes with its metadata, and its seed."""
    from runtime.picture import png_bytes

    encoded = png_bytes(result.pictures[0], {**result.metadata(0), "bundle": bundle_id})
    return {"PNG": np.array([[encoded]], dtype=object), "SEED_USED": np.array([[result.seeds[0]]], np.int64)}


# The requests' inputs, one table for every place that names them (PyTriton here; the standalone repository's
# config.pbtxt and its BLS model in runtime.triton_repo / runtime.triton_model): name, numpy dtype, Triton data
# type, dims without the batch dimension, optional.
INPUTS = (
    ("AUDIO", np.float32, "TYPE_FP32", (-1, -1), False),
    ("SAMPLE_RATE", np.int32, "TYPE_INT32", (1,), False),
    ("PROMPT", bytes, "TYPE_STRING", (1,), True),
    ("NEGATIVE_PROMPT", bytes, "TYPE_STRING", (1,), True),
    ("SCHEDULER", bytes, "TYPE_STRING", (1,), True),
    ("SEED", np.int64, "TYPE_INT64", (1,), True),
    ("STEPS", np.int32, "TYPE_INT32", (1,), True),
    ("GUIDANCE", np.float32, "TYPE_FP32", (1,), True),
    ("FAST", np.bool_, "TYPE_BOOL", (1,), True),
)
EDIT_INPUTS = (
    ("PICTURE", bytes, "TYPE_STRING", (1,), False),
    ("MASK", bytes, "TYPE_STRING", (1,), True),
    ("STRENGTH", np.float32, "TYPE_FP32", (1,), True),
)


def tensors(edit: bool):
    """The models' inputs and outputs as PyTriton tensors (shapes without the batch dimension)."""
    from pytriton.model_config import Tensor

    table = INPUTS + EDIT_INPUTS if edit else INPUTS
    inputs = [Tensor(name=name, dtype=dtype, shape=dims, optional=optional) for name, dtype, _, dims, optional in table]
    seed = Tensor(name="SEED_USED", dtype=np.int64, shape=(1,))
    return inputs, seed


class MissedHandshake(Exception):
    """A model instance started before PyTriton's first instance listened for it (``HANDSHAKE_RACE``)."""


def bind(triton, name: str, infer_funcs: list, inputs: list, outputs: list, config) -> None:
    """Bind and load one model; a load Triton refuses is one line naming the model (Triton's log has the rest)."""
    from tritonclient.utils import InferenceServerException

    try:
        triton.bind(model_name=name, infer_func=infer_funcs, inputs=inputs, outputs=outputs, config=config, strict=True)
    except InferenceServerException as exc:
        if HANDSHAKE_RACE in str(exc):
            raise MissedHandshake(name) from exc
        raise ConfigError(
            f"Triton could not load model {name} ({first_line(exc)})", hint="see Triton's log above"
        ) from exc


def with_start_retries(start: Callable[[], None], console) -> None:
    """Run ``start`` (one Triton session: bind the models, serve, stop) again when a model's instances missed
    PyTriton's handshake, up to ``START_ATTEMPTS`` times; the bundle stays open in between."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except MissedHandshake as exc:
            if attempt == START_ATTEMPTS:
                raise ConfigError(
                    f"Triton could not start the instances of model {exc}: they missed PyTriton's start-up handshake "
                    f"{START_ATTEMPTS} times",
                    hint="a race in PyTriton that a busy machine makes likelier; fewer --instances make it rarer",
                ) from exc
            console.print(
                f"model {exc}: an instance missed PyTriton's start-up handshake (a race in PyTriton); restarting "
                f"Triton, attempt {attempt + 1} of {START_ATTEMPTS}"
            )


def serve(bundle: Path, backend: str, device: str, settings: ServeOptions, console) -> None:
    """Open the bundle, bind the three models, and serve until SIGINT or SIGTERM."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor, TimeoutAction
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise ConfigError(
            f"serve needs NVIDIA's PyTriton, which is not importable here ({exc})", hint=SERVE_HINT
        ) from exc
    from runtime.pipeline import Pipeline

    library = sysconfig.get_config_var("LIBDIR")  # the running interpreter's libpython, for Triton's Python stub
    if library and library not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [library, os.environ.get("LD_LIBRARY_PATH")]))
    with console.status(f"opening {bundle} ({backend}, {device})"):
        models = Models(Pipeline.open(bundle, backend=backend, device=device))
    queue = QueuePolicy(max_queue_size=settings.max_queue, timeout_action=TimeoutAction.REJECT)
    config = ModelConfig(batching=True, max_batch_size=1, batcher=DynamicBatcher(default_queue_policy=queue))
    triton_config = TritonConfig(
        http_address=settings.address,
        http_port=settings.http_port,
        grpc_address=settings.address,
        grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port,
        exit_timeout_secs=DRAIN_SECONDS,
    )
    image = Tensor(name="IMAGE", dtype=np.uint8, shape=(-1, -1, 3))
    png = Tensor(name="PNG", dtype=bytes, shape=(1,))

    def start() -> None:
        with Triton(config=triton_config) as triton:
            for name, infer, outputs, edit in (
                (MODEL, models.draw_image, [image], False),
                (PNG_MODEL, models.draw_png, [png], False),
                (EDIT_MODEL, models.edit_png, [png], True),
            ):
                inputs, seed = tensors(edit)
                bind(triton, name, [infer] * settings.instances, inputs, [*outputs, seed], config)
            stopping = threading.Event()

            def stop(signum, frame) -> None:  # SIGTERM (a container's stop) as SIGINT: drain and exit
                if not stopping.is_set():
                    stopping.set()
                    console.print("stopping: waiting for the requests in flight")
                    threading.Thread(target=triton.stop, daemon=True).start()

            signal.signal(signal.SIGTERM, stop)
            console.print(
                f"serving {bundle} as {MODEL}, {PNG_MODEL}, {EDIT_MODEL}: http {settings.address}:{settings.http_port}, "
                f"grpc :{settings.grpc_port}, metrics :{settings.metrics_port}; {settings.instances} instance(s), "
                f"queue {settings.max_queue}"
            )
            triton.serve()

    with_start_retries(start, console)
    console.print("stopped")


@reports_errors
def serve_command(
    bundle: Path = typer.Argument(..., help="Engine bundle folder to serve.", show_default=False),
    backend: str = typer.Option("onnxruntime", "--backend", help=f"{', '.join(backend_names())}."),
    device: str = typer.Option(
        "cpu", "--device", **choice(DEVICES), help="For onnxruntime: cpu, cuda, tensorrt, openvino."
    ),
    http_port: int = option(ServeOptions, "http_port", "--http-port"),
    grpc_port: int = option(ServeOptions, "grpc_port", "--grpc-port"),
    metrics_port: int = option(ServeOptions, "metrics_port", "--metrics-port"),
    address: str = option(ServeOptions, "address", "--address"),
    instances: int = option(ServeOptions, "instances", "--instances"),
    max_queue: int = option(ServeOptions, "max_queue", "--max-queue"),
) -> None:
    """Serve a bundle on Triton Inference Server (HTTP, gRPC, metrics): models audiotoken (IMAGE), audiotoken_png and
    audiotoken_edit (PNG bytes). Ctrl-C or SIGTERM drains the requests in flight and exits."""
    from rich.console import Console

    settings = options_from(ServeOptions, locals())
    settings.check()
    serve(bundle, backend, device, settings, Console(stderr=True, highlight=False))
