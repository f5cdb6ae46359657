"""fp32 ONNX graph -> int8 linear layers, for CPUs (``--precision int8``); I/O and every other node stay fp32.

Place in the data flow: ``export.onnx_file.trace_to_onnx`` (fp32) -> ``quantize_linears`` (for the networks
that list ``int8_ops``: the UNet) -> ``export.onnx_file.save_onnx``.

What it does: every MatMul whose second input is a weight (attention projections, feed-forward) gets int8
weights, one scale per output channel, and its activation is quantized at run time (uint8, one scale per call,
from that call's min and max): ONNX Runtime's dynamic quantization, whose fused ``DynamicQuantizeMatMul`` runs
on MLAS's int8 GEMM (AMX or VNNI where the CPU has them). Matrix products of two activations (attention
scores) and the UNet's Gemms (timestep embedding, per-block time projections: small, and on the timestep path)
stay fp32 (the quantizer rewrites them as MatMul + Add, which ONNX Runtime fuses back at load), as do the convolutions: their dynamic form (``ConvInteger``) runs slower than fp32 in ONNX Runtime
(measured 9.3 s against 2.4 s for an SD 1.5-size UNet step), and static int8 needs calibration data.

Why: on the CPU an fp32 UNet is bound by fp32 GEMM throughput (SD 1.5 at 256x256: 343 GFLOP per batched step;
ONNX Runtime reaches about 140 GFLOP/s of a measured 150-200 GFLOP/s GEMM peak on 2 Sapphire Rapids cores), and
int8 raises that ceiling. Non-VNNI x86 CPUs (AVX2 only) may saturate in uint8 x int8 products; see the README.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import onnx

QUANTIZED_OPS = ("MatMul",)


def quantize_linears(model: onnx.ModelProto, scratch: Path) -> onnx.ModelProto:
    """``model`` with its weight MatMuls in int8 (per-channel weights, dynamic activations); loaded back in memory."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch.mkdir(parents=True)
    path = scratch / "int8.onnx"
    logging.disable(logging.WARNING)  # its advice to pre-process (shape inference, for static quantization) on the root logger
    try:
        chosen = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]  # by name: it would take Gemms as MatMuls
        quantize_dynamic(model, path, op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=chosen, per_channel=True,
                         weight_type=QuantType.QInt8, use_external_data_format=True, extra_options={"MatMulConstBOnly": True})
        return onnx.load(str(path))  # with its external data
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(scratch, ignore_errors=True)
