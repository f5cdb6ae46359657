"""The native TensorRT backend: a bundle's plans run with the TensorRT Python API (10 and 11) and cuda-python.

One ``Engine`` class per plan: load, allocate device buffers once (at the largest shapes its optimization
profile allows), infer (shapes set per call, so a UNet holding batches 1 and 2 serves both), an optional CUDA
graph (recaptured when the shapes change), and ``close()`` (also a context manager) that frees the buffers, graphs and stream.
``TensorRTBackend`` maps engine names to plans for the pipeline. TensorRT and cuda-python exist only on NVIDIA
machines (the ``trt`` extra), so this module imports them inside functions, and nothing else in the runtime
imports this module unless ``--backend tensorrt`` is asked. One TensorRT logger serves the process.

A plan is tied to the TensorRT version and the GPU it was built on: ``<engine>.<trt version>.<gpu slug>.plan``.
The backend finds it through the manifest, never by that name on disk: ``manifest_plan`` picks the plan the manifest
records for this version and GPU, and ``Bundle.file_path`` checks it lies inside the bundle and is the file that
was hash-checked when the bundle opened, before TensorRT deserializes it (a plan is code TensorRT runs).
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle import Bundle, Plan
from runtime.contract import UNET
from runtime.errors import BundleError, ConfigError

MIN_TENSORRT = (10, 0)  # strongly typed networks, the tensor-name I/O API (set_tensor_address, execute_async_v3)
TRT_HINT = (
    "pip install 'audiotoken-rt[trt]' on an NVIDIA machine (tensorrt-cu12 and cuda-python 12, for a CUDA 12 "
    "driver; JetPack ships its own TensorRT), or use --backend onnxruntime"
)


def gpu_slug(name: str) -> str:
    """A GPU name as a file-name part: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def plan_name(engine: str, trt_version: str, gpu_name: str) -> str:
    return f"{engine}.{trt_version}.{gpu_slug(gpu_name)}.plan"


def manifest_plan(bundle: Bundle, engine: str, trt_version: str, gpu_name: str) -> tuple[str, Plan]:
    """The plan of ``engine`` the manifest records for this TensorRT version and GPU, with its manifest field (the
    last one, when export added several); a plan file on disk that the manifest does not list is never loaded."""
    if engine not in bundle.manifest.engines:
        raise BundleError(f"{bundle.root}: no engine {engine!r} in the manifest")
    plans = bundle.manifest.engines[engine].plans
    fits = [
        i for i, p in enumerate(plans) if p.tensorrt_version == trt_version and gpu_slug(p.gpu) == gpu_slug(gpu_name)
    ]
    if not fits:
        built = ", ".join(f"TensorRT {p.tensorrt_version} on {p.gpu}" for p in plans) or "none"
        raise BundleError(
            f"{bundle.root}: the manifest has no TensorRT plan of {engine} for TensorRT {trt_version} on {gpu_name} "
            f"(it has: {built})",
            hint=f"build it here: audiotoken-rt export ... --out {bundle.root} --tensorrt",
        )
    return f"engines.{engine}.plans[{fits[-1]}]", plans[fits[-1]]


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); non-numeric tails ('11.0.0rc1') are cut at the first non-digit."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def import_tensorrt():
    """The cuda-python runtime module, once TensorRT (>= MIN_TENSORRT) and cuda-python import; else a ConfigError
    saying what to install. Callers import ``tensorrt`` themselves (so the type checker sees its stubs)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError(f"TensorRT is not installed here ({exc})", hint=TRT_HINT) from exc
    version = getattr(trt, "__version__", None)
    if version is None:  # e.g. a bare stubs folder importing as an empty namespace package
        raise ConfigError(f"the 'tensorrt' module found here is not TensorRT ({trt.__path__})", hint=TRT_HINT)
    if version_tuple(version) < MIN_TENSORRT:
        raise ConfigError(
            f"TensorRT {version} is too old: audiotoken-rt needs {'.'.join(map(str, MIN_TENSORRT))} or newer",
            hint=TRT_HINT,
        )
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError as exc:
        raise ConfigError(f"cuda-python (12.6 or newer) is not installed here ({exc})", hint=TRT_HINT) from exc
    return cudart


@functools.cache
def trt_logger():
    """The process's one TensorRT logger (warnings and errors)."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def checked(result) -> Any:
    """cuda-python returns (error, *values): raise on error, return the values."""
    error, *values = result
    if int(error) != 0:
        raise BundleError(f"CUDA call failed: {error}", hint="check the GPU with nvidia-smi")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def current_gpu_name() -> str:
    cudart = import_tensorrt()
    name = checked(cudart.cudaGetDeviceProperties(0)).name
    return name.decode() if isinstance(name, bytes) else str(name)


class Engine:
    """One TensorRT plan. Device buffers are allocated once, for the largest shapes of the plan's profile, and
    reused by every call; a call may use any shape the profile allows (a UNet plan holding batches 1 and 2)."""

    def __init__(self, path: Path, use_cuda_graph: bool = False):
        import tensorrt as trt

        self.cudart = import_tensorrt()
        self.engine = trt.Runtime(trt_logger()).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(
                f"{path}: TensorRT cannot deserialize this plan",
                hint="rebuild it on this machine: audiotoken-rt export ... --tensorrt",
            )
        self.path = path
        self.context = self.engine.create_execution_context()
        self.stream = checked(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, int] = {}
        self.graph = None  # the instantiated CUDA graph of the last input shapes, once captured
        self.graph_shapes: tuple | None = None
        self.use_cuda_graph = use_cuda_graph
        self.inputs: dict[str, tuple[tuple[int, ...], tuple[int, ...], np.dtype]] = {}  # name -> (min, max, dtype)
        self.outputs: dict[str, np.dtype] = {}
        try:
            self.bind_buffers()
        except BaseException:
            self.close()
            raise

    def bind_buffers(self) -> None:
        """Allocate and bind every I/O tensor's buffer at its largest shape."""
        import tensorrt as trt

        path = self.path
        outputs = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                self.inputs[name] = (tuple(low), tuple(high), dtype)
                if not self.context.set_input_shape(name, tuple(high)):
                    raise BundleError(f"{path}: TensorRT refuses input {name} at its own largest shape {tuple(high)}")
                self.allocate(name, tuple(high), dtype)
            else:
                outputs.append((name, dtype))
        for name, dtype in outputs:  # their largest shapes follow from the inputs' largest
            self.outputs[name] = dtype
            self.allocate(name, tuple(self.context.get_tensor_shape(name)), dtype)

    def allocate(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.buffers[name] = checked(self.cudart.cudaMalloc(max(int(np.prod(shape)), 1) * dtype.itemsize))
        if not self.context.set_tensor_address(name, int(self.buffers[name])):
            raise BundleError(f"{self.path}: TensorRT refuses the device buffer of {name}")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the CUDA graphs, device buffers and stream, then the execution context and engine; idempotent."""
        self.drop_graph()
        for buffer in self.buffers.values():
            checked(self.cudart.cudaFree(buffer))
        self.buffers.clear()
        if self.stream is not None:
            checked(self.cudart.cudaStreamDestroy(self.stream))
            self.stream = None
        self.context = None
        self.engine = None

    def set_shapes(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The feeds as contiguous arrays of the plan's dtypes, their shapes set on the context; refuse shapes the
        profile does not hold."""
        hosts = {}
        for name, (low, high, dtype) in self.inputs.items():
            if name not in feeds:
                raise ConfigError(f"{self.path.name}: input {name} is missing")
            host = np.ascontiguousarray(feeds[name], dtype=dtype)
            fits = host.ndim == len(low) and all(lo <= n <= hi for lo, n, hi in zip(low, host.shape, high, strict=True))
            if not fits:
                raise ConfigError(
                    f"{self.path.name}: input {name} has shape {host.shape}; this plan holds {low} to {high}"
                )
            if not self.context.set_input_shape(name, host.shape):
                raise BundleError(f"{self.path.name}: TensorRT refuses input {name} at shape {host.shape}")
            hosts[name] = host
        return hosts

    def copy(self, dst, src, nbytes: int, kind) -> None:
        checked(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream))

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise BundleError(f"{self.path.name}: TensorRT execution failed (see its log above)")

    def capture(self):
        """Run once at the current shapes while capturing that run as a CUDA graph; the instantiated graph, or None
        when this network cannot be captured (the run's outputs are then computed by an eager run instead).

        TensorRT's own rule: after a shape change, enqueue once outside a capture (TensorRT updates shape-dependent
        state then), and only then capture. ``launch`` calls this only on the second run of a shape."""
        cudart = self.cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        checked(cudart.cudaStreamBeginCapture(self.stream, mode))
        captured = self.context.execute_async_v3(self.stream)
        error, graph = cudart.cudaStreamEndCapture(self.stream)  # ends the capture whatever happened inside it
        if not captured or int(error) != 0:
            if int(error) == 0:
                checked(cudart.cudaGraphDestroy(graph))
            self.execute()  # not capturable (e.g. loops or conditionals): compute this call eagerly
            return None
        try:
            instance = checked(cudart.cudaGraphInstantiate(graph, 0))
        finally:
            checked(cudart.cudaGraphDestroy(graph))
        checked(cudart.cudaGraphLaunch(instance, self.stream))
        return instance

    def drop_graph(self) -> None:
        if self.graph is not None:
            checked(self.cudart.cudaGraphExecDestroy(self.graph))
        self.graph = None

    def launch(self, shapes: tuple) -> None:
        """Enqueue the network. With CUDA graphs: the first run of a shape is eager (it updates TensorRT's
        shape-dependent state), the second is captured, later ones replay the graph; a shape change drops it."""
        if not self.use_cuda_graph:
            self.execute()
        elif shapes != self.graph_shapes:
            self.drop_graph()
            self.graph_shapes = shapes
            self.execute()
        elif self.graph is None:
            self.graph = self.capture()
            self.use_cuda_graph = self.graph is not None  # a network that cannot be captured runs eagerly from now on
        else:
            checked(self.cudart.cudaGraphLaunch(self.graph, self.stream))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.context is None:
            raise ConfigError(f"{self.path.name}: this engine is closed")
        to_device = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = self.set_shapes(feeds)
        for name, host in hosts.items():
            self.copy(self.buffers[name], host.ctypes.data, host.nbytes, to_device)
        self.launch(tuple(host.shape for host in hosts.values()))
        results = {
            name: np.empty(tuple(self.context.get_tensor_shape(name)), dtype) for name, dtype in self.outputs.items()
        }
        for name, host in results.items():
            self.copy(host.ctypes.data, self.buffers[name], host.nbytes, to_host)
        checked(self.cudart.cudaStreamSynchronize(self.stream))
        return results


class TensorRTBackend:
    """The bundle's plans for this GPU and TensorRT version; calls are serialised (buffers are shared)."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, bundle: Bundle, use_cuda_graph: bool = True):
        import_tensorrt()  # first: a missing TensorRT is its one line naming the extra, not a ModuleNotFoundError
        import tensorrt as trt

        self.bundle = bundle
        self.suffix = (trt.__version__, current_gpu_name())
        self.use_cuda_graph = use_cuda_graph
        self.engines: dict[str, Engine] = {}
        self.lock = threading.Lock()

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            if engine not in self.engines:
                name, plan = manifest_plan(self.bundle, engine, *self.suffix)
                path = self.bundle.file_path(f"{name}.file", plan.file)
                self.engines[engine] = Engine(path, use_cuda_graph=self.use_cuda_graph and engine == UNET)
            return self.engines[engine].infer(feeds)

    def close(self) -> None:
        """Free every loaded plan's GPU memory."""
        with self.lock:
            for engine in self.engines.values():
                engine.close()
            self.engines.clear()
