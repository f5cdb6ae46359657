"""Fused attention (export.attention): on the tiny bundle's fp32 UNet, every attention becomes one
``com.microsoft.MultiHeadAttention`` node with the head count of its block, the fused graph computes what the plain
one does (fp32, ONNX Runtime on the CPU), and the int8 rewrite still quantizes it; a graph with attention in another
form is an error, one without attention is left alone. The attentions are counted here from the plain graph's
Softmax nodes in ``attn1``/``attn2`` scopes, and the head counts from the UNet's config, not by the code under test.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from export.attention import fuse_attention
from export.int8 import to_int8
from runtime.errors import ExportError
from tests.support import relative_error

ATTENTION_SCOPE = re.compile(r"^(.*/attn\d/)[^/]+$")  # /unet/.../transformer_blocks.0/attn1/Softmax -> its scope
UNET_INT8_FP32_SCOPES = ("/unet/conv_in/", "/unet/conv_out/")  # as export.networks declares for the unet engine
FP32_TOLERANCE = 1e-5
INT8_TOLERANCE = 1e-1


def attention_scopes(model: onnx.ModelProto, op_type: str) -> list[str]:
    """The attention scopes (``.../attnN/``) holding an ``op_type`` node, one entry per node."""
    return [m.group(1) for n in model.graph.node if n.op_type == op_type and (m := ATTENTION_SCOPE.match(n.name))]


def unet_feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs of the graph's static shapes; the timestep mid-schedule."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = (
            np.full(shape, 500.0, np.float32)
            if value.name == "timestep"
            else rng.standard_normal(shape).astype(np.float32)
        )
    return feeds


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return session(model).run(None, feeds)[0]


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    duplicate = onnx.ModelProto()
    duplicate.CopyFrom(model)
    return duplicate


def count_ops(model: onnx.ModelProto, op_types: tuple[str, ...]) -> int:
    return sum(n.op_type in op_types for n in model.graph.node)


@pytest.fixture(scope="module")
def plain_unet(tiny_bundle) -> onnx.ModelProto:
    """The bundle's fp32 UNet graph with its weights (never modified: tests fuse a copy)."""
    return onnx.load(str(tiny_bundle / "unet.onnx"))


@pytest.fixture
def fused_unet(plain_unet) -> tuple[onnx.ModelProto, int]:
    return fuse_attention(copy(plain_unet))


def test_every_attention_becomes_one_multihead_attention_node(plain_unet, fused_unet, tiny_models):
    fused, count = fused_unet
    scopes = attention_scopes(plain_unet, "Softmax")
    assert len(scopes) == 8 and len(set(scopes)) == 8  # tiny UNet: 4 transformer blocks x (self, cross)
    assert count == len(scopes)
    nodes = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert all(n.domain == "com.microsoft" for n in nodes)
    assert sorted(attention_scopes(fused, "MultiHeadAttention")) == sorted(scopes)
    assert not [n.name for n in fused.graph.node if n.op_type == "Softmax"]
    assert len(attention_scopes(plain_unet, "MatMul")) == 2 * 8 and not attention_scopes(
        fused, "MatMul"
    )  # q k^T, p v gone
    assert len(attention_scopes(plain_unet, "Transpose")) > 0 and not attention_scopes(
        fused, "Transpose"
    )  # head splits gone
    heads = json.loads((tiny_models / "sd" / "unet" / "config.json").read_text())[
        "attention_head_dim"
    ]  # diffusers' legacy name for the head count
    assert {helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "num_heads"} == {heads}
    assert any(o.domain == "com.microsoft" for o in fused.opset_import)
    onnx.checker.check_model(fused)


def test_fused_unet_matches_the_plain_one(plain_unet, fused_unet):
    """The UNet's output, and each attention's own output (the fused node writes the tensor the plain graph's
    head-merging Reshape wrote, under the same name), within fp32 rounding."""
    fused, _ = fused_unet
    names = [n.output[0] for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    plain = copy(plain_unet)
    for model in (plain, fused):
        model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    feeds = unet_feeds(plain_unet)
    reference, ours = session(plain).run(None, feeds), session(fused).run(None, feeds)
    assert len(reference) == len(ours) == 1 + 8
    for name, a, b in zip(["noise_pred", *names], ours, reference, strict=True):
        assert relative_error(a, b) <= FP32_TOLERANCE, name


def test_the_int8_rewrite_quantizes_the_fused_graph_and_keeps_the_fused_op_fp32(plain_unet, fused_unet, tmp_path):
    fused, _ = fused_unet
    quantized = to_int8(fused, UNET_INT8_FP32_SCOPES, tmp_path / "fused")
    plain_int8 = to_int8(copy(plain_unet), UNET_INT8_FP32_SCOPES, tmp_path / "plain")
    nodes = [n for n in quantized.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(nodes) == 8
    integer_ops = ("MatMulInteger", "DynamicQuantizeMatMul")
    assert 0 < count_ops(quantized, integer_ops) == count_ops(plain_int8, integer_ops)  # Q, K, V projections still int8
    feeds = unet_feeds(plain_unet)
    seen = sorted({name for n in nodes for name in [*n.input, *n.output]})
    quantized.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in seen)  # read them back
    outputs = dict(zip([o.name for o in quantized.graph.output], session(quantized).run(None, feeds), strict=True))
    assert {outputs[name].dtype for name in seen} == {np.dtype(np.float32)}
    assert relative_error(outputs[quantized.graph.output[0].name], run(plain_unet, feeds)) <= INT8_TOLERANCE


class UNetEngine(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet  # node names start with /unet/, as in the bundle's engine

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, context, return_dict=False)[0]


def test_each_block_keeps_its_own_head_count(tiny_models, tmp_path):
    """An SD 2.x-style tiny UNet (linear proj_in, 4 heads in the outer blocks, 8 in the middle one): each fused node
    has its block's heads, and the fused graph matches PyTorch."""
    from diffusers import UNet2DConditionModel

    config = json.loads((tiny_models / "sd" / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")} | {
        "attention_head_dim": [4, 8],
        "use_linear_projection": True,
    }
    torch.manual_seed(0)
    module = UNetEngine(UNet2DConditionModel(**config)).eval()
    args = (torch.randn(2, 4, 8, 8), torch.tensor([500.0]), torch.randn(2, 77, config["cross_attention_dim"]))
    path = tmp_path / "unet.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=17, input_names=["sample", "timestep", "context"]
        )
        expected = module(*args).numpy()
    plain = onnx.load(str(path))
    scopes = attention_scopes(plain, "Softmax")
    fused, count = fuse_attention(plain)
    assert count == len(scopes) == 8
    heads = {
        ATTENTION_SCOPE.match(n.name).group(1): helper.get_attribute_value(
            next(a for a in n.attribute if a.name == "num_heads")
        )
        for n in fused.graph.node
        if n.op_type == "MultiHeadAttention"
    }
    assert heads == {scope: 8 if scope.startswith("/unet/mid_block/") else 4 for scope in scopes}
    feeds = {"sample": args[0].numpy(), "timestep": args[1].numpy(), "context": args[2].numpy()}
    assert relative_error(run(fused, feeds), expected) <= FP32_TOLERANCE


def masked_attention() -> onnx.ModelProto:
    """softmax(q k^T + mask) v on [B, S, H] tensors, with no heads split: attention, but not the exporter's form."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["weights"], name="/attn/Softmax", axis=-1),
        helper.make_node("MatMul", ["weights", "v"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 4, 4]))
    graph = helper.make_graph(
        nodes, "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("graph", ["masked attention", "text_encoder"])
def test_attention_in_another_form_is_an_error(graph, tiny_bundle):
    """A hand-made masked attention, and the bundle's CLIP text encoder (eager attention with a causal mask)."""
    model = masked_attention() if graph == "masked attention" else onnx.load(str(tiny_bundle / f"{graph}.onnx"))
    with pytest.raises(ExportError, match="nothing was fused"):
        fuse_attention(model)


def test_a_graph_without_attention_is_left_alone():
    model = masked_attention()
    model.graph.node[3].op_type = "Relu"  # no Softmax: no attention
    del model.graph.node[3].attribute[:]
    before = model.SerializeToString()
    model, count = fuse_attention(model)
    assert count == 0 and model.SerializeToString() == before
