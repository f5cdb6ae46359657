"""fp16 TensorRT plans from a bundle's ONNX files (``export --tensorrt``), with the TensorRT 10 Python API.

Place in the data flow: ``export.builder`` calls ``build_plan`` per engine once the ONNX files are written and
validated -> ``<engine>.<trt version>.<gpu slug>.plan`` beside them (named by ``runtime.tensorrt.plan_name``)
-> the runtime's TensorRT backend. The plan is then run on the engine's sample with the runtime's own
``Engine`` class and compared with PyTorch like the ONNX file was.

Build: ONNX parser into an explicit-batch network (the only kind in TensorRT 10, hence ``create_network(0)``),
a static optimization profile at the bundle's shapes, BuilderFlag.FP16, the fp32 islands of the network
description (the fbank, LayerNorm, ...) pinned to fp32 under OBEY_PRECISION_CONSTRAINTS, and a timing cache per
TensorRT version and GPU kept in ~/.cache/audiotoken-rt/tensorrt so rebuilds skip the kernel timing.
TensorRT exists only on NVIDIA machines: it is imported inside the functions, via ``runtime.tensorrt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from export.fp16 import fp32_nodes
from export.networks import Network
from export.parity import TOLERANCE, compare
from runtime.atomic import write_atomically
from runtime.bundle import FileEntry, Parity, Plan, user_cache_dir
from runtime.contract import GUIDED_BATCH, SINGLE_BATCH
from runtime.errors import ConfigError, ExportError
from runtime.tensorrt import Engine, current_gpu_name, gpu_slug, import_tensorrt, plan_name

WORKSPACE_BYTES = 8 << 30  # scratch memory TensorRT may use for a layer's tactics (the UNet's attention)


def require_tensorrt() -> None:
    """Fail before a long export when ``--tensorrt`` cannot be honoured here."""
    try:
        import_tensorrt()
    except ConfigError as exc:
        raise ExportError(
            f"--tensorrt: {exc}",
            hint="pip install 'audiotoken-rt[trt]' on an NVIDIA machine (TensorRT 10, cuda-python), "
            "or export without --tensorrt",
        ) from exc


def timing_cache_path(trt_version: str, gpu: str) -> Path:
    root = user_cache_dir() / "tensorrt"
    return root / f"timing.{trt_version}.{gpu_slug(gpu)}.cache"


def plan_file(network: Network) -> str:
    """The plan's file name for this TensorRT version and GPU."""
    trt, _ = import_tensorrt()
    return plan_name(network.name, trt.__version__, current_gpu_name())


def pin_fp32(trt, network_definition, onnx_path: Path, network: Network) -> int:
    """Pin the layers of the network's fp32 islands to fp32; return how many were pinned."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = {graph.node[i].name for i in fp32_nodes(graph, network.fp32_scopes, network.fp32_ops)}
    pinned = 0
    for i in range(network_definition.num_layers):
        layer = network_definition.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        floating = all(t.dtype in (trt.float32, trt.float16) for t in outputs)
        if floating and (layer.name in names or layer.name.startswith(network.fp32_scopes)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build_plan(
    onnx_path: Path, network: Network, inputs: tuple[np.ndarray, ...], references: tuple[np.ndarray, ...]
) -> Plan:
    """Build, write and validate ``<engine>.<trt>.<gpu>.plan`` beside ``onnx_path``."""
    trt, _ = import_tensorrt()
    gpu = current_gpu_name()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    definition = builder.create_network(0)
    parser = trt.OnnxParser(definition, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the path, so external data is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"{onnx_path.name}: TensorRT's ONNX parser refuses it ({errors})",
            hint="report it with the TensorRT version",
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    if pin_fp32(trt, definition, onnx_path, network):
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for spec in network.inputs:
        # static: min = opt = max; an open batch axis (a UNet holding batches 1 and 2) spans 1 to 2, tuned for 2
        profile.set_shape(
            spec.name, spec.at_batch(SINGLE_BATCH), spec.at_batch(GUIDED_BATCH), spec.at_batch(GUIDED_BATCH)
        )
    config.add_optimization_profile(profile)
    cache_path = timing_cache_path(trt.__version__, gpu)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)  # False: refuse a cache from another GPU or version

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

    engine = Engine(path)
    results = engine.infer({spec.name: value for spec, value in zip(network.inputs, inputs, strict=True)})
    outputs = [results[spec.name] for spec in network.outputs]
    parity = Parity(
        f"tensorrt {trt.__version__} {gpu}",
        network.sample_note,
        TOLERANCE["fp16"],
        compare(network, outputs, references),
    )
    return Plan(FileEntry.of(onnx_path.parent, name), trt.__version__, gpu, parity)
