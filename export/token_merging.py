"""Token merging (ToMe for Stable Diffusion, Bolya & Hoffman, arXiv 2303.17604) written into a UNet graph at export:
each self-attention at the highest resolution runs on ``ratio`` fewer tokens.

Place in the data flow: ``export.onnx_file.trace_to_onnx`` -> ``export.attention.fuse_attention`` -> ``merge_tokens``
(``export --token-merging RATIO``) -> ``export.int8.to_int8`` -> ``export.onnx_file.save_onnx``.

What is written, per matched attention (a fused ``MultiHeadAttention`` whose Q, K and V are projections of one
tensor, the block's LayerNorm output, over the latent's h x w positions), as tomesd's ``apply_patch(ratio,
max_downsample=1, sx=2, sy=2, use_rand=False)`` does for diffusers' BasicTransformerBlock's ``attn1``:
- the tokens are split into destinations, the first (top-left) of each 2x2 patch, and sources, the others;
- each source is matched to its most similar destination by the cosine similarity of the block's input (before
  the LayerNorm); the ``r = ratio * N`` sources with the highest similarity are merged into their destination
  (the mean of the destination and its sources), the others kept;
- Q, K, V are projected from the N - r merged tokens (the projections have no bias, so projecting the mean is the
  mean of the projections), attention runs over N - r positions, and its output is copied back to every token of
  a group (unmerge), before the output projection.
The matching is computed per call (standard ONNX ops: a MatMul of the normalised tokens, TopK, Gather); the rest of the
graph is untouched. The output approximates the unmerged UNet's; how far is measured against PyTorch's unmerged UNet
at export, like any engine (``export.builder``), and tests/test_token_merging.py holds the graph to tomesd's own
patch of the diffusers UNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.attention import FUSED_DOMAIN, FUSED_OP, GraphIndex
from runtime.errors import ConfigError

PATCH = 2  # one destination per PATCH x PATCH positions (tomesd's sx = sy = 2)
MAX_RATIO = 1 - 1 / PATCH**2  # every source merged


def check_merging(ratio: float, grid: tuple[int, int]) -> None:
    """``--token-merging RATIO`` on a latent of ``grid`` (h, w): a ratio ToMe takes, and 2x2 patches that tile it; else
    one ConfigError line naming the option."""
    if not 0 < ratio <= MAX_RATIO:
        raise ConfigError(
            f"--token-merging is {ratio:g}; it must be above 0 and at most {MAX_RATIO:g} (every token but one per "
            f"{PATCH}x{PATCH} patch merged)",
            hint="0.5 is ToMe's usual ratio",
        )
    h, w = grid
    if h % PATCH or w % PATCH:
        raise ConfigError(
            f"--token-merging: the latent is {h}x{w}; it is merged in {PATCH}x{PATCH} patches, so both must be even",
            hint=f"use a picture size that is a multiple of {8 * PATCH} pixels",
        )


def split(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(sources, destinations): the positions of an h x w grid (row-major), the destination of each 2x2 patch its
    top-left position."""
    positions = np.arange(h * w).reshape(h // PATCH, PATCH, w // PATCH, PATCH)  # [h/2, 2, w/2, 2]
    patches = positions.transpose(0, 2, 1, 3).reshape(-1, PATCH * PATCH)  # [N/4, 4]: each patch's positions
    destinations = patches[:, 0]  # [N/4]
    sources = np.setdiff1d(np.arange(h * w), destinations)  # [3N/4], ascending
    return sources, destinations


@dataclass(frozen=True)
class SelfAttention:
    """A fused self-attention whose tokens can be merged."""

    node: onnx.NodeProto  # the MultiHeadAttention
    block_input: str  # [B, N, C]: the transformer block's input, read by its LayerNorm (the matching's metric)
    normed: str  # [B, N, C]: the LayerNorm's output, which the Q, K and V projections read
    width: int  # C
    projections: tuple[onnx.NodeProto, ...]  # the Q, K and V MatMuls


def self_attentions(index: GraphIndex, tokens: int) -> list[SelfAttention]:
    """The fused attentions over ``tokens`` positions whose Q, K and V are MatMuls of one LayerNorm's output, which
    nothing else reads."""
    found = []
    for node in index.model.graph.node:
        if node.op_type != FUSED_OP or node.domain != FUSED_DOMAIN:
            continue
        projections = [index.producer.get(name) for name in node.input[:3]]
        if any(p is None or p.op_type != "MatMul" or p.input[1] not in index.initializers for p in projections):
            continue
        normed = {p.input[0] for p in projections}
        if len(normed) != 1:
            continue  # cross-attention: K and V read the text
        (normed_name,) = normed
        norm = index.producer.get(normed_name)
        shape = index.shape(normed_name)
        if norm is None or norm.op_type != "LayerNormalization" or shape is None or shape[1] != tokens:
            continue
        if sorted(id(r) for r in index.readers[normed_name]) != sorted(id(p) for p in projections):
            continue  # the LayerNorm output feeds something else too: merging it would change that reader
        found.append(SelfAttention(node, norm.input[0], normed_name, shape[2], tuple(projections)))
    return found


class Writer:
    """Nodes and constants added to a graph, named under one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def named(self, name: str) -> str:
        """``name`` under the prefix, once: a tensor with two writers would make the graph cyclic."""
        full = self.prefix + name
        assert full not in self.names, f"{full} written twice"
        self.names.add(full)
        return full

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, self.named(name)))
        return self.prefix + name

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attributes) -> list[str]:
        names = [self.named(name if outputs == 1 else f"{name}_{k}") for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.prefix + name, **attributes))
        return names


def merge_block(
    found: SelfAttention, grid: tuple[int, int], ratio: float
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The merge (placed after the LayerNorm) and the unmerge (after the attention) around one attention, and their
    constants; rewires the projections and the attention's output in place.

    Rows are moved by Gather on the batch-flattened [B * T, C] tensors (whole rows, not ``GatherElements`` over an
    index as large as the tensor), and the merged sources are summed into their destinations by a MatMul with their
    one-hot assignment [B, Nd, r] (exact: each sum has the same few nonzero terms). ONNX Runtime's ``ScatterND`` with
    ``reduction="add"`` (1.32, CPU) gives wrong sums at random where indices repeat, and its ``ScatterElements`` is
    several times slower than this."""
    h, w = grid
    tokens, width = h * w, found.width
    sources, destinations = split(h, w)
    merged_away = min(int(tokens * ratio), len(sources))  # r
    unmerged = len(sources) - merged_away
    kept = unmerged + len(destinations)  # M rows of the merged sequence: the unmerged sources, then the destinations
    write = Writer(f"{found.node.name}/tome/")
    k_1, axis_1, axis_2 = write.const("k_1", np.array([1])), write.const("axis_1", np.array([1])), write.const(
        "axis_2", np.array([2]))  # fmt: skip
    batch = write.op("Shape", [found.block_input], "batch", start=0, end=1)[0]  # [1]: B
    size = write.op("Squeeze", [batch, write.const("axis_0", np.array([0]))], "batch_size")[0]  # B
    steps = write.op("Range", [write.const("zero", np.array(0)), size, write.const("step", np.array(1))], "steps")[0]
    batch_index = write.op("Unsqueeze", [steps, axis_1], "batch_index")[0]  # [B, 1]

    def take(table: str, rows: int, index: str, count: int, name: str, output: str | None = None) -> str:
        """Rows ``index`` [B, count] of each batch entry of ``table`` [B, rows, C] -> [B, count, C] (``output``:
        its name when given)."""
        flat = write.op("Reshape", [table, write.const(f"{name}_rows_by_c", np.array([-1, width]))], f"{name}_table")[0]
        offsets = write.op("Mul", [batch_index, write.const(f"{name}_rows", np.array(rows))], f"{name}_offsets")[0]
        shifted = write.op("Add", [index, offsets], f"{name}_shifted")[0]  # [B, count]: rows of the [B * rows, C]
        flat_index = write.op("Reshape", [shifted, write.const(f"{name}_flat", np.array([-1]))], f"{name}_index")[0]
        taken = write.op("Gather", [flat, flat_index], f"{name}_taken", axis=0)[0]  # [B * count, C]
        shape = write.const(f"{name}_shape", np.array([-1, count, width]))
        if output is None:
            return write.op("Reshape", [taken, shape], name)[0]
        write.nodes.append(helper.make_node("Reshape", [taken, shape], [output], name=write.prefix + name))
        return output

    # the matching, on the block's input: each source's most similar destination, the sources ranked best first
    unit = write.op("LpNormalization", [found.block_input], "unit", axis=-1, p=2)[0]  # [B, N, C]
    source_positions, destination_positions = write.const("sources", sources), write.const("destinations", destinations)
    a = write.op("Gather", [unit, source_positions], "a", axis=1)[0]  # [B, Ns, C]
    b = write.op("Gather", [unit, destination_positions], "b", axis=1)[0]  # [B, Nd, C]
    b_t = write.op("Transpose", [b], "b_t", perm=[0, 2, 1])[0]  # [B, C, Nd]
    scores = write.op("MatMul", [a, b_t], "scores")[0]  # [B, Ns, Nd]
    best, match = write.op("TopK", [scores, k_1], "best", outputs=2, axis=2)  # [B, Ns, 1] each: similarity, index
    best = write.op("Squeeze", [best, axis_2], "best_similarity")[0]  # [B, Ns]
    match = write.op("Squeeze", [match, axis_2], "match")[0]  # [B, Ns]: each source's destination
    count = write.const("source_count", np.array([len(sources)]))
    _, ranked = write.op("TopK", [best, count], "ranked", outputs=2, axis=1)  # [B, Ns]: sources, best match first
    # merge: the kept sources as they are, then each destination the mean of itself and the sources merged into it
    ranked_positions = write.op("Gather", [source_positions, ranked], "ranked_positions")[0]  # [B, Ns]
    by_rank = take(found.normed, tokens, ranked_positions, len(sources), "by_rank")  # [B, Ns, C]
    bounds = [write.const(name, np.array([value])) for name, value in (("start", 0), ("r", merged_away),
                                                                       ("end", len(sources)))]  # fmt: skip
    merging = write.op("Slice", [ranked, bounds[0], bounds[1], axis_1], "merging")[0]  # [B, r]: merged sources
    merged_sources = write.op("Slice", [by_rank, bounds[0], bounds[1], axis_1], "merged_sources")[0]  # [B, r, C]
    kept_sources = write.op("Slice", [by_rank, bounds[1], bounds[2], axis_1], "kept_sources")[0]  # [B, Ns - r, C]
    target = write.op("GatherElements", [match, merging], "target", axis=1)[0]  # [B, r]: their destinations
    target_row = write.op("Unsqueeze", [target, axis_1], "target_row")[0]  # [B, 1, r]
    ids = write.const("destination_ids", np.arange(len(destinations))[:, None])  # [Nd, 1]
    assigned = write.op("Equal", [target_row, ids], "assigned")[0]  # [B, Nd, r]
    assignment = write.op("Cast", [assigned], "assignment", to=TensorProto.FLOAT)[0]  # [B, Nd, r]
    added = write.op("MatMul", [assignment, merged_sources], "added")[0]  # [B, Nd, C]
    joined = write.op("ReduceSum", [assignment, axis_2], "joined", keepdims=1)[0]  # [B, Nd, 1]
    own = write.op("Gather", [found.normed, destination_positions], "own", axis=1)[0]  # [B, Nd, C]
    total = write.op("Add", [own, added], "total")[0]  # [B, Nd, C]
    group = write.op("Add", [joined, write.const("itself", np.array(1, np.float32))], "group")[0]  # [B, Nd, 1]
    mean = write.op("Div", [total, group], "mean")[0]  # [B, Nd, C]
    merged = write.op("Concat", [kept_sources, mean], "merged", axis=1)[0]  # [B, M, C]
    for projection in found.projections:
        projection.input[0] = merged  # Q, K, V of the M merged tokens
    # each token's row of the merged sequence: a source's by its rank (the first r join their destination's row,
    # the others take the kept rows in rank order), a destination its own
    rank = np.arange(len(sources))
    ranked_match = write.op("GatherElements", [match, ranked], "ranked_match", axis=1)[0]  # [B, Ns]
    joining = write.op("Add", [ranked_match, write.const("kept", np.array(unmerged))], "joining")[0]  # [B, Ns]
    merges, kept_row = write.const("merges", rank < merged_away), write.const("kept_row", rank - merged_away)
    row_by_rank = write.op("Where", [merges, joining, kept_row], "row_by_rank")[0]  # [B, Ns]
    source_row = write.op("ScatterElements", [ranked, ranked, row_by_rank], "source_row", axis=1)[0]  # [B, Ns]
    destination_rows = write.const("destination_rows", (unmerged + np.arange(len(destinations)))[None])  # [1, Nd]
    count = write.const("destination_count", np.array([len(destinations)]))
    rows_shape = write.op("Concat", [batch, count], "rows_shape", axis=0)[0]  # [2]: B, Nd
    destination_row = write.op("Expand", [destination_rows, rows_shape], "destination_row")[0]  # [B, Nd]
    by_kind = write.op("Concat", [source_row, destination_row], "by_kind", axis=1)[0]  # [B, N]: sources, destinations
    order = np.argsort(np.concatenate([sources, destinations]))  # each position's place in ``by_kind``
    rows = write.op("Gather", [by_kind, write.const("order", order)], "rows", axis=1)[0]  # [B, N]
    split_at = len(write.nodes)  # the merge above goes after the LayerNorm, the unmerge below after the attention
    # unmerge: every token takes its row's attention output
    output = found.node.output[0]
    found.node.output[0] = write.named("attended")  # [B, M, C]
    take(found.node.output[0], kept, rows, tokens, "unmerged", output)  # [B, N, C]
    return write.nodes[:split_at], write.nodes[split_at:], write.initializers


def merge_tokens(model: onnx.ModelProto, ratio: float, grid: tuple[int, int]) -> int:
    """Merge ``ratio`` of the tokens before each fused self-attention over the ``grid`` (the latent's h x w: the UNet's
    highest resolution), in place (see the module docstring); return how many attentions were merged."""
    check_merging(ratio, grid)
    index = GraphIndex(model)
    found = self_attentions(index, grid[0] * grid[1])
    placed_after: dict[int, list[onnx.NodeProto]] = {}  # id of a node -> the nodes that go right after it
    graph = model.graph
    for attention in found:
        merge, unmerge, constants = merge_block(attention, grid, ratio)
        placed_after[id(index.producer[attention.normed])] = merge
        placed_after[id(attention.node)] = unmerge
        graph.initializer.extend(constants)
    nodes = [new for node in graph.node for new in (node, *placed_after.get(id(node), ()))]
    del graph.node[:]
    graph.node.extend(nodes)
    resized = {p.output[0] for attention in found for p in attention.projections}  # M tokens now, not N
    infos = [v for v in graph.value_info if v.name not in resized]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return len(found)
