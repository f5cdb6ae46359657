"""Backends: one small protocol, ``run(engine_name, feeds) -> outputs``, over numpy arrays.

The pipeline (``runtime.pipeline``) calls the five engines of a bundle only through this protocol, so the
same data flow runs on:
- ``onnxruntime`` (default): the bundle's ONNX files on the CPU, CUDA or TensorRT execution provider
  (``--device cpu|cuda|tensorrt``), with IO binding on the GPU, or on OpenVINO (``--device openvino``, Intel's
  CPU runtime, in the ``onnxruntime-openvino`` build of ONNX Runtime), which runs the UNet and the VAE in bfloat16
  where the CPU has AMX, like the TensorRT provider's fp16 (with AVX512-BF16 alone, bf16 was slower than f32: an
  SD 1.5 UNet step at 256x256 took 2.1-2.4 s against 1.35-2.0 s on an Emerald Rapids VM without AMX). An int8
  bundle sends only its autoencoder there (``AUTOENCODER``), its other engines staying on ONNX Runtime's own CPU
  kernels: OpenVINO ran the int8 SD 1.5 UNet 2.9x slower and the fp32 TAESD decoder 4.6x faster in bf16 (512x512, 2
  cores with AMX), and its copy of the text encoder's weights added 450 MB to the peak for at most 0.07 s;
- ``tensorrt``: the bundle's native fp16 plans (``runtime.tensorrt.Engine``, imported lazily);
- plug-ins: other packages add backends under the ``audiotoken_rt.backends`` entry-point group (a name ->
  a factory ``(bundle, device) -> Backend``). The PyTorch side registers ``torch`` there (``export.torch_backend``,
  the networks the bundle was exported from, for A/B checks), so this leaf module names nothing outside the
  runtime, and a runtime-only install says in one line what ``--backend torch`` needs.
``backend_ready`` says, before a bundle is read, whether a backend can start on a device here, or in one line which
extra to install (``gpu``, ``trt``): ``Pipeline.open``, ``bench`` and ``doctor`` ask it, so a missing library reads
the same everywhere. Every file a backend opens comes from the manifest through ``Bundle.engine_path`` /
``Bundle.file_path``: inside the bundle, and the file that was checked when the bundle opened.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from runtime.bundle import Bundle, user_cache_dir
from runtime.contract import UNET, VAE_DECODER, VAE_ENCODER
from runtime.errors import BundleError, ConfigError, first_line, needs_pytorch_side

BUILTIN_BACKENDS = ("onnxruntime", "tensorrt")
PLUGIN_GROUP = "audiotoken_rt.backends"  # entry points: backend name -> factory(bundle, device)
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}  # --device -> ONNX Runtime execution provider
DEVICES = tuple(PROVIDERS)
GPU_DEVICES = ("cuda", "tensorrt")  # the others run on the host: plain session.run, no IO binding
INSTALL_HINTS = {
    **dict.fromkeys(
        GPU_DEVICES, "pip install 'audiotoken-rt[gpu]' (onnxruntime-gpu) on an NVIDIA machine, or use --device cpu"
    ),
    "openvino": "swap ONNX Runtime for its OpenVINO build: pip uninstall -y onnxruntime && pip install onnxruntime-openvino",
}
BF16_ENGINES = (UNET, VAE_DECODER, VAE_ENCODER)  # on OpenVINO; the audio and text encoders, run once, stay fp32
AUTOENCODER = (VAE_DECODER, VAE_ENCODER)  # what of an int8 bundle runs on OpenVINO (with --device openvino)
# The shared libraries each GPU provider of onnxruntime-gpu (CUDA 12 builds, Linux) loads; when a provider cannot
# start, ONNX Runtime falls back to the next one with only a log line, so the backend names the ones missing.
PROVIDER_LIBRARIES = {
    "cuda": (
        "libcudart.so.12",
        "libcublas.so.12",
        "libcublasLt.so.12",
        "libnvrtc.so.12",
        "libcufft.so.11",
        "libcurand.so.10",
        "libcudnn.so.9",
    ),
    "tensorrt": ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"),  # onnxruntime-gpu's TensorRT
}
TRT_PROVIDER_LIMIT = 2 << 30  # bytes: the TensorRT provider hands the model to TensorRT as one protobuf (2 GB at most)


class Backend(Protocol):
    """What the pipeline needs from an engine runner."""

    name: str
    device: str

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one engine on named inputs; return its named outputs as host arrays."""


class OnnxRuntimeBackend:
    """ONNX Runtime sessions over a bundle's ONNX files, created on first use, one per engine."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None):
        int8 = [name for name, engine in bundle.manifest.engines.items() if engine.precision == "int8"]
        if (
            int8 and device in GPU_DEVICES
        ):  # built for ONNX Runtime's CPU kernels (MatMulInteger has no fast GPU kernel)
            raise ConfigError(  # first: no install makes this bundle run there
                f"{bundle.root}: its int8 engines ({', '.join(int8)}) are for ONNX Runtime's CPU provider; "
                f"they cannot run on --device {device}",
                hint="use --device cpu (or openvino) with it; export --precision fp16 for the GPU",
            )
        backend_ready(self.name, device)
        self.bundle = bundle
        self.device = device
        self.bf16 = device == "openvino" and cpu_has_amx()
        # on ONNX Runtime's CPU provider whatever the host device: an int8 bundle's engines but its autoencoder
        self.cpu_engines = {name for name in bundle.manifest.engines if name not in AUTOENCODER} if int8 else set()
        self.threads = threads
        self.sessions: dict[str, ort.InferenceSession] = {}
        self.lock = threading.Lock()

    def provider_chain(self, engine: str) -> list:
        """Execution providers for ``engine`` in order of preference, each falling back to the next for unsupported nodes."""
        chain: list = ["CPUExecutionProvider"]
        device = self.device
        if device == "openvino" and engine not in self.cpu_engines:
            hint = "bf16" if self.bf16 and engine in BF16_ENGINES else "f32"
            chain.insert(
                0,
                (
                    "OpenVINOExecutionProvider",
                    {
                        "device_type": "CPU",
                        "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}}),
                    },
                ),
            )
        if device in GPU_DEVICES:
            chain.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
        if device == "tensorrt":
            cache = tensorrt_provider_cache(self.bundle)
            chain.insert(
                0,
                (
                    "TensorrtExecutionProvider",
                    {
                        # No fp16 flag: the ONNX file carries its precisions (an fp16 bundle's UNet and VAE in fp16 with
                        # fp32 islands, its audio and text encoders fp32), and without the flag ONNX Runtime >= 1.22
                        # builds TensorRT networks strongly typed, keeping them. The flag would let TensorRT lower
                        # every layer to fp16, the fbank's 1e13 frame power included.
                        "trt_fp16_enable": False,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(cache),
                    },
                ),
            )
        return chain

    def check_provider_limits(self, engine: str) -> None:
        """Refuse, in one line, an engine the TensorRT provider cannot take (an fp32 UNet of SD 1.5 is 3.4 GB)."""
        entry = self.bundle.manifest.engines[engine]
        size = sum(f.size for f in (entry.graph_for(self.device), entry.data) if f is not None)
        if self.device == "tensorrt" and size > TRT_PROVIDER_LIMIT:
            raise ConfigError(
                f"{self.bundle.root}: engine {engine} is {size / 2**30:.1f} GB ({entry.precision}); ONNX Runtime's "
                "TensorRT provider takes models up to 2 GB",
                hint="export --precision fp16 for the GPU (half the size), or use --device cuda or --backend tensorrt",
            )

    def check_provider(self, session: ort.InferenceSession, engine: str) -> None:
        """Refuse a session on which ONNX Runtime silently fell back to another provider, naming what is missing."""
        wanted = PROVIDERS["cpu" if engine in self.cpu_engines else self.device]
        if wanted in session.get_providers():
            return
        missing = missing_libraries(self.device)
        because = f": {', '.join(missing)} not found" if missing else " (see ONNX Runtime's log for the cause)"
        raise ConfigError(
            f"ONNX Runtime could not start its {wanted} for engine {engine}{because}; it would have run on "
            f"{', '.join(session.get_providers())}",
            hint=INSTALL_HINTS[self.device] if missing else "check the driver with nvidia-smi",
        )

    def session_options(self, engine: str) -> ort.SessionOptions:
        """Full graph optimisation; only the UNet, run every step, keeps a memory arena between runs; on the host, no
        memory pattern.

        An arena holds on to the largest activations it ever served; for the engines that run once per
        picture (the VAE decoder's are hundreds of MB) that memory would only raise the process's peak.
        A memory pattern (ONNX Runtime plans one block for all of a run's activations from the first run, and
        takes it from the arena from the second on) added 275-300 MB to the peak of a one-step 512x512 picture
        (SD 1.5 or BK-SDM-Tiny UNet in int8, TAESD) on the CPU and saved no measurable time; without the UNet's
        arena the peak drops by another 200 MB, but its step takes 10% longer (docs/performance.md).
        """
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = engine == UNET
        options.enable_mem_pattern = self.device in GPU_DEVICES
        if self.threads:
            options.intra_op_num_threads = self.threads
        return options

    def session(self, engine: str) -> ort.InferenceSession:
        with self.lock:  # sessions are created once; running them is thread-safe in ONNX Runtime
            if engine not in self.sessions:
                path = self.bundle.engine_path(engine, self.device)
                self.check_provider_limits(engine)
                try:
                    session = ort.InferenceSession(
                        str(path), self.session_options(engine), providers=self.provider_chain(engine)
                    )
                except Exception as exc:  # ORT raises its own exception types for unreadable models
                    raise BundleError(
                        f"{path}: ONNX Runtime cannot load it ({first_line(exc)})", hint="re-export the bundle"
                    ) from exc
                self.check_provider(session, engine)
                self.sessions[engine] = session
            return self.sessions[engine]

    def run(self, engine: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(engine)
        names = [o.name for o in session.get_outputs()]
        try:
            if self.device not in GPU_DEVICES:
                return dict(zip(names, session.run(names, feeds), strict=True))
            binding = session.io_binding()  # inputs copied to the GPU once, outputs allocated there
            for key, value in feeds.items():
                binding.bind_cpu_input(key, np.ascontiguousarray(value))
            for name in names:
                binding.bind_output(name, "cuda")
            session.run_with_iobinding(binding)
            return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))
        except Exception as exc:  # ORT raises its own types (Fail, RuntimeException, out of memory)
            raise BundleError(
                f"{self.bundle.root}: ONNX Runtime failed running engine {engine} on {self.device} ({first_line(exc)})",
                hint="check free memory; `audiotoken-rt info` checks the bundle",
            ) from exc


def tensorrt_provider_cache(bundle: Bundle) -> Path:
    """Where the TensorRT provider keeps its engines and timing cache for ``bundle``: the per-user cache (a bundle
    folder may be read-only, and its files are hashed), by ONNX Runtime version (its TensorRT) and bundle key; the
    provider's own file names hold only a hash and the GPU's compute capability."""
    return user_cache_dir() / "onnxruntime-tensorrt" / ort.__version__ / bundle.manifest.key


def missing_libraries(device: str) -> list[str]:
    """The shared libraries of ``device``'s provider that cannot be loaded here (Linux names), after ONNX Runtime's
    own preloading of the CUDA libraries pip installs (nvidia-* wheels), so those count as found."""
    import ctypes

    preload = getattr(ort, "preload_dlls", None)  # ONNX Runtime >= 1.21
    if preload is not None:
        try:
            preload()
        except Exception:  # a failed preload is what is being diagnosed: probe below
            pass
    missing = []
    for library in PROVIDER_LIBRARIES.get(device, ()):
        try:
            ctypes.CDLL(library)
        except OSError:
            missing.append(library)
    return missing


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX's bfloat16 tiles (Linux flag amx_bf16), where OpenVINO runs bf16; else it stays fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags.split()


def plugin_backends() -> dict:
    """The backends other packages register (entry points of ``PLUGIN_GROUP``), by name; not yet imported."""
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def backend_names() -> tuple[str, ...]:
    """Every backend this install knows: the built-in ones, then the plug-ins."""
    return (*BUILTIN_BACKENDS, *sorted(set(plugin_backends()) - set(BUILTIN_BACKENDS)))


def plugin_factory(backend: str):
    """The factory ``(bundle, device) -> Backend`` of plug-in ``backend``, imported (once per process)."""
    plugins = plugin_backends()
    if backend not in plugins:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")
    try:
        return plugins[backend].load()
    except ImportError as exc:
        raise needs_pytorch_side(f"--backend {backend}", exc) from exc


def backend_ready(backend: str, device: str) -> str:
    """Whether ``backend`` can start on ``device`` on this machine, asked before any bundle or work: a line saying
    what was found, or the one-line ConfigError naming what to install (the ``gpu`` extra for ONNX Runtime's CUDA
    and TensorRT providers, the ``trt`` extra for the native TensorRT backend, the PyTorch side for ``torch``).
    ``Pipeline.open``, ``bench`` and ``doctor`` all ask it, so a missing library reads the same in every command."""
    if backend == "onnxruntime":
        if device not in PROVIDERS:
            raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        available = ort.get_available_providers()
        if PROVIDERS[device] not in available:
            raise ConfigError(
                f"ONNX Runtime here has no {PROVIDERS[device]} (available: {', '.join(available)})",
                hint=INSTALL_HINTS[device],
            )
        return f"ONNX Runtime lists {PROVIDERS[device]}"
    if backend == "tensorrt":
        from runtime.tensorrt import import_tensorrt

        import_tensorrt()
        return "TensorRT and cuda-python import"
    plugin_factory(backend)
    return f"the {backend} plug-in imports (its device is checked when the bundle opens)"


def open_backend(bundle: Bundle, backend: str = "onnxruntime", device: str = "cpu") -> Backend:
    """The backend named ``backend`` over ``bundle``, once ``backend_ready`` says it can start here; heavy backends
    are imported only when asked for."""
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(bundle, device)  # it asks backend_ready itself (it is made directly too)
    if backend == "tensorrt":
        from runtime.tensorrt import TensorRTBackend

        backend_ready(backend, device)
        return TensorRTBackend(bundle)
    return plugin_factory(backend)(bundle, device)
