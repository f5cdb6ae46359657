"""fp32 UNet graph -> the same graph with each attention as one ``com.microsoft.MultiHeadAttention`` node, for ONNX
Runtime's CPU and CUDA execution providers only (the fast path's fused-attention variant of the ``unet`` engine).

Place in the data flow: ``export.onnx_file.trace_to_onnx`` (fp32, value types inferred) -> ``fuse_attention`` ->
(``export.int8.to_int8`` for int8 bundles: the Q, K, V and output projections stay ordinary MatMuls, so they are
quantized as before; the fused node reads and writes fp32) -> ``export.onnx_file.save_onnx``.

The fused graph runs on ONNX Runtime only: ``MultiHeadAttention`` is a contrib op of ONNX Runtime's ``com.microsoft``
domain, which TensorRT (its parser, ``trtexec``, and ONNX Runtime's TensorRT execution provider, which hands such a
node back to CUDA or the CPU) does not build. Keep the plain graph for TensorRT plans; the fused one is a variant
beside it.

What is matched: the scaled dot-product attention that torch.onnx's TorchScript exporter writes for
``F.scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``), per attention block::

    q [B, S, N*H] -> Reshape [B, S, N, H] -> Transpose (0 2 1 3) -> Mul sqrt(scale) -.
    k [B, L, N*H] -> Reshape [B, L, N, H] -> Transpose (0 2 3 1) -> Mul sqrt(scale) -+-> MatMul -> Softmax -.
    v [B, L, N*Hv] -> Reshape [B, L, N, Hv] -> Transpose (0 2 1 3) ---------------------------------------+-> MatMul
        -> Transpose (0 2 1 3) -> Reshape [B, S, N*Hv]

becomes ``MultiHeadAttention(q, k, v, num_heads=N, scale=sqrt(scale)^2)`` -> [B, S, N*Hv]. Self- and cross-attention
alike (k and v read the text embedding in cross-attention). N comes from the graph (the head Reshape), per block,
so SD 2.x's per-block head counts are right; the scale is folded from the graph's own scalar arithmetic (the
exporter computes it from the Q tensor's Shape). A scale Mul or Div on the scores instead of on Q and K, K transposed
in two steps, or no scale at all are matched too. The nodes left without a reader (transposes, the scale
arithmetic, the two MatMuls and the Softmax) are removed.

Why not ONNX Runtime's own transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model(model,
model_type="unet", opt_level=0)`` with GroupNorm, BiasSplitGelu, NhwcConv, BiasAdd, packing and the other fusions
turned off in its ``FusionOptions``): the library was tried first, with ONNX Runtime 1.32 on this exporter's graph.
It matches the pattern above (its "PyTorch 2" UNet attention) and fuses all 32 attentions of SD 1.5 (the tiny UNet
within 1e-6 of the plain graph), but
- it cannot read the head count from this graph (it looks for a Concat-built head Reshape; ours is a constant), so
  nothing is fused unless one ``num_heads`` is given for the whole model, which it then uses everywhere: right for
  SD 1.x (8 heads in every block), wrong for SD 2.x (5, 10, 20 heads of 64): on a tiny UNet with 4 and 8 heads in
  different blocks its output was off by 1.4% (``num_heads=4``) or 6.2% (8) of its scale, without a warning;
- its self-attention is either packed-QKV ``MultiHeadAttention``, which the CPU provider refuses at run time
  ("Packed QKV of shape (B, L, N, 3, H) not implemented for CPU"), or ``com.microsoft.Attention`` with the Q, K, V
  weights repacked inside the node, where ``export.int8`` (MatMuls only) no longer quantizes them;
- it needs ``opt_level=0`` (with ONNX Runtime's basic optimizations first, which fold the scale arithmetic it matches
  on, nothing is fused), and on the 3.4 GB SD 1.5 UNet it took 50 s and 13.7 GB peak memory (this module: under 1 s, no copy of the weights).
What is kept from it is the target: the fused op and its contract (separate Q, K, V of [B, S, N*H], ``num_heads``,
``scale``), the form the CPU kernel runs and after which the int8 rewrite still quantizes the projections.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from runtime.errors import ExportError

FUSED_DEVICES = ("cpu", "cuda")  # ONNX Runtime execution providers that run com.microsoft.MultiHeadAttention

FUSED_OP = "MultiHeadAttention"
FUSED_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops: CPU and CUDA execution providers, not TensorRT
HEADS_FIRST = [0, 2, 1, 3]  # [B, S, N, H] <-> [B, N, S, H]
KEY_TRANSPOSED = [0, 2, 3, 1]  # [B, L, N, H] -> [B, N, H, L]
LAST_TWO_SWAPPED = [0, 1, 3, 2]
MAX_FOLDED_NODES = 32  # the scale arithmetic is a handful of scalar ops; anything larger is not a scale

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attention:
    """One matched attention: the projections it reads, the tensor it writes, its heads and scale."""

    name: (
        str  # the fused node's name: the Softmax's scope, e.g. /unet/mid_block/attentions.0/transformer_blocks.0/attn1/
    )
    query: str  # [B, S, N*H]
    key: str  # [B, L, N*H]
    value: str  # [B, L, N*Hv]
    output: str  # [B, S, N*Hv], the name the head-merging Reshape wrote
    num_heads: int
    scale: float


class GraphIndex:
    """Who writes and who reads each tensor of a graph, its constants, and the static shapes shape inference found."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.model = model
        self.producer = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.shapes = static_shapes(model)

    def parent(self, name: str, op_type: str, perm: list[int] | None = None) -> onnx.NodeProto | None:
        """The node writing ``name`` if it is an ``op_type`` (a Transpose with ``perm`` when given)."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            return None
        if perm is not None and attribute(node, "perm") != perm:
            return None
        return node

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when only constants and static shapes decide it (the exporter's scale arithmetic)."""
        return folded_value(self, name)


def attribute(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape where it is fully static, by ONNX shape inference on the graph without its weight bytes
    (weights enter as typed inputs, so a UNet past protobuf's 2 GB is inferred in memory)."""
    graph = model.graph
    small = [t for t in graph.initializer if not t.external_data and int(np.prod(t.dims)) <= 64]  # shape constants
    small_names = {t.name for t in small}
    weights = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if t.name not in small_names
    ]
    skeleton = helper.make_model(
        helper.make_graph(graph.node, graph.name, [*graph.input, *weights], graph.output, initializer=small),
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = (
            skeleton.graph
        )  # no inferred types: the ones the exporter recorded (value_info below) are all there are
    shapes = {}
    for info in [*inferred.input, *inferred.output, *inferred.value_info, *model.graph.value_info]:
        dims = info.type.tensor_type.shape.dim
        if (
            info.type.HasField("tensor_type")
            and info.type.tensor_type.HasField("shape")
            and all(d.dim_value > 0 for d in dims)
        ):
            shapes.setdefault(info.name, tuple(d.dim_value for d in dims))
    for t in graph.initializer:
        shapes.setdefault(t.name, tuple(t.dims))
    return shapes


def folded_value(index: GraphIndex, name: str) -> np.ndarray | None:
    """Evaluate the constant subgraph that ends in ``name`` (Constant nodes, small initializers, the Shape of a
    tensor with a static shape, and the scalar arithmetic on them) with onnx's reference evaluator; None when it
    reads a graph input, a weight, or an activation's values."""
    nodes, feeds, pending = [], {}, [name]
    while pending:
        current = pending.pop()
        if not current or current in feeds or any(current in n.output for n in nodes):
            continue
        if current in index.initializers:
            tensor = index.initializers[current]
            if tensor.external_data or int(np.prod(tensor.dims)) > 64:
                return None
            feeds[current] = numpy_helper.to_array(tensor)
            continue
        node = index.producer.get(current)
        if node is None:
            return None  # a graph input
        if node.op_type == "Shape":
            shape = index.shape(node.input[0])
            if shape is None:
                return None
            start, end = attribute(node, "start", 0), attribute(node, "end", len(shape))
            feeds[current] = np.array(shape[start:end], np.int64)
            continue
        if len(nodes) >= MAX_FOLDED_NODES or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            return None
        nodes.append(node)
        pending.extend(node.input)
    if not nodes:
        return feeds.get(name)
    order = {id(n): i for i, n in enumerate(index.model.graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    graph = helper.make_graph(
        nodes,
        "folded",
        [],
        [helper.make_empty_tensor_value_info(name)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in feeds.items()],
    )
    model = helper.make_model(graph, opset_imports=index.model.opset_import, ir_version=index.model.ir_version)
    try:
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
    except Exception:  # an op the reference evaluator lacks: not a scale we can read
        return None


def scalar(index: GraphIndex, name: str) -> float | None:
    value = index.constant(name)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def scaled(index: GraphIndex, name: str) -> tuple[str, float]:
    """(what ``name`` scales, the factor) when ``name`` is a Mul or Div by a constant scalar; (``name``, 1) otherwise."""
    node = index.producer.get(name)
    if node is not None and node.op_type == "Mul":
        for i in (0, 1):
            factor = scalar(index, node.input[1 - i])
            if factor is not None:
                return node.input[i], factor
    if node is not None and node.op_type == "Div":
        divisor = scalar(index, node.input[1])
        if divisor:
            return node.input[0], 1.0 / divisor
    return name, 1.0


def split_heads(index: GraphIndex, name: str, perm: list[int]) -> tuple[str, int, int] | None:
    """(projection [B, S, N*H], N, H) when ``name`` is Transpose(``perm``) of Reshape(projection -> [B, S, N, H])."""
    transpose = index.parent(name, "Transpose", perm)
    reshape = index.parent(transpose.input[0], "Reshape") if transpose is not None else None
    if reshape is None:
        return None
    projection, heads = index.shape(reshape.input[0]), index.shape(reshape.output[0])
    if projection is None or heads is None or len(projection) != 3 or len(heads) != 4:
        return None
    if projection[:2] != heads[:2] or projection[2] != heads[2] * heads[3]:
        return None
    return reshape.input[0], heads[2], heads[3]


def key_heads(index: GraphIndex, name: str) -> tuple[str, int, int] | None:
    """K's projection, N and H when ``name`` is K as [B, N, H, L]: one Transpose (0 2 3 1), or (0 2 1 3) then (0 1 3 2)."""
    found = split_heads(index, name, KEY_TRANSPOSED)
    if found is None:
        swap = index.parent(name, "Transpose", LAST_TWO_SWAPPED)
        found = split_heads(index, swap.input[0], HEADS_FIRST) if swap is not None else None
    return found


def match_attention(index: GraphIndex, softmax: onnx.NodeProto) -> Attention | None:
    """The attention around ``softmax`` when the graph holds the pattern of the module docstring; None otherwise."""
    if softmax.op_type != "Softmax" or attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    readers = index.readers.get(softmax.output[0], [])
    weighted = next((n for n in readers if n.op_type == "MatMul" and n.input[0] == softmax.output[0]), None)
    scores, score_scale = scaled(index, softmax.input[0])
    qk = index.parent(scores, "MatMul")
    if weighted is None or qk is None:
        return None
    q_name, q_scale = scaled(index, qk.input[0])
    k_name, k_scale = scaled(index, qk.input[1])
    query, key, value = (
        split_heads(index, q_name, HEADS_FIRST),
        key_heads(index, k_name),
        split_heads(index, weighted.input[1], HEADS_FIRST),
    )
    merge = next(
        (
            n
            for n in index.readers.get(weighted.output[0], [])
            if n.op_type == "Transpose" and attribute(n, "perm") == HEADS_FIRST
        ),
        None,
    )
    reshape = (
        next((n for n in index.readers.get(merge.output[0], []) if n.op_type == "Reshape"), None) if merge else None
    )
    if query is None or key is None or value is None or reshape is None:
        return None
    (q, heads, head_size), (k, k_heads, k_size), (v, v_heads, v_size) = query, key, value
    q_shape, out_shape = index.shape(q), index.shape(reshape.output[0])
    if (k_heads, v_heads, k_size) != (heads, heads, head_size) or out_shape != (*q_shape[:2], heads * v_size):
        return None
    if index.shape(k)[:2] != index.shape(v)[:2] or index.shape(k)[0] != q_shape[0]:
        return None
    scope = softmax.name.rsplit("/", 1)[0] if "/" in softmax.name else softmax.output[0]  # unique where names are not
    return Attention(f"{scope}/{FUSED_OP}", q, k, v, reshape.output[0], heads, q_scale * k_scale * score_scale)


def attention_softmaxes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Softmax nodes between two MatMuls (scores in, through any scale, mask or Cast; weighted values out, through
    any Cast): the graph's attentions, whatever their form."""
    producer = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def reaches_matmul(name: str) -> bool:
        return any(
            n.op_type == "MatMul" or (n.op_type in ("Cast", "Identity") and reaches_matmul(n.output[0]))
            for n in readers.get(name, [])
        )

    found = []
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        source = producer.get(node.input[0])
        while source is not None and source.op_type in ("Mul", "Div", "Add", "Cast", "Identity"):  # scale, mask
            source = producer.get(source.input[0])
        if source is not None and source.op_type == "MatMul" and reaches_matmul(node.output[0]):
            found.append(node)
    return found


def subgraph_inputs(node: onnx.NodeProto) -> Iterable[str]:
    """Names a node's subgraphs (If, Loop, Scan bodies) read from the enclosing graph, and the node's own inputs."""
    yield from node.input
    for a in node.attribute:
        for graph in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for inner in graph.node:
                yield from subgraph_inputs(inner)


def fuse_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace every attention of ``model`` (an fp32 UNet graph as ``trace_to_onnx`` returns it) by one
    ``com.microsoft.MultiHeadAttention`` node, in place; return the model and how many were fused.

    The result runs on ONNX Runtime's CPU and CUDA execution providers, not on TensorRT. Raises ``ExportError`` when
    the graph holds attention (a Softmax between two MatMuls) and none of it matches.
    """
    graph = model.graph
    index = GraphIndex(model)
    matched = {n.output[0]: match_attention(index, n) for n in graph.node if n.op_type == "Softmax"}
    attentions = [a for a in matched.values() if a is not None]
    present = attention_softmaxes(model)
    if present and not attentions:
        raise ExportError(
            f"{graph.name or 'the graph'}: {len(present)} attention(s) (e.g. {present[0].name or present[0].output[0]}) but none "
            "in the form fuse_attention rewrites (torch.onnx's scaled_dot_product_attention, no mask, static shapes), so nothing was fused",
            hint="fuse only the UNet as export.onnx_file.trace_to_onnx exports it (static shapes, diffusers' AttnProcessor2_0), "
            "or keep the plain graph for this network",
        )
    if not attentions:
        return model, 0
    fused = {a.output: a for a in attentions}
    nodes = []
    for node in graph.node:
        attention = next((fused[out] for out in node.output if out in fused), None)
        if attention is None:
            nodes.append(node)
            continue
        nodes.append(
            helper.make_node(
                FUSED_OP,
                [attention.query, attention.key, attention.value],
                [attention.output],
                name=attention.name,
                domain=FUSED_DOMAIN,
                num_heads=attention.num_heads,
                scale=attention.scale,
            )
        )  # [B, S, N*Hv], fp32 in and out
    read_before = {name for node in graph.node for name in node.input}
    del graph.node[:]
    graph.node.extend(nodes)
    prune(model, read_before)
    if not any(o.domain == FUSED_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    unfused = [n.name or n.output[0] for n in present if matched.get(n.output[0]) is None]
    if unfused:
        log.warning("attention left unfused (pattern not matched): %s", ", ".join(unfused))
    return model, len(attentions)


def prune(model: onnx.ModelProto, read_before: set[str]) -> None:
    """Remove the nodes nothing reads any more (the replaced attention's), the initializers only they read, and the
    value types of what they wrote; ``read_before`` is what the graph's nodes read before the rewrite."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept, removed = [], set()
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(subgraph_inputs(node))
        else:
            removed.update(node.output)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    unread = {t.name for t in graph.initializer if t.name in read_before and t.name not in needed}
    for i in reversed(range(len(graph.initializer))):  # in place: a copy of a UNet's weights would double its memory
        if graph.initializer[i].name in unread:
            del graph.initializer[i]
    infos = [v for v in graph.value_info if v.name not in removed]
    del graph.value_info[:]
    graph.value_info.extend(infos)
