"""fp16 graphs: onnxruntime's own float16 converter (``onnxruntime.transformers.float16``):
weights and activations in float16, the graph's I/O as exported, chosen modules and the
shape/index arithmetic of the dynamic-size exact pooling kept as they are; and an int8
graph's modules kept out of int8 in fp16 (TensorRT's int8 with fp16 fallback)."""

from __future__ import annotations

import fnmatch

import onnx

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.names import module_of_node


def matching_nodes(model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """Names of nodes whose module (or whole name) matches a pattern; a pattern matching no
    node is an error that lists the modules there are."""
    names: list[str] = []
    for pattern in patterns:
        hits = [n.name for n in model.graph.node
                if fnmatch.fnmatchcase(module_of_node(n.name), pattern)
                or fnmatch.fnmatchcase(n.name, pattern)]
        if not hits:
            modules = sorted({module_of_node(n.name) for n in model.graph.node})
            raise UsageError(f"--fp32-layers {pattern!r} matches no layer; modules are "
                                 f"{', '.join(modules[:6])}, ... (fnmatch, e.g. 'head.*')")
        names += [h for h in hits if h not in names]
    return names


def shape_arithmetic_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute from shapes and constants only, never from pixels: the index and
    window arithmetic of the dynamic-size exact pooling. They keep their types in fp16."""
    data = {i.name for i in model.graph.input}
    index_nodes = []
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type != "Shape" and any(i in data for i in node.input):
            data.update(node.output)
        elif node.op_type not in ("Shape", "Constant"):  # Shape reads any float type
            index_nodes.append(node.name)
    return index_nodes


def to_fp16(model: onnx.ModelProto, fp32_layers: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The fp16 graph: I/O types as they were, ``fp32_layers`` and shape arithmetic in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    keep = matching_nodes(model, fp32_layers) + shape_arithmetic_nodes(model)
    return _float16(model, keep, DEFAULT_OP_BLOCK_LIST)


def _float16(model: onnx.ModelProto, keep: list[str], keep_ops: list[str]) -> onnx.ModelProto:
    """onnxruntime's converter with the nodes ``keep`` and op types ``keep_ops`` as they are,
    then the casts it leaves between kept nodes taken out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]  # stale fp32 annotations; the converter infers anew
    converted = convert_float_to_float16(copy, keep_io_types=True, node_block_list=keep,
                                         op_block_list=keep_ops)
    _skip_fp16_round_trips(converted.graph)
    _drop_identity_casts(converted)
    _sort_topologically(converted.graph)
    return converted


def modules_to_fp16(model: onnx.ModelProto, modules: set[str]) -> onnx.ModelProto:
    """``modules`` of an int8 (Q/DQ) graph in fp16, everything else as it is: TensorRT's
    int8 with fp16 fallback, where the modules are the ones kept out of int8."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    keep = [n.name for n in model.graph.node if module_of_node(n.name) not in modules]
    return _float16(model, keep + shape_arithmetic_nodes(model),
                    [*DEFAULT_OP_BLOCK_LIST, "QuantizeLinear", "DequantizeLinear"])


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) \
        if node.op_type == "Cast" else None


def _skip_fp16_round_trips(graph: onnx.GraphProto) -> None:
    """The converter casts every kept-fp32 node's output to fp16 and back before the next
    kept node. Cast(float)(Cast(float16)(t)) -> Cast(float)(t): chains of kept nodes stay
    exact; casts left without a reader go."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if _cast_to(node) == onnx.TensorProto.FLOAT and first is not None \
                and _cast_to(first) == onnx.TensorProto.FLOAT16:
            node.input[0] = first.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for node in graph.node for i in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _drop_identity_casts(model: onnx.ModelProto) -> None:
    """Casts to the type their input already has (the converter casts float to float around
    nodes it was told to keep): their readers read the input instead."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    outputs = {o.name for o in model.graph.output}
    same = {n.output[0]: n.input[0] for n in model.graph.node
            if _cast_to(n) is not None and types.get(n.input[0]) == _cast_to(n)
            and n.output[0] not in outputs}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            while name in same:
                name = same[name]
            node.input[i] = name
    for node in [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] in same]:
        model.graph.node.remove(node)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """The converter appends its casts at the end; ONNX wants producers before readers."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise SsrDeployError("fp16 conversion produced a cyclic graph; report this with "
                                 "the ONNX file")
        pending = left
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
