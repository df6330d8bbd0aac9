"""The order in which Keras 3 lists a Functional model's layers (`model.layers`, `config["layers"]`).

Keras 3 numbers a model's weight groups by that order (`layers/dense`, `layers/dense_1`, ...), so
a written archive must list its layers, and name its weight groups, exactly as Keras 3 will
recompute them on load. This is `map_graph` from keras/src/ops/function.py: a depth-first walk from
the outputs gives each layer its first-visit index and each call a depth (the longest path to an
output); layers are sorted by depth, deepest first, ties by first-visit index. Inputs that reach no
output come last among depth 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from converter.ir import Graph, Tensor

Call = int  # id() of a Node, or of a graph input Tensor (the call of its InputLayer)


def keras_order(graph: Graph, layer_of: dict[Call, str]) -> list[str]:
    """Layer names in Keras 3's order; `layer_of` maps each node and graph input to its layer."""
    parents = _parents(graph)
    roots = [_producer_call(t) for t in graph.outputs]
    order, first_visit = _depth_first(roots, parents, layer_of)
    depth_of_call: dict[Call, int] = {}
    depth_of_layer: dict[str, int] = {}
    for call in reversed(order):
        depth = depth_of_call.setdefault(call, 0)
        depth = max(depth, depth_of_layer.get(layer_of[call], 0))
        depth_of_layer[layer_of[call]] = depth
        depth_of_call[call] = depth
        for parent in parents[call]:
            depth_of_call[parent] = max(depth + 1, depth_of_call.get(parent, 0))
    for tensor in graph.inputs:
        name = layer_of[id(tensor)]
        if name not in depth_of_layer:
            depth_of_layer[name], first_visit[name] = 0, -1
    return sorted(depth_of_layer, key=lambda name: (-depth_of_layer[name], first_visit[name]))


def _producer_call(tensor: Tensor) -> Call:
    return id(tensor.producer) if tensor.producer is not None else id(tensor)


def _parents(graph: Graph) -> dict[Call, list[Call]]:
    parents: dict[Call, list[Call]] = {id(t): [] for t in graph.inputs}
    for node in graph.nodes:
        parents[id(node)] = [_producer_call(t) for t in node.inputs]
    return parents


def _depth_first(roots: list[Call], parents: dict[Call, list[Call]],
                 layer_of: dict[Call, str]) -> tuple[list[Call], dict[str, int]]:
    """Calls in post-order (inputs first) and each layer's first-visit index; iterative, so deep
    models do not reach Python's recursion limit."""
    finished: set[Call] = set()
    order: list[Call] = []
    first_visit: dict[str, int] = {}

    def enter(call: Call) -> tuple[Call, Iterator[Call]]:
        first_visit.setdefault(layer_of[call], len(first_visit))
        return call, iter(parents[call])

    for root in roots:
        if root in finished:
            continue
        stack = [enter(root)]
        while stack:
            call, pending = stack[-1]
            following = next((p for p in pending if p not in finished), None)
            if following is None:
                stack.pop()
                finished.add(call)
                order.append(call)
            else:
                stack.append(enter(following))
    return order, first_visit

