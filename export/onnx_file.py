"""PyTorch module -> ONNX graph -> ``<engine>.onnx`` + ``<engine>.onnx.data`` in a bundle, checked.

Place in the data flow: ``export.builder`` hands each ``Network``'s wrapper module and sample here:
``trace_to_onnx`` runs torch.onnx's TorchScript exporter (``dynamo=False``, opset 17, static shapes) into a
scratch folder and loads the result with its types inferred -> (``export.fp16`` for fp16 bundles) ->
``save_onnx`` writes the bundle file and runs onnx.checker on the path (which works past 2 GB).

Weights always go to one external data file per engine, not only past protobuf's 2 GB: ONNX Runtime maps an
external file and reads only the pages it uses, while weights inside the ``.onnx`` stay resident twice (the
parsed protobuf and the tensors). Measured on the SD 1.5-size text encoder: 656 MB resident in-file, 340 MB
external (its 152 MB token table is mostly never touched).

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
from runtime.contract import DYNAMIC
from runtime.errors import ExportError, first_line

OPSET = 17  # LayerNormalization as one op (TensorRT maps it to its normalization layer)


def trace_to_onnx(
    module: nn.Module, args: tuple[torch.Tensor, ...], network: Network, scratch: Path
) -> onnx.ModelProto:
    """Export ``module`` on ``args`` and return the ONNX model (weights in memory, value types inferred)."""
    scratch.mkdir(parents=True)
    raw, typed = scratch / "traced.onnx", scratch / "typed.onnx"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(
                module,
                args,
                str(raw),
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=[t.name for t in network.inputs],
                output_names=[t.name for t in network.outputs],
                dynamic_axes={  # an open batch axis (a UNet holding batches 1 and 2): DYNAMIC in the contract
                    t.name: {axis: "batch" for axis, size in enumerate(t.shape) if size == DYNAMIC}
                    for t in (*network.inputs, *network.outputs)
                    if DYNAMIC in t.shape
                }
                or None,
            )
        # the path-based inference reads past 2 GB, where the tracer spreads weights over one file per tensor
        onnx.shape_inference.infer_shapes_path(str(raw), str(typed))
        return onnx.load(str(typed))
    except (RuntimeError, ValueError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"{network.name}: torch.onnx could not export it ({type(exc).__name__}: {first_line(exc)})",
            hint="check the installed torch, diffusers and transformers versions against pyproject.toml",
        ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def constants_to_initializers(model: onnx.ModelProto, min_bytes: int = 1024) -> None:
    """Turn large Constant nodes (the tracer's folded tensors: fbank kernel, position biases) into initializers,
    so that their bytes go to the external data file with the weights."""
    kept = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and len(value.raw_data) >= min_bytes:
            value.name = node.output[0]
            model.graph.initializer.append(value)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def save_onnx(model: onnx.ModelProto, folder: Path, name: str) -> tuple[str, str]:
    """Write ``folder/<name>.onnx`` and its weights ``<name>.onnx.data``, check them; return the two file names."""
    path, data = folder / f"{name}.onnx", f"{name}.onnx.data"
    constants_to_initializers(model)
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024
    )
    (folder / data).chmod(0o644)  # onnx creates it private, unlike the .onnx beside it
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"{path}: onnx.checker refuses it ({first_line(exc)})",
            hint="report it with the versions of torch and onnx",
        ) from exc
    return path.name, data
