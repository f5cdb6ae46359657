"""fp32 ONNX graph -> int8 linear layers and convolutions, for CPUs (``--precision int8``); I/O stays fp32.

Place in the data flow: ``export.onnx_file.trace_to_onnx`` (fp32, value types inferred) -> ``to_int8`` (for
the networks marked ``int8``: the UNet and the audio encoder) or ``to_calibrated_int8`` (TAESD's decoder) ->
``export.onnx_file.save_onnx``.

Scheme (dynamic quantization: no calibration data): weights int8, symmetric, one scale per output channel;
activations uint8, one scale and zero point per call, from that call's min and max (``DynamicQuantizeLinear``);
products accumulate in int32 and are scaled back to fp32 at once. ONNX Runtime runs them on MLAS's int8 GEMM
(AMX or VNNI where the CPU has them).
- MatMuls with a weight operand (attention projections, feed-forward) go through ONNX Runtime's own dynamic
  quantizer (its fused ``DynamicQuantizeMatMul``). Products of two activations (attention scores) stay fp32;
  so do the Gemms (timestep embedding, per-block time projections: small, on the timestep path), which that
  quantizer rewrites as MatMul + Add for ONNX Runtime to fuse back at load.
- Convolutions (group 1, no dilation) become an int8 im2col GEMM, written here: quantize -> Pad -> NHWC (both
  on the uint8 tensor, a quarter of the bytes) -> one strided Slice per kernel tap -> Concat along channels (none
  for a 1x1 kernel) -> MatMulInteger with the [kh*kw*C, C_out] weight -> scale, bias -> NCHW. ONNX Runtime's own
  dynamic form (``ConvInteger``) runs slower than fp32 (measured 9.3 s against 2.4 s for an SD 1.5-size UNet step
  at 256x256); this one runs 2.8-6x faster than fp32 ``Conv`` on SD 1.5's 3x3 shapes. Zero padding stays exact:
  the quantizer's range always holds 0, whose code is the zero point the Pad writes.
- Node-name prefixes in ``keep`` stay fp32 (the UNet's conv_in, which reads the latents, and conv_out, which
  writes the prediction).

Static quantization (``to_calibrated_int8``, ONNX Runtime's own quantizer in QDQ form): TAESD's decoder, only
convolutions and ReLUs after a clamp of its input to +-3, so its activation ranges are bounded and can be fixed at
export from calibration latents (``export.networks.decoder_calibration``). ONNX Runtime then runs its convolutions
on MLAS's int8 convolution kernels, which the dynamic forms above cannot reach (they need the output's scale before
the call), with uint8 activations from one convolution to the next: 631 -> 296 ms at 512x512 on 2 Sapphire Rapids
cores (fp32 TAESD is a quarter of a one-step picture), 0.5% of the output's scale from fp32. The first and last
convolutions (reading the latents, writing the picture; under 1% of the work) stay fp32.

Why: an fp32 UNet step is bound by fp32 GEMM throughput on a CPU (SD 1.5 at 256x256: 343 GFLOP per batched
step, 65% of it convolutions; ONNX Runtime reaches about 140 GFLOP/s where the best fp32 GEMM on 2 Sapphire
Rapids cores reaches 150-200). On x86 CPUs without VNNI (AVX2 only), uint8 x int8 pair sums can saturate
int16 in MLAS's kernels; see docs/gpus-and-jetson.md.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MATMUL_OPS = ("MatMul",)
# quantized in a calibrated graph: its convolutions, and the ReLUs, sums and upsamplings between them, so activations
# pass from one convolution to the next in uint8 (TAESD at 512x512: 296 against 366 ms, 239 against 356 MB of
# activations at its peak, the same error as convolutions alone)
STATIC_OPS = ("Conv", "Relu", "Add", "Resize")


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quantizable_conv(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    """A 2-D Conv with a constant weight, group 1, no dilation, explicit pads."""
    if node.op_type != "Conv" or node.input[1] not in weights or len(weights[node.input[1]].dims) != 4:
        return False
    a = attributes(node)
    return (
        a.get("group", 1) == 1 and set(a.get("dilations", [1, 1])) == {1} and a.get("auto_pad", b"NOTSET") == b"NOTSET"
    )


def tap_end(kernel: int, offset: int) -> int:
    """Where the Slice of kernel tap ``offset`` ends: ``kernel - 1 - offset`` before the padded input's end."""
    return -(kernel - 1 - offset) if offset < kernel - 1 else int(np.iinfo(np.int64).max)


def im2col(p: str, image: str, columns: str, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[list, list]:
    """Nodes and initializers that gather ``image`` [B, H', W', C] (padded) into ``columns`` [B, H_o, W_o, kh*kw*C]:
    one strided Slice per kernel tap, concatenated along channels in (dy, dx, c) order."""
    (kh, kw), (sy, sx) = kernel, stride
    nodes, inits, taps = [], [], []
    for dy in range(kh):
        for dx in range(kw):
            tap = f"{p}tap{dy}_{dx}"
            names = [f"{tap}_{k}" for k in ("starts", "ends", "axes", "steps")]
            bounds = [[dy, dx], [tap_end(kh, dy), tap_end(kw, dx)], [1, 2], [sy, sx]]
            inits += [
                numpy_helper.from_array(np.array(v, np.int64), name) for name, v in zip(names, bounds, strict=True)
            ]
            nodes.append(helper.make_node("Slice", [image, *names], [tap], name=tap))  # [B, H_o, W_o, C]
            taps.append(tap)
    nodes.append(helper.make_node("Concat", taps, [columns], name=p + "Concat", axis=-1))  # [B, H_o, W_o, kh*kw*C]
    return nodes, inits


def conv_as_int8_gemm(node: onnx.NodeProto, weight: np.ndarray, bias: str | None) -> tuple[list, list]:
    """Nodes and initializers that compute ``node`` (a 2-D Conv, group 1) as a dynamically quantized im2col GEMM.

    No static shape is needed: each tap's Slice ends where its last window ends (``-(k - 1 - d)`` from the end), which
    for any stride gives the Conv's output size, and MatMulInteger multiplies [B, H_o, W_o, K] by [K, C_out] directly.
    """
    a = attributes(node)
    c_out, c_in, kh, kw = weight.shape  # [C_out, C_in, kh, kw]
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    sy, sx = a.get("strides", [1, 1])
    p = f"{node.name}/int8/"
    columns = weight.transpose(2, 3, 1, 0).reshape(
        kh * kw * c_in, c_out
    )  # rows ordered (dy, dx, c), as the Concat below
    w_scale = np.maximum(np.abs(columns).max(axis=0), 1e-12) / 127  # [C_out]
    inits = [
        numpy_helper.from_array(np.round(columns / w_scale).astype(np.int8), p + "weight"),
        numpy_helper.from_array(w_scale.astype(np.float32), p + "weight_scale"),
    ]
    nodes = [
        helper.make_node(
            "DynamicQuantizeLinear", [node.input[0]], [p + "xq", p + "x_scale", p + "x_zero"], name=p + "Quantize"
        ),  # [B, C_in, H, W] uint8
    ]
    x = p + "xq"
    if any((top, left, bottom, right)):
        inits.append(numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), p + "pads"))
        nodes.append(helper.make_node("Pad", [x, p + "pads", p + "x_zero"], [p + "padded"], name=p + "Pad"))
        x = p + "padded"
    nodes.append(
        helper.make_node("Transpose", [x], [p + "xq_nhwc"], name=p + "Transpose", perm=[0, 2, 3, 1])
    )  # [B, H', W', C_in]
    columns_name = p + "xq_nhwc"  # a 1x1 kernel's columns are the pixels themselves
    if (kh, kw, sy, sx) != (1, 1, 1, 1):
        columns_name = p + "cols"
        tap_nodes, tap_inits = im2col(p, p + "xq_nhwc", columns_name, (kh, kw), (sy, sx))
        nodes += tap_nodes
        inits += tap_inits
    nodes += [
        helper.make_node(
            "MatMulInteger", [columns_name, p + "weight", p + "x_zero"], [p + "acc"], name=p + "MatMulInteger"
        ),  # [B, H_o, W_o, C_out] int32
        helper.make_node("Cast", [p + "acc"], [p + "acc_f"], name=p + "Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "x_scale", p + "weight_scale"], [p + "scale"], name=p + "Scale"),  # [C_out]
        helper.make_node(
            "Mul", [p + "acc_f", p + "scale"], [p + "y_nhwc" if bias is None else p + "scaled"], name=p + "Mul"
        ),
    ]
    if bias is not None:
        nodes.append(
            helper.make_node("Add", [p + "scaled", bias], [p + "y_nhwc"], name=p + "Bias")
        )  # [B, H_o, W_o, C_out]
    nodes.append(helper.make_node("Transpose", [p + "y_nhwc"], [node.output[0]], name=p + "ToNCHW", perm=[0, 3, 1, 2]))
    return nodes, inits


def quantize_convs(model: onnx.ModelProto, keep: tuple[str, ...]) -> int:
    """Replace every quantizable Conv outside ``keep`` by its int8 GEMM form, in place; return how many."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    rewritten, nodes, unused = 0, [], set()
    for node in graph.node:
        if node.name.startswith(keep) or not quantizable_conv(node, weights):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        new_nodes, inits = conv_as_int8_gemm(
            node, weight, node.input[2] if len(node.input) > 2 and node.input[2] else None
        )
        nodes += new_nodes
        graph.initializer.extend(inits)
        unused.add(node.input[1])
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in unused or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def quantize_matmuls(model: onnx.ModelProto, keep: tuple[str, ...], scratch: Path) -> onnx.ModelProto:
    """``model`` with its weight MatMuls in int8, by ONNX Runtime's dynamic quantizer; loaded back in memory."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch.mkdir(parents=True)
    path = scratch / "int8.onnx"
    chosen = [
        n.name for n in model.graph.node if n.op_type in MATMUL_OPS and not n.name.startswith(keep)
    ]  # by name: it would take Gemms as MatMuls
    logging.disable(
        logging.WARNING
    )  # its advice to pre-process (shape inference, for static quantization) on the root logger
    try:
        quantize_dynamic(
            model,
            path,
            op_types_to_quantize=list(MATMUL_OPS),
            nodes_to_quantize=chosen,
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},
        )
        return onnx.load(str(path))  # with its external data
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(scratch, ignore_errors=True)


def to_int8(model: onnx.ModelProto, keep: tuple[str, ...], scratch: Path) -> onnx.ModelProto:
    """The int8 form of ``model`` (see the module docstring); nodes under the prefixes in ``keep`` stay fp32."""
    quantize_convs(model, keep)
    return quantize_matmuls(model, keep, scratch)


class Calibration:
    """ONNX Runtime's calibration reader over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def to_calibrated_int8(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], scratch: Path) -> onnx.ModelProto:
    """``model`` with its convolutions but the first and last in int8 (per output channel, symmetric), and the
    activations of ``STATIC_OPS`` in uint8 at the ranges ``feeds`` reach (min and max over all of them), as
    QuantizeLinear and DequantizeLinear pairs that ONNX Runtime fuses at load; loaded back in memory."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    scratch.mkdir(parents=True)
    path = scratch / "int8.onnx"
    logging.disable(logging.WARNING)  # its advice to pre-process, as in quantize_matmuls
    try:
        quantize_static(
            model,
            path,
            Calibration(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OPS),
            nodes_to_exclude=[convs[0], convs[-1]],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=True,
        )  # the calibration keeps each feed's minima and maxima, not its activations
        return onnx.load(str(path))  # with its external data
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(scratch, ignore_errors=True)
