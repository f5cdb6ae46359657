"""PyTorch module -> ONNX graph -> ``<engine>.onnx`` in a bundle (one external data file past 2 GB), checked.

Place in the data flow: ``export.builder`` hands each ``Network``'s wrapper module and sample here:
``trace_to_onnx`` runs torch.onnx's TorchScript exporter (``dynamo=False``, opset 17, static shapes) into a
scratch folder and loads the result with its types inferred -> (``export.fp16`` for fp16 bundles) ->
``save_onnx`` writes the bundle file and runs onnx.checker on the path (which works past 2 GB).

Why the TorchScript exporter: the dynamo exporter needs the onnxscript package and re-traces diffusers' UNet
through torch.export; the TorchScript tracer handles these static-shape networks (SDPA, GroupNorm, the
fbank's strided Conv1d) with opset 17 LayerNormalization and is what TensorRT's own diffusion demo used.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.networks import Network
from runtime.errors import ExportError

OPSET = 17  # LayerNormalization as one op (TensorRT maps it to its normalization layer)
PROTOBUF_LIMIT = 2**31 - 1  # one serialized ModelProto cannot exceed 2 GiB
GRAPH_HEADROOM = 64 << 20  # bytes left for nodes and names when deciding whether weights fit inside the file


def trace_to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], network: Network, scratch: Path) -> onnx.ModelProto:
    """Export ``module`` on ``args`` and return the ONNX model (weights in memory, value types inferred)."""
    scratch.mkdir(parents=True)
    raw, typed = scratch / "traced.onnx", scratch / "typed.onnx"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(
                module, args, str(raw), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                input_names=[t.name for t in network.inputs], output_names=[t.name for t in network.outputs],
            )
        # the path-based inference reads past 2 GB, where the tracer spreads weights over one file per tensor
        onnx.shape_inference.infer_shapes_path(str(raw), str(typed))
        return onnx.load(str(typed))
    except (RuntimeError, ValueError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{network.name}: torch.onnx could not export it ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                          hint="check the installed torch, diffusers and transformers versions against pyproject.toml") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of initializers and Constant tensors: what decides whether the file fits in one protobuf."""
    constants = [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(len(t.raw_data) for t in [*model.graph.initializer, *constants])


def save_onnx(model: onnx.ModelProto, folder: Path, name: str) -> tuple[str, str | None]:
    """Write ``folder/<name>.onnx`` (+ ``<name>.onnx.data`` when over 2 GB), check it; return the file names."""
    path = folder / f"{name}.onnx"
    data = None
    if weight_bytes(model) > PROTOBUF_LIMIT - GRAPH_HEADROOM:
        data = f"{name}.onnx.data"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
        (folder / data).chmod(0o644)  # onnx creates it private, unlike the .onnx beside it
    else:
        onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker refuses it ({str(exc).splitlines()[0]})",
                          hint="report it with the versions of torch and onnx") from exc
    return path.name, data
