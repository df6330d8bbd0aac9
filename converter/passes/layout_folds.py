"""The folds after layout assignment: Transposes and Reshapes that a neighbour can absorb, and nested concats.

Each fold asks who reads a tensor many times, so each builds the graph's reader index once
(`Graph.readers`) and keeps it up to date as it rewires: linear in the number of nodes, where asking
`Graph.consumers` per node would make a model of many such nodes quadratic.
"""

from __future__ import annotations

from typing import cast

from converter.ir import Graph, Node, Tensor
from converter.ir.internal import INTERNAL_TRANSPOSE, PermSpec
from converter.ir.shape import inverse
from converter.layers.registry import handler_for
from converter.layers.traits import GlobalPooling, Joins, PermutesInputFeatures, PureReshape

Readers = dict[int, dict[int, Node]]  # tensor id -> {node id: node}, in node order


def _readers(graph: Graph) -> Readers:
    return {tensor_id: {id(n): n for n in nodes} for tensor_id, nodes in graph.readers().items()}


def _only_reader(readers: Readers, tensor: Tensor) -> Node | None:
    users = readers.get(id(tensor), {})
    return next(iter(users.values())) if len(users) == 1 else None


def fold_flatten_dense(graph: Graph) -> None:
    """Dense(Flatten(Transpose_p(x))) == Dense'(Flatten(x)) with the kernel's rows permuted by p."""
    readers = _readers(graph)
    outputs = {id(t) for t in graph.outputs}
    removed: set[int] = set()
    for flatten in graph.nodes:
        transpose = flatten.inputs[0].producer if _reshapes_only(flatten) and flatten.inputs else None
        if transpose is None or transpose.kind != INTERNAL_TRANSPOSE or len(flatten.outputs[0].shape or ()) != 2:
            continue
        dense = _only_reader(readers, flatten.outputs[0])
        reader = None if dense is None else handler_for(dense)
        if dense is None or not isinstance(reader, PermutesInputFeatures) or id(flatten.outputs[0]) in outputs:
            continue
        source = transpose.inputs[0]
        keras_shape = transpose.outputs[0].shape or ()
        if not all(isinstance(d, int) for d in keras_shape[1:]):
            continue
        rank, perm = len(keras_shape), cast(PermSpec, transpose.spec).perm
        inv = inverse(perm)
        dims = tuple(int(d) for d in keras_shape[1:] if isinstance(d, int))
        if not reader.permute_input_features(dense, dims, tuple(inv[i] - 1 for i in range(1, rank))):
            continue
        flatten.inputs[0] = source
        for tensor in dense.outputs:  # the Flatten's ops feed the Dense's value alone now
            tensor.origin = None if tensor.origin is None else tensor.origin.folding(flatten.outputs[0].origin)
        flatten.outputs[0].origin = None  # its features are in channels-first order now, not Keras'
        readers[id(transpose.outputs[0])].pop(id(flatten), None)
        readers.setdefault(id(source), {})[id(flatten)] = flatten
        if not readers[id(transpose.outputs[0])] and id(transpose.outputs[0]) not in outputs:
            removed.add(id(transpose))
    graph.set_nodes([n for n in graph.nodes if id(n) not in removed])


def _reshapes_only(node: Node) -> bool:
    handler = handler_for(node)
    return isinstance(handler, PureReshape) and handler.reshapes_only(node)


def _global_pooling(node: Node) -> GlobalPooling | None:
    handler = handler_for(node)
    ok = handler is not None and handler.global_pooling and isinstance(handler, GlobalPooling)
    return cast(GlobalPooling, handler) if ok else None


def fold_pool_reshape(graph: Graph) -> None:
    """Reshape(GlobalPool(x)) to exactly the pooled shape with keepdims == GlobalPool(x, keepdims=True)."""
    readers = _readers(graph)
    outputs = {id(t) for t in graph.outputs}
    removed: set[int] = set()
    for pool in graph.nodes:
        pooling = _global_pooling(pool)
        if pooling is None or len(pool.outputs) != 1:
            continue
        reshape = _only_reader(readers, pool.outputs[0])
        reshape = reshape if reshape is not None and _reshapes_only(reshape) else None
        if reshape is None or id(pool.outputs[0]) in outputs:
            continue
        kept = pooling.kept_shape(pool)
        if kept is None or tuple(reshape.outputs[0].shape or ())[1:] != kept[1:]:
            continue
        pooling.keep_dims(pool)
        kept_value = reshape.outputs[0]
        kept_value.origin = None if kept_value.origin is None else kept_value.origin.folding(pool.outputs[0].origin)
        pool.outputs[0] = kept_value
        reshape.outputs[0].producer = pool
        removed.add(id(reshape))
    graph.set_nodes([n for n in graph.nodes if id(n) not in removed])


def _concat_axis(node: Node | None) -> int | None:
    handler = None if node is None else handler_for(node)
    return handler.joined_axis(node) if node is not None and isinstance(handler, Joins) else None


def merge_concatenations(graph: Graph) -> None:
    """Concatenate(a, Concatenate(b, c), d) on one axis == Concatenate(a, b, c, d)."""
    readers = _readers(graph)
    outputs = {id(t) for t in graph.outputs}
    present = {id(n) for n in graph.nodes}
    for outer in graph.nodes:
        if _concat_axis(outer) is None or id(outer) not in present:
            continue
        spliced: list[Tensor] = []
        for tensor in outer.inputs:
            inner = tensor.producer
            mergeable = (inner is not None and id(inner) in present
                         and _concat_axis(inner) == _concat_axis(outer) is not None
                         and _only_reader(readers, tensor) is outer and id(tensor) not in outputs)
            if mergeable and inner is not None:
                spliced.extend(inner.inputs)
                for value in outer.outputs:  # the outer concatenation computes the inner one's part too
                    value.origin = None if value.origin is None else value.origin.folding(tensor.origin)
                present.discard(id(inner))
                for source in {id(t): t for t in inner.inputs}.values():  # outer reads them now
                    users = readers.setdefault(id(source), {})
                    users.pop(id(inner), None)
                    users[id(outer)] = outer
            else:
                spliced.append(tensor)
        outer.inputs = spliced
    graph.set_nodes([n for n in graph.nodes if id(n) in present])
