"""The native TensorRT backend: a bundle's fp16 plans run with the TensorRT 10 Python API and cuda-python.

One ``Engine`` class per plan (load, allocate static device buffers, infer, optional CUDA graph), and
``TensorRTBackend`` mapping engine names to plans for the pipeline. TensorRT and cuda-python come from
NVIDIA's own index and exist only on NVIDIA machines (the ``trt`` extra), so this module imports them
inside functions, and nothing else in the runtime imports this module unless ``--backend tensorrt`` is asked.

A plan is tied to the TensorRT version and the GPU it was built on: ``<engine>.<trt version>.<gpu slug>.plan``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from runtime.errors import BundleError, ConfigError

TRT_HINT = (
    "pip install 'audiotoken-rt[trt]' on an NVIDIA machine (TensorRT 10 and cuda-python), or use --backend onnxruntime"
)


def gpu_slug(name: str) -> str:
    """A GPU name as a file-name part: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def plan_name(engine: str, trt_version: str, gpu_name: str) -> str:
    return f"{engine}.{trt_version}.{gpu_slug(gpu_name)}.plan"


def import_tensorrt():
    """(tensorrt, cudart) or a ConfigError saying how to get them."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError("TensorRT is not installed here", hint=TRT_HINT) from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise ConfigError("cuda-python is not installed here", hint=TRT_HINT) from exc
    return trt, cudart


def checked(result):
    """cuda-python returns (error, *values): raise on error, return the values."""
    error, *values = result
    if int(error) != 0:
        raise BundleError(f"CUDA call failed: {error}", hint="check the GPU with nvidia-smi")
    return values[0] if len(values) == 1 else values


def current_gpu_name() -> str:
    _, cudart = import_tensorrt()
    name = checked(cudart.cudaGetDeviceProperties(0)).name
    return name.decode() if isinstance(name, bytes) else str(name)


class Engine:
    """One TensorRT plan with static shapes: device buffers are allocated once and reused by every call."""

    def __init__(self, path: Path, use_cuda_graph: bool = False):
        trt, self.cudart = import_tensorrt()
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BundleError(
                f"{path}: TensorRT cannot deserialize this plan",
                hint="rebuild it on this machine: audiotoken-rt export ... --tensorrt",
            )
        self.context = self.engine.create_execution_context()
        self.stream = checked(self.cudart.cudaStreamCreate())
        self.inputs, self.outputs, self.buffers = {}, {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[name] = (shape, dtype)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.buffers[name] = checked(self.cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, int(self.buffers[name]))
        self.use_cuda_graph = use_cuda_graph
        self.graph = None

    def copy(self, dst, src, nbytes: int, kind) -> None:
        checked(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream))

    def launch(self) -> None:
        """Enqueue the network; with CUDA graphs, capture it on the first call and replay it afterwards."""
        if not self.use_cuda_graph:
            if not self.context.execute_async_v3(self.stream):
                raise BundleError("TensorRT execution failed")
            return
        if self.graph is None:
            self.context.execute_async_v3(self.stream)  # a warm-up run lets TensorRT finish lazy set-up first
            mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
            checked(self.cudart.cudaStreamBeginCapture(self.stream, mode))
            self.context.execute_async_v3(self.stream)
            graph = checked(self.cudart.cudaStreamEndCapture(self.stream))
            self.graph = checked(self.cudart.cudaGraphInstantiate(graph, 0))
        checked(self.cudart.cudaGraphLaunch(self.graph, self.stream))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        to_device = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (shape, dtype) in self.inputs.items():
            host = np.ascontiguousarray(feeds[name], dtype=dtype)
            if host.shape != shape:
                raise ConfigError(f"input {name} has shape {host.shape}; this plan was built for {shape}")
            self.copy(self.buffers[name], host.ctypes.data, host.nbytes, to_device)
        self.launch()
        results = {name: np.empty(shape, dtype) for name, (shape, dtype) in self.outputs.items()}
        for name, host in results.items():
            self.copy(host.ctypes.data, self.buffers[name], host.nbytes, to_host)
        checked(self.cudart.cudaStreamSynchronize(self.stream))
        return results


class TensorRTBackend:
    """The bundle's plans for this GPU and TensorRT version; calls are serialised (buffers are shared)."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, bundle, use_cuda_graph: bool = True):
        trt, _ = import_tensorrt()
        self.bundle = bundle
        self.suffix = (trt.__version__, current_gpu_name())
        self.use_cuda_graph = use_cuda_graph
        self.engines: dict[str, Engine] = {}
        self.lock = threading.Lock()

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            if engine not in self.engines:
                path = self.bundle.root / plan_name(engine, *self.suffix)
                if not path.is_file():
                    raise BundleError(
                        f"{self.bundle.root}: no TensorRT plan {path.name} for this GPU and TensorRT version",
                        hint=f"build it here: audiotoken-rt export ... --out {self.bundle.root} --tensorrt",
                    )
                self.engines[engine] = Engine(path, use_cuda_graph=self.use_cuda_graph and engine == "unet")
            return self.engines[engine].infer(feeds)
