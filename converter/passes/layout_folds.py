"""The folds after layout assignment: Transposes and Reshapes that a neighbour can absorb, and nested concats.

Each fold asks who reads a tensor many times, so each builds the graph's reader index once
(`Graph.readers`) and keeps it up to date as it rewires: linear in the number of nodes, where asking
`Graph.consumers` per node would make a model of many such nodes quadratic.
"""

from __future__ import annotations

from typing import Protocol, cast

import numpy as np

from converter.ir import Graph, Node, Shape, Tensor
from converter.ir.graph import INTERNAL_TRANSPOSE
from converter.ir.internal import PermSpec
from converter.ir.shape import inverse
from converter.layers.registry import handler_for


class _GlobalPooling(Protocol):
    """What a `global_pooling` handler answers (layers/pooling.py GlobalPooling)."""

    def kept_shape(self, node: Node) -> Shape | None: ...

    def keep_dims(self, node: Node) -> None: ...


class _Joining(Protocol):
    """What Concatenate's handler answers (layers/merge.py)."""

    def joined_axis(self, node: Node) -> int | None: ...


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
        transpose = flatten.inputs[0].producer if flatten.kind == "Flatten" and flatten.inputs else None
        if transpose is None or transpose.kind != INTERNAL_TRANSPOSE or _channels_first(flatten):
            continue
        dense = _only_reader(readers, flatten.outputs[0])
        if dense is None or dense.kind != "Dense" or id(flatten.outputs[0]) in outputs:
            continue
        source = transpose.inputs[0]
        kernel = dense.weights.get("kernel")
        keras_shape = transpose.outputs[0].shape or ()
        if kernel is None or kernel.ndim != 2 or not all(isinstance(d, int) for d in keras_shape[1:]):
            continue
        rank, perm = len(keras_shape), cast(PermSpec, transpose.spec).perm
        inv = inverse(perm)
        dims = [int(d) for d in keras_shape[1:] if isinstance(d, int)]
        rows = kernel.reshape(*dims, kernel.shape[1])
        rows = rows.transpose(*(inv[i] - 1 for i in range(1, rank)), rank - 1)
        # A new dict: a shared Dense layer's other calls keep their own kernel.
        dense.weights = {**dense.weights, "kernel": np.ascontiguousarray(rows.reshape(kernel.shape))}
        flatten.inputs[0] = source
        readers[id(transpose.outputs[0])].pop(id(flatten), None)
        readers.setdefault(id(source), {})[id(flatten)] = flatten
        if not readers[id(transpose.outputs[0])] and id(transpose.outputs[0]) not in outputs:
            removed.add(id(transpose))
    graph.set_nodes([n for n in graph.nodes if id(n) not in removed])


def _channels_first(node: Node) -> bool:
    handler = handler_for(node)
    return handler is not None and handler.is_channels_first(node)


def _global_pooling(node: Node) -> _GlobalPooling | None:
    handler = handler_for(node)
    return cast(_GlobalPooling, handler) if handler is not None and handler.global_pooling else None


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
        reshape = reshape if reshape is not None and reshape.kind == "Reshape" else None
        if reshape is None or id(pool.outputs[0]) in outputs:
            continue
        kept = pooling.kept_shape(pool)
        if kept is None or tuple(reshape.outputs[0].shape or ())[1:] != kept[1:]:
            continue
        pooling.keep_dims(pool)
        pool.outputs[0] = reshape.outputs[0]
        reshape.outputs[0].producer = pool
        removed.add(id(reshape))
    graph.set_nodes([n for n in graph.nodes if id(n) not in removed])


def _concat_axis(node: Node) -> int | None:
    return cast(_Joining, handler_for(node)).joined_axis(node)


def merge_concatenations(graph: Graph) -> None:
    """Concatenate(a, Concatenate(b, c), d) on one axis == Concatenate(a, b, c, d)."""
    readers = _readers(graph)
    outputs = {id(t) for t in graph.outputs}
    present = {id(n) for n in graph.nodes}
    for outer in graph.nodes:
        if outer.kind != "Concatenate" or id(outer) not in present:
            continue
        spliced: list[Tensor] = []
        for tensor in outer.inputs:
            inner = tensor.producer
            mergeable = (inner is not None and inner.kind == "Concatenate" and id(inner) in present
                         and _concat_axis(inner) == _concat_axis(outer) is not None
                         and _only_reader(readers, tensor) is outer and id(tensor) not in outputs)
            if mergeable and inner is not None:
                spliced.extend(inner.inputs)
                present.discard(id(inner))
                for source in {id(t): t for t in inner.inputs}.values():  # outer reads them now
                    users = readers.setdefault(id(source), {})
                    users.pop(id(inner), None)
                    users[id(outer)] = outer
            else:
                spliced.append(tensor)
        outer.inputs = spliced
    graph.set_nodes([n for n in graph.nodes if id(n) in present])
