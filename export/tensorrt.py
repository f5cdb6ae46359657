"""TensorRT plans from a bundle's ONNX files (``export --tensorrt``), built strongly typed (TensorRT 10 and 11).

Place in the data flow: ``export.builder`` calls ``build_plan`` per engine once the ONNX files are written and
validated -> ``<engine>.<trt version>.<gpu slug>.plan`` beside them (named by ``runtime.tensorrt.plan_name``),
recorded in the manifest with its sha256, TensorRT version and GPU -> the runtime's TensorRT backend, which loads
only the plans the manifest records (``runtime.tensorrt.manifest_plan``). The plan is then run on the engine's
sample with the runtime's own ``Engine`` class and compared with PyTorch like the ONNX file was.

Build, the way TensorRT wants it since 10.12 (and only way in 11, which removed ``BuilderFlag.FP16``,
``OBEY_PRECISION_CONSTRAINTS``, ``ILayer.precision`` and ``set_output_type``): the ONNX parser into a *strongly
typed* network, so every tensor keeps the type the ONNX file gives it. The precisions are therefore decided at
export, in one place: an fp16 bundle's graph is already fp16 with its fp32 islands (``export.fp16``: the fbank,
LayerNorm, the timestep embedding), an fp32 bundle's is fp32 and builds an fp32 plan (TF32 off, so it meets the
fp32 tolerance). No builder precision flags, no per-layer pinning. The optimization profile spans the batch sizes
the bundle holds (1 to 2 for an open UNet batch axis, tuned for 2); a timing cache per TensorRT version and GPU
lives in ~/.cache/audiotoken-rt/tensorrt so rebuilds skip the kernel timing.

TensorRT exists only on NVIDIA machines: it is imported inside the functions. This module and
``runtime.tensorrt`` are type-checked against the published TensorRT stubs by ``just lint`` (pyright), and
``tests/test_gpu_path.py`` checks that no API TensorRT 11 removed is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.networks import Network
from export.parity import TOLERANCE, compare
from runtime.atomic import write_atomically
from runtime.bundle import FileEntry, Parity, Plan, user_cache_dir
from runtime.contract import GUIDED_BATCH, SINGLE_BATCH
from runtime.errors import ConfigError, ExportError
from runtime.tensorrt import TRT_HINT, Engine, current_gpu_name, gpu_slug, import_tensorrt, plan_name, trt_logger

WORKSPACE_BYTES = 8 << 30  # scratch memory TensorRT may use for a layer's tactics (the UNet's attention)
PLAN_PRECISIONS = ("fp16", "fp32")  # int8 bundles are for ONNX Runtime's CPU kernels


def require_tensorrt() -> None:
    """Fail before a long export when ``--tensorrt`` cannot be honoured here."""
    try:
        import_tensorrt()
    except ConfigError as exc:
        raise ExportError(f"--tensorrt: {exc}", hint=f"{TRT_HINT}; or export without --tensorrt") from exc


def timing_cache_path(trt_version: str, gpu: str) -> Path:
    return user_cache_dir() / "tensorrt" / f"timing.{trt_version}.{gpu_slug(gpu)}.cache"


def plan_file(network: Network) -> str:
    """The plan's file name for this TensorRT version and GPU."""
    import tensorrt as trt

    import_tensorrt()
    return plan_name(network.name, trt.__version__, current_gpu_name())


def parse_strongly_typed(builder, onnx_path: Path):
    """The ONNX file as a strongly typed TensorRT network (types from the file), or an ExportError."""
    import tensorrt as trt

    # the flag is required on TensorRT 10 and accepted (strong typing is always on) on 11
    definition = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(definition, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):  # from the path, so external data is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"{onnx_path.name}: TensorRT's ONNX parser refuses it ({errors})",
            hint="report it with the TensorRT version",
        )
    return definition, parser  # the parser owns weights the network refers to: keep it alive until the build


def build_config(builder, network: Network, precision: str, cache_path: Path):
    """Builder settings: workspace, TF32 off for an fp32 plan, the batch profile, the timing cache (and the cache)."""
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 rounds products to 10-bit mantissas: not fp32's tolerance
    profile = builder.create_optimization_profile()
    for spec in network.inputs:
        # static: min = opt = max; an open batch axis (a UNet holding batches 1 and 2) spans 1 to 2, tuned for 2
        profile.set_shape(
            spec.name, spec.at_batch(SINGLE_BATCH), spec.at_batch(GUIDED_BATCH), spec.at_batch(GUIDED_BATCH)
        )
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, False):  # False: refuse a cache from another GPU or version
        cache = config.create_timing_cache(b"")  # that cache is unusable here: time the kernels afresh
        if cache is None or not config.set_timing_cache(cache, False):
            raise ExportError(f"TensorRT refuses even an empty timing cache ({cache_path})", hint=TRT_HINT)
    return config, cache


def build_plan(
    onnx_path: Path,
    network: Network,
    precision: str,
    inputs: tuple[np.ndarray, ...],
    references: tuple[np.ndarray, ...],
) -> Plan:
    """Build, write and validate ``<engine>.<trt>.<gpu>.plan`` beside ``onnx_path`` (an fp16 or fp32 graph)."""
    import tensorrt as trt

    import_tensorrt()
    if precision not in PLAN_PRECISIONS:
        raise ConfigError(
            f"{network.name}: TensorRT plans are built from fp16 or fp32 graphs, this one is {precision}",
            hint="export --precision fp16 --tensorrt for the GPU, in another --out",
        )
    gpu = current_gpu_name()
    builder = trt.Builder(trt_logger())
    definition, _parser = parse_strongly_typed(builder, onnx_path)
    cache_path = timing_cache_path(trt.__version__, gpu)
    config, cache = build_config(builder, network, precision, cache_path)
    serialized = builder.build_serialized_network(definition, config)
    if serialized is None:
        raise ExportError(
            f"{network.name}: TensorRT could not build a plan (see its log above)",
            hint="check free GPU memory; a smaller --height/--width needs less",
        )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(cache_path, memoryview(cache.serialize()))  # other exports may read it meanwhile
    name = plan_file(network)
    path = write_atomically(onnx_path.parent / name, memoryview(serialized))

    with Engine(path) as engine:
        results = engine.infer({spec.name: value for spec, value in zip(network.inputs, inputs, strict=True)})
    outputs = [results[spec.name] for spec in network.outputs]
    parity = Parity(
        f"tensorrt {trt.__version__} {gpu}",
        network.sample_note,
        TOLERANCE[precision],
        compare(network, outputs, references),
    )
    return Plan(FileEntry.of(onnx_path.parent, name), trt.__version__, gpu, parity)
