"""``audiotoken-rt serve``: the pipeline behind Triton Inference Server, through NVIDIA's PyTriton.

Place in the data flow: a client's request (KServe v2 over HTTP or gRPC, any tritonclient) -> Triton (queueing,
instances, metrics) -> PyTriton -> ``Models.draw_image`` / ``draw_png`` / ``edit_png`` here, which check the
request's tensors against ``RequestLimits`` and read them into ``GenerationOptions`` / ``EditOptions`` ->
``runtime.pipeline.Pipeline`` -> the picture (uint8 [H, W, 3]) or a PNG with its metadata
(``runtime.picture.save_png``'s chunks).

Models (inputs with Triton's batch dimension of 1 in front; optional ones may be left out):
- ``audiotoken``: AUDIO float32 [N, C] samples (mono: [N, 1]), SAMPLE_RATE int32 [1]; optional PROMPT,
  NEGATIVE_PROMPT, SCHEDULER bytes [1], SEED int64 [1], STEPS int32 [1], GUIDANCE float32 [1], ETA float32 [1],
  SPACING bytes [1], FAST bool [1] -> IMAGE uint8 [H, W, 3], SEED_USED int64 [1]; SCHEDULER, STEPS, GUIDANCE, ETA
  and SPACING are the recipe's fields (``runtime.sampling.Sampling``: --scheduler, --steps, --guidance, --eta,
  --spacing), laid over the bundle's recipe as the command line's are;
- ``audiotoken_png``: the same -> PNG bytes [1] (the picture with its PNG text chunks), SEED_USED;
- ``audiotoken_edit``: the same plus PICTURE bytes [1] (a PNG, JPEG or WebP file's bytes), optional MASK bytes [1]
  and STRENGTH float32 [1] -> PNG bytes [1] at the picture's size, SEED_USED.
Triton fixes each input's rank, hence AUDIO as [N, C] rather than "[N] or [N, C]".

Exposure: every port (HTTP, gRPC, metrics) listens on ``--address``, loopback by default. Triton has no
authentication of its own: anything else exposes the models to whoever reaches the port, so ``serve`` says so when
it starts, and docs/serving.md puts an authenticating proxy in front. Triton's admin APIs (model repository,
logging, trace, shared memory, statistics) stay behind PyTriton's access token (403 without it).

Bounds, all checked before any work: AUDIO at most ``--max-samples`` values, SAMPLE_RATE in
``runtime.audio``'s MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, STEPS 1..``--max-steps`` (the recipe's steps too, when
STEPS is left out), PROMPT and NEGATIVE_PROMPT at most ``runtime.pipeline``'s MAX_PROMPT_BYTES before they are
decoded or tokenized, SCHEDULER and SPACING at most NAME_BYTES, GUIDANCE, ETA and STRENGTH finite (their ranges are
the options' own ``check``, which names them as the command line does). Each model runs
``--instances`` copies (Triton model instances) over one shared, thread-safe ``Pipeline``; requests beyond them
wait in Triton's queue, at most ``--max-queue`` of them (one more is refused at once: "exceeds maximum queue size")
and at most ``--timeout`` seconds each (then refused: "request timeout expired").

Errors: whatever goes wrong in a request becomes one line for the client, never a traceback: a bad request (any
``AudioTokenError`` or a failed bound) a ``RequestError`` naming its input (HTTP 400, gRPC INVALID_ARGUMENT),
anything unforeseen a ``ServerError`` (500, INTERNAL) whose traceback goes to this process's log. PyTriton 0.7
would send either with its proxy's traceback, so each model's Python-backend file is ``runtime/serving/stub.py``
(``ONE_LINE_PROXY``), which answers a failed request with an error response of that one line.

Stopping: SIGINT (Ctrl-C) or SIGTERM asks Triton to stop; it takes no new request and waits up to ``--drain``
seconds for those in flight. A second signal stops at once: Triton is killed and the process exits with
128 + the signal's number. On a CPU, Triton's start-up lines about CUDA, NVML and DCGM (which look like failures)
are held back and explained in one line (``TritonLog``).

A model load that fails on PyTriton's start-up race (``HANDSHAKE_RACE``) starts Triton again, up to
``START_ATTEMPTS`` times, with the bundle left open. PyTriton needs numpy < 2, so it lives in its own environment
(``just setup-serve`` makes ``.venv-serve``), as the OpenVINO build of ONNX Runtime does. Its Python stub is linked
against the system ``libpython3.11``; under another 3.11 build (pyenv, conda) it fails until ``LD_LIBRARY_PATH``
leads to the running interpreter's own library, which ``serve`` arranges before Triton starts.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import math
import os
import signal
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer

from runtime.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from runtime.backends import DEVICES, GPU_DEVICES, backend_names
from runtime.commands.cli import choice, option, options_from, reports_errors
from runtime.errors import AudioLoadError, AudioTokenError, ConfigError, first_line
from runtime.pipeline import MAX_PROMPT_BYTES

SERVE_HINT = (
    "PyTriton needs numpy < 2: `just setup-serve` makes .venv-serve with it, then run .venv-serve/bin/audiotoken-rt "
    "serve ... (or pip install 'audiotoken-rt[serve]' in an environment of its own)"
)
# PyTriton 0.7's model instances after the first fetch its config from a Unix socket that the first instance's
# stub binds, then listens on, and give up after 1 s. Under Triton's parallel instance loading one can find the file
# before the listen (ConnectionRefusedError: 2 in 8 starts of 4 instances on 2 loaded cores) or not at all in time
# (TimeoutError: seen with 8 instances), and the model's load fails. Triton's error then carries this function's
# name, and serve starts Triton again.
HANDSHAKE_RACE = "get_config_from_handshake_server"
START_ATTEMPTS = 3
MODEL, PNG_MODEL, EDIT_MODEL = "audiotoken", "audiotoken_png", "audiotoken_edit"
NAME_BYTES = 64  # SCHEDULER and SPACING: a scheduler's or a timestep spacing's name
ONE_LINE_PROXY = Path(__file__).with_name("stub.py")  # each served model's model.py (see the docstring)
LOG = logging.getLogger("audiotoken_rt.serve")


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for, checked before any work; the ``help`` of each field is the option's help
    (``serve`` and ``triton-repo``)."""

    max_steps: int = field(default=100, metadata={"help": "Most denoising steps a request may ask for (STEPS)."})
    max_samples: int = field(
        default=8_000_000,
        metadata={
            "help": "Most AUDIO values (frames x channels) a request may carry: the default holds 10 s of stereo "
            "at 384 kHz (only the 10 s from the start are heard)."
        },
    )

    def check(self) -> None:
        if self.max_steps < 1 or self.max_samples < 1:
            raise ConfigError(
                f"--max-steps {self.max_steps}, --max-samples {self.max_samples}: each must be at least 1"
            )


@dataclass(frozen=True)
class ServeOptions:
    """Where and how wide to serve; the ``help`` of each field is the ``serve`` option's help."""

    address: str = field(
        default="127.0.0.1",
        metadata={
            "help": "Address the HTTP, gRPC and metrics ports listen on (loopback: this machine only). Any other "
            "exposes an UNAUTHENTICATED server to whoever reaches it: put an authenticating proxy in front "
            "(docs/serving.md)."
        },
    )
    http_port: int = field(default=8000, metadata={"help": "HTTP port (KServe v2)."})
    grpc_port: int = field(default=8001, metadata={"help": "gRPC port (KServe v2)."})
    metrics_port: int = field(default=8002, metadata={"help": "Prometheus metrics port (/metrics)."})
    instances: int = field(default=1, metadata={"help": "Requests each model runs at once (Triton model instances)."})
    max_queue: int = field(
        default=8, metadata={"help": "Requests each model holds waiting beyond those; one more is refused at once."}
    )
    timeout: float = field(
        default=60.0, metadata={"help": "Seconds a request may wait in the queue; one that waits longer is refused."}
    )
    drain: int = field(
        default=25,
        metadata={
            "help": "Seconds a stopping server (SIGTERM, Ctrl-C) waits for the requests in flight (25: inside "
            "Kubernetes' 30 s grace period); a second signal stops at once."
        },
    )

    def check(self) -> None:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ConfigError(
                f"--address {self.address!r}: expected an IP address (127.0.0.1, ::1, or 0.0.0.0 for every interface)"
            ) from None
        for name in ("http_port", "grpc_port", "metrics_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a port 1-65535")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ConfigError("--http-port, --grpc-port and --metrics-port must differ")
        if self.instances < 1 or self.max_queue < 1:
            raise ConfigError(f"--instances {self.instances}, --max-queue {self.max_queue}: each must be at least 1")
        if not 0.001 <= self.timeout <= 86_400:  # Triton counts microseconds, and takes 0 as "no timeout"
            raise ConfigError(f"--timeout {self.timeout}: expected 0.001 to 86400 seconds")
        if not 0 <= self.drain <= 3600:
            raise ConfigError(f"--drain {self.drain}: expected 0 to 3600 seconds")

    @property
    def exposed(self) -> bool:
        """Whether the ports are reachable from other machines."""
        return not ipaddress.ip_address(self.address).is_loopback


class OneLineError(Exception):
    """A failed request, answered as an error of this one line. It reports no traceback, so PyTriton passes on
    ``runtime.serving.serve.<class>: <the line>``, which ``runtime.serving.stub`` cuts to the line."""

    @property
    def __traceback__(self):
        return None

    @__traceback__.setter
    def __traceback__(self, value) -> None:
        pass


class RequestError(OneLineError):
    """A bad request (HTTP 400, gRPC INVALID_ARGUMENT); the line names the input."""


class ServerError(OneLineError):
    """A request that failed on the server's side, a bug or a library's own failure (HTTP 500, gRPC INTERNAL); the
    traceback is in the server's log."""


def one_line(text: str) -> str:
    """``text`` on one line (a message that quotes an input may hold line breaks)."""
    return " ".join(text.split())


def scalar(request, name: str, kind: type, default=None, *, max_bytes: int | None = None):
    """An optional [1]-shaped input as a Python value, or ``default`` when absent: text within ``max_bytes`` bytes
    (checked before it is decoded as UTF-8), raw bytes, or a number (a float must be finite)."""
    if name not in request:
        return default
    values = np.asarray(request[name]).reshape(-1)  # Triton's batch of one, flattened
    if values.size != 1:
        raise RequestError(f"{name}: expected one value, got {values.size}")
    value = values[0]
    if kind is str:
        if not isinstance(value, (bytes, np.bytes_)):
            raise RequestError(f"{name}: expected bytes (UTF-8 text), got {values.dtype}")
        if max_bytes is not None and len(value) > max_bytes:
            raise RequestError(f"{name}: {len(value)} bytes, more than the {max_bytes} it may hold")
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{name}: not UTF-8 text ({exc.reason})") from None
    if kind is bytes:
        return bytes(value)
    number = kind(value)
    if kind is float and not math.isfinite(number):
        raise RequestError(f"{name} {number}: expected a finite number")
    return number


def read_audio(request, limits: RequestLimits) -> tuple[np.ndarray, int]:
    """AUDIO [1, N, C] float32 and SAMPLE_RATE [1, 1] -> samples [N, C], rate; a missing, malformed, oversized,
    empty or non-finite one, or a rate out of range, is a RequestError naming it."""
    for name in ("AUDIO", "SAMPLE_RATE"):
        if name not in request:
            raise RequestError(f"{name}: missing (AUDIO float32 [N, C] samples and SAMPLE_RATE int32 [1] are required)")
    audio = np.asarray(request["AUDIO"])
    if audio.dtype != np.float32 or audio.ndim != 3 or audio.shape[0] != 1:
        raise RequestError(f"AUDIO: expected float32 [1, N, C] (batch of one), got {audio.dtype} {list(audio.shape)}")
    rate = scalar(request, "SAMPLE_RATE", int)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise RequestError(f"SAMPLE_RATE {rate}: expected {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")
    if audio.size > limits.max_samples:
        raise RequestError(
            f"AUDIO: {audio.size} samples ({audio.shape[1]} x {audio.shape[2]}), more than this server's "
            f"--max-samples {limits.max_samples}",
        )
    if audio.size == 0:
        raise RequestError(f"AUDIO: holds no samples (shape {list(audio.shape)})")
    bad = audio.size - int(np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise RequestError(f"AUDIO: {bad} of {audio.size} samples are not finite (NaN or Inf)")
    return audio[0], rate


class Models:
    """The served models' inference functions over one pipeline (thread-safe: instances call it concurrently)."""

    def __init__(self, pipeline, limits: RequestLimits = RequestLimits()):
        self.pipeline = pipeline
        self.limits = limits

    def options(self, request, kind):
        """The request's optional inputs as ``kind`` (GenerationOptions or EditOptions), checked."""
        fields = {
            "prompt": scalar(request, "PROMPT", str, max_bytes=MAX_PROMPT_BYTES),
            "negative_prompt": scalar(request, "NEGATIVE_PROMPT", str, "", max_bytes=MAX_PROMPT_BYTES),
            "scheduler": scalar(request, "SCHEDULER", str, max_bytes=NAME_BYTES),
            "seed": scalar(request, "SEED", int),
            "steps": scalar(request, "STEPS", int),
            "guidance": scalar(request, "GUIDANCE", float),
            "eta": scalar(request, "ETA", float),
            "timestep_spacing": scalar(request, "SPACING", str, max_bytes=NAME_BYTES),
            "fast": scalar(request, "FAST", bool, False),
        }
        if "STRENGTH" in request:
            fields["strength"] = scalar(request, "STRENGTH", float)
        options = kind(**{name: value for name, value in fields.items() if value is not None})
        steps = options.resolved(self.pipeline.bundle.manifest.recipe).steps  # STEPS, or the recipe's
        if not 1 <= steps <= self.limits.max_steps:
            given = "" if fields["steps"] is not None else " (the bundle's recipe)"
            raise RequestError(
                f"STEPS {steps}{given}: expected 1 to {self.limits.max_steps} (this server's --max-steps)"
            )
        return options

    def answer(self, requests, draw) -> list[dict]:
        """Run ``draw(request) -> dict`` on each request. Any failure becomes one line: what the request asked for or
        sent (ConfigError, AudioLoadError) a RequestError; anything else, the bundle's or the server's own fault
        (BundleError, NumericsError, an unforeseen exception), a ServerError that names no server path (its
        message and traceback logged here)."""
        answers = []
        for request in requests:
            try:
                answers.append(draw(request))
            except OneLineError:
                raise
            except (ConfigError, AudioLoadError) as exc:
                raise RequestError(one_line(str(exc) + (f" (hint: {exc.hint})" if exc.hint else ""))) from None
            except AudioTokenError as exc:
                LOG.error("the server could not draw a request: %s", exc)
                raise ServerError(
                    f"the server could not draw this request ({type(exc).__name__}; the server's log says why)"
                ) from None
            except Exception as exc:
                LOG.error("a request failed on the server's side", exc_info=exc)
                raise ServerError(
                    one_line(f"unexpected {type(exc).__name__}: {first_line(exc)} (the server's log has the traceback)")
                ) from None
        return answers

    def generation(self, request):
        from runtime.pipeline import GenerationOptions

        samples, rate = read_audio(request, self.limits)
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
            samples, rate = read_audio(request, self.limits)
            options = self.options(request, EditOptions)
            result = self.pipeline.draw_edit(
                load_picture(picture, name="PICTURE"), samples, options, mask=mask, sample_rate=rate
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
# config.pbtxt and its BLS model in runtime.serving.triton_repo / runtime.serving.triton_model): name, numpy dtype,
# Triton data type, dims without the batch dimension, optional.
INPUTS = (
    ("AUDIO", np.float32, "TYPE_FP32", (-1, -1), False),
    ("SAMPLE_RATE", np.int32, "TYPE_INT32", (1,), False),
    ("PROMPT", bytes, "TYPE_STRING", (1,), True),
    ("NEGATIVE_PROMPT", bytes, "TYPE_STRING", (1,), True),
    ("SCHEDULER", bytes, "TYPE_STRING", (1,), True),
    ("SEED", np.int64, "TYPE_INT64", (1,), True),
    ("STEPS", np.int32, "TYPE_INT32", (1,), True),
    ("GUIDANCE", np.float32, "TYPE_FP32", (1,), True),
    ("ETA", np.float32, "TYPE_FP32", (1,), True),
    ("SPACING", bytes, "TYPE_STRING", (1,), True),
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


@contextlib.contextmanager
def one_line_proxy():
    """While open, PyTriton ships ``ONE_LINE_PROXY`` as each model's ``model.py``, with its own proxy model beside
    it as ``pytriton_model.py`` (which ``runtime.serving.stub`` extends). PyTriton 0.7 has no option for this: its
    ``Model`` class, which ``Triton.bind`` makes, is swapped for a subclass that renames one file; a PyTriton without
    that file is refused in one line rather than served with tracebacks."""
    import pytriton
    import pytriton.triton
    from pytriton.models.model import Model

    stub = ONE_LINE_PROXY.read_bytes()

    class OneLineProxyModel(Model):
        def get_proxy_model_files(self) -> dict[str, bytes]:
            files = super().get_proxy_model_files()
            proxy = f"file:{self.model_version}/model.py"
            if proxy not in files:
                raise ConfigError(
                    f"PyTriton {getattr(pytriton, '__version__', '?')} ships no proxy model.py, which serve extends",
                    hint="install nvidia-pytriton 0.7 (just setup-serve)",
                )
            files[f"file:{self.model_version}/pytriton_model.py"] = files.pop(proxy)
            files[proxy] = stub
            return files

    saved = pytriton.triton.Model
    pytriton.triton.Model = OneLineProxyModel
    try:
        yield
    finally:
        pytriton.triton.Model = saved


# Triton's start-up lines that look like failures but only say that there is no GPU, on a server that runs on the
# CPU: the pinned (page-locked) memory pool and the CUDA memory pool need a CUDA driver; NVML and DCGM (GPU metrics)
# need an NVIDIA driver; CudaDriverHelper is the driver's wrapper.
CPU_ONLY_NOISE = (
    "Unable to allocate pinned system memory",
    "CUDA memory pool disabled",
    "CudaDriverHelper has not been initialized",
    "Failed to initialize NVML",
    "DCGM unable to start",
)
# Logged by Triton 2.51 for every model loaded with its configuration in the load request, as PyTriton loads them.
LOAD_NOISE = ("Failed to set config modification time: model_config_content_name_ is empty",)
CPU_ONLY_NOTE = (
    "(serving on the CPU: Triton's start-up messages about CUDA, pinned memory, NVML and DCGM only say that no GPU is "
    "used, and are not shown)"
)


class TritonLog(io.TextIOBase):
    """Triton's output as PyTriton prints it (in pieces, from a background thread), passed on line by line to
    ``out`` without the lines that hold one of ``hidden``; the first line held back is replaced by ``note``."""

    def __init__(self, out, hidden: tuple[str, ...], note: str | None):
        self.out, self.hidden, self.note = out, hidden, note
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if any(marker in line for marker in self.hidden):
                if self.note:
                    self.out.write(self.note + "\n")
                    self.note = None
            else:
                self.out.write(line + "\n")
        self.out.flush()
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def processes() -> dict[int, tuple[int, str]]:
    """Every process of this machine: pid -> (parent's pid, command name), from /proc (PyTriton runs on Linux only)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)  # "pid (name) state ppid ...": the name may hold ") "
        except OSError:  # gone meanwhile
            continue
        table[int(stat.parent.name)] = (int(tail.split()[1]), head.split("(", 1)[1])
    return table


def child_processes(parent: int) -> dict[int, str]:
    """The processes whose parent is ``parent``: pid -> command name."""
    return {pid: name for pid, (ppid, name) in processes().items() if ppid == parent}


class Stopping:
    """The SIGINT / SIGTERM handler while serving: the first signal asks Triton to stop (it takes no new request and
    waits up to its exit timeout, ``--drain``, for those in flight; PyTriton then sees it gone and ``serve``
    returns); a second kills Triton and exits at once with 128 + the signal's number."""

    def __init__(self, drain: int, console):
        self.drain, self.console = drain, console
        self.asked = False

    def __call__(self, signum: int, frame) -> None:
        triton = [pid for pid, name in child_processes(os.getpid()).items() if name == "tritonserver"]
        if not self.asked:
            self.asked = True
            self.console.print(
                f"stopping: no new requests; waiting up to {self.drain} s for those in flight (signal again to stop "
                "at once)"
            )
            for pid in triton:
                with contextlib.suppress(ProcessLookupError):  # it may have exited since the scan
                    os.kill(pid, signal.SIGINT)
            return
        self.console.print("stopped at once: the requests in flight were dropped")
        for pid in triton:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # its Python stubs exit when they see it gone
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)


def serve(bundle: Path, backend: str, device: str, settings: ServeOptions, limits: RequestLimits, console) -> None:
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
    # Every exception our inference functions raise is a RequestError (the client's) or a ServerError (logged
    # here): PyTriton's warning with each one's traceback would only repeat it.
    logging.getLogger("pytriton.proxy.inference").setLevel(logging.ERROR)
    with console.status(f"opening {bundle} ({backend}, {device})"):
        models = Models(Pipeline.open(bundle, backend=backend, device=device), limits)
    queue = QueuePolicy(
        max_queue_size=settings.max_queue,
        timeout_action=TimeoutAction.REJECT,
        default_timeout_microseconds=round(settings.timeout * 1e6),
        allow_timeout_override=False,
    )
    config = ModelConfig(batching=True, max_batch_size=1, batcher=DynamicBatcher(default_queue_policy=queue))
    on_cpu = device not in GPU_DEVICES
    triton_config = TritonConfig(
        http_address=settings.address,
        http_port=settings.http_port,
        grpc_address=settings.address,
        grpc_port=settings.grpc_port,
        metrics_address=settings.address,
        metrics_port=settings.metrics_port,
        exit_timeout_secs=settings.drain,
        allow_gpu_metrics=not on_cpu,
    )
    image = Tensor(name="IMAGE", dtype=np.uint8, shape=(-1, -1, 3))
    png = Tensor(name="PNG", dtype=bytes, shape=(1,))
    triton_log = (
        TritonLog(sys.stdout, LOAD_NOISE + CPU_ONLY_NOISE, CPU_ONLY_NOTE)
        if on_cpu
        else TritonLog(sys.stdout, LOAD_NOISE, None)
    )

    def start() -> None:
        with Triton(config=triton_config) as triton:
            for name, infer, outputs, edit in (
                (MODEL, models.draw_image, [image], False),
                (PNG_MODEL, models.draw_png, [png], False),
                (EDIT_MODEL, models.edit_png, [png], True),
            ):
                inputs, seed = tensors(edit)
                bind(triton, name, [infer] * settings.instances, inputs, [*outputs, seed], config)
            stopping = Stopping(settings.drain, console)
            signal.signal(signal.SIGINT, stopping)
            signal.signal(signal.SIGTERM, stopping)
            console.print(
                f"serving {bundle} as {MODEL}, {PNG_MODEL}, {EDIT_MODEL} on {settings.address}: http "
                f":{settings.http_port}, grpc :{settings.grpc_port}, metrics :{settings.metrics_port}; "
                f"{settings.instances} instance(s), queue {settings.max_queue} for {settings.timeout:g} s, "
                f"at most {limits.max_steps} steps and {limits.max_samples} samples a request"
            )
            if settings.exposed:
                console.print(
                    f"warning: --address {settings.address} exposes this server, WITHOUT authentication, to whoever "
                    "reaches it; put an authenticating proxy in front (docs/serving.md)"
                )
            triton.serve()

    with contextlib.redirect_stdout(triton_log), one_line_proxy():
        with_start_retries(start, console)
    console.print("stopped")


@reports_errors
def serve_command(
    bundle: Path = typer.Argument(..., help="Engine bundle folder to serve.", show_default=False),
    backend: str = typer.Option("onnxruntime", "--backend", help=f"{', '.join(backend_names())}."),
    device: str = typer.Option(
        "cpu", "--device", **choice(DEVICES), help="For onnxruntime: cpu, cuda, tensorrt, openvino."
    ),
    address: str = option(ServeOptions, "address", "--address"),
    http_port: int = option(ServeOptions, "http_port", "--http-port"),
    grpc_port: int = option(ServeOptions, "grpc_port", "--grpc-port"),
    metrics_port: int = option(ServeOptions, "metrics_port", "--metrics-port"),
    instances: int = option(ServeOptions, "instances", "--instances"),
    max_queue: int = option(ServeOptions, "max_queue", "--max-queue"),
    timeout: float = option(ServeOptions, "timeout", "--timeout"),
    drain: int = option(ServeOptions, "drain", "--drain"),
    max_steps: int = option(RequestLimits, "max_steps", "--max-steps"),
    max_samples: int = option(RequestLimits, "max_samples", "--max-samples"),
) -> None:
    """Serve a bundle on Triton Inference Server (HTTP, gRPC, metrics): models audiotoken (IMAGE), audiotoken_png and
    audiotoken_edit (PNG bytes). It listens on 127.0.0.1 unless --address says otherwise; Triton has no
    authentication, so another address needs an authenticating proxy in front (docs/serving.md). Ctrl-C or SIGTERM
    drains the requests in flight (--drain) and exits; a second one stops at once."""
    from rich.console import Console

    settings = options_from(ServeOptions, locals())
    limits = options_from(RequestLimits, locals())
    settings.check()
    limits.check()
    serve(bundle, backend, device, settings, limits, Console(stderr=True, highlight=False))
