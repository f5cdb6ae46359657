"""fp32 ONNX graph -> fp16 graph with fp32 islands, for GPUs (ONNX Runtime CUDA, TensorRT); I/O stays fp32.

Place in the data flow: ``export.onnx_file.trace_to_onnx`` (fp32, value types inferred) -> ``to_fp16`` (for
``--precision fp16``) -> ``export.onnx_file.save_onnx``. Inputs and outputs keep their float32 contract, so the
runtime feeds a bundle of either precision the same arrays.

Rules:
- a node stays fp32 when its name starts with one of the network's fp32 scopes, when it computes something
  such a node reads (the scope's whole upstream, e.g. the timestep path into the UNet's time_proj), or when
  its op type is listed (LayerNormalization, Softmax); every other node computes in fp16;
- a float initializer or Constant becomes fp16 only when every reader wants fp16 (a shared one stays fp32);
- one Cast per (value, precision) is inserted where a value reaches a reader that wants the other precision;
  Cast(to=float) and ConstantOfShape inside the fp16 part produce fp16; fp16 graph outputs get a final Cast;
- Resize's roi and scales inputs stay fp32 (ONNX types them float).
Written here rather than taken from onnxconverter-common (or its copy in onnxruntime.transformers.float16):
those cast every blocked node's inputs and outputs through fp16, so inside a chain of fp32 nodes (the fbank,
frame power ~1e13) each intermediate would overflow fp16, and two blocked readers of one value get Cast nodes
with the same name (an invalid model).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FLOAT_ONLY_INPUTS = {"Resize": (1, 2)}  # roi, scales
ANY_FLOAT_READERS = ("Cast", "Shape")  # read fp16 or fp32 alike: never worth a Cast in front
FP16_MAX = float(np.finfo(np.float16).max)  # 65504; larger constants (e.g. -3.4e38 mask fills) saturate to it


def fp32_nodes(graph: onnx.GraphProto, scopes: tuple[str, ...], ops: tuple[str, ...]) -> set[int]:
    """Indices of the nodes that stay fp32: those in ``scopes`` with everything upstream of them, and ``ops``.

    The walk upstream stops at Shape nodes: a shape does not depend on the values that flow in.
    """
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    stack = [i for i, node in enumerate(graph.node) if node.name.startswith(scopes)]
    chosen = set()
    while stack:
        i = stack.pop()
        if i not in chosen:
            chosen.add(i)
            if graph.node[i].op_type != "Shape":
                stack.extend(producer[name] for name in graph.node[i].input if name in producer)
    return chosen | {i for i, node in enumerate(graph.node) if node.op_type in ops}


def value_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element type of every named value (inputs, initializers, inferred intermediates, Constant outputs)."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                types[node.output[0]] = attribute.t.data_type
    return types


def half(tensor: TensorProto) -> TensorProto:
    """The same tensor in fp16, saturated at +-65504."""
    array = numpy_helper.to_array(tensor)
    return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def to_fp16(model: onnx.ModelProto, scopes: tuple[str, ...] = (), ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Convert ``model`` in place to fp16 outside its fp32 islands (see the module docstring) and return it."""
    graph = model.graph
    types = value_types(graph)
    keep = fp32_nodes(graph, scopes, ops)
    outputs = {o.name for o in graph.output}

    def wanted(i: int, index: int) -> int | None:
        """The precision node ``i`` wants at input ``index``; None when any float will do."""
        node = graph.node[i]
        if node.op_type in ANY_FLOAT_READERS:
            return None
        return FLOAT if i in keep or index in FLOAT_ONLY_INPUTS.get(node.op_type, ()) else HALF

    readers: dict[str, set[int]] = {}  # float value -> precisions its readers want
    for i, node in enumerate(graph.node):
        for index, name in enumerate(node.input):
            if types.get(name) == FLOAT and (want := wanted(i, index)) is not None:
                readers.setdefault(name, set()).add(want)

    precision = {v.name: FLOAT for v in graph.input}  # what each float value will be
    for tensor in graph.initializer:
        if tensor.data_type == FLOAT and readers.get(tensor.name) == {HALF}:
            tensor.CopyFrom(half(tensor))
        precision[tensor.name] = tensor.data_type
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    name = node.output[0]
                    if attribute.t.data_type == FLOAT and readers.get(name) == {HALF} and name not in outputs:
                        attribute.t.CopyFrom(half(attribute.t))
                    precision[name] = attribute.t.data_type
        else:
            precision.update({name: FLOAT if i in keep else HALF for name in node.output if types.get(name) == FLOAT})

    nodes, casts = [], {}
    for i, node in enumerate(graph.node):
        for index, name in enumerate(node.input):
            want = wanted(i, index)
            if types.get(name) == FLOAT and want is not None and precision[name] != want:
                if (name, want) not in casts:
                    casts[name, want] = (
                        f"{'fp16' if want == HALF else 'fp32'}({name})"  # never inside an fp32 scope's names
                    )
                    nodes.append(helper.make_node("Cast", [name], [casts[name, want]], name=casts[name, want], to=want))
                node.input[index] = casts[name, want]
        if i not in keep and node.op_type != "Constant":
            produce_fp16(node)
        nodes.append(node)

    for output in graph.output:
        if precision.get(output.name) == HALF:  # rename the fp16 value, then cast it back under the contract's name
            internal = f"{output.name}/fp16"
            for node in nodes:
                node.output[:] = [internal if o == output.name else o for o in node.output]
                node.input[:] = [internal if i == output.name else i for i in node.input]
            nodes.append(helper.make_node("Cast", [internal], [output.name], name=f"fp32({output.name})", to=FLOAT))

    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the fp32 types inferred before are stale; consumers re-infer
    return model


def produce_fp16(node: onnx.NodeProto) -> None:
    """Make an fp16-part node whose output type comes from an attribute produce fp16 instead of fp32."""
    if node.op_type == "Cast":
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = HALF
    elif node.op_type == "ConstantOfShape":
        values = [a for a in node.attribute if a.name == "value"]
        if not values:  # the default fill is a float32 zero
            node.attribute.append(helper.make_attribute("value", helper.make_tensor("value", HALF, [1], [0.0])))
        elif values[0].t.data_type == FLOAT:
            values[0].t.CopyFrom(half(values[0].t))
