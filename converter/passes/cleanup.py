"""Cleanup: inference-time identities (Dropout family, GaussianNoise, ...) removed; nodes that undo their
input's producer (TimeDistributed's split of batch and time feeding the next one's merge) removed; dead
nodes dropped."""

from __future__ import annotations

from typing import Any

from converter.ir import Graph, Node, Tensor
from converter.layers.registry import LayerHandler, handler_for
from converter.layers.traits import Undoes


def run(graph: Graph) -> Graph:
    """One walk in topological order: an identity's output is an alias of its input, and every later
    read of it reads the input instead (linear, however many identities a model chains)."""
    alias: dict[int, Tensor] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [alias.get(id(t), t) for t in node.inputs]
        same = _same_as(node, handler_for(node))
        if same is not None:
            alias[id(node.outputs[0])] = same
        else:
            kept.append(node)
    graph.nodes = kept
    graph.outputs = [alias.get(id(t), t) for t in graph.outputs]
    _remove_dead(graph)
    return graph


def _same_as(node: Node, handler: LayerHandler[Any] | None) -> Tensor | None:
    """The tensor the node's one output equals, when the node computes nothing at inference."""
    if handler is None or not node.inputs:
        return None
    if handler.inference_identity and len(node.inputs) == 1:
        return node.inputs[0]
    return handler.undone(node) if isinstance(handler, Undoes) and len(node.outputs) == 1 else None


def _remove_dead(graph: Graph) -> None:
    live = {id(t) for t in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(id(t) in live for t in node.outputs):
            kept.append(node)
            live.update(id(t) for t in node.inputs)
    graph.nodes = list(reversed(kept))
