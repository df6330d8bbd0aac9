"""Cleanup: inference-time identities (Dropout family, GaussianNoise, ...) removed; dead nodes dropped."""

from __future__ import annotations

from converter.ir import Graph, Node, Tensor
from converter.layers.registry import handler_for


def run(graph: Graph) -> Graph:
    """One walk in topological order: an identity's output is an alias of its input, and every later
    read of it reads the input instead (linear, however many identities a model chains)."""
    alias: dict[int, Tensor] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [alias.get(id(t), t) for t in node.inputs]
        handler = handler_for(node)
        if handler is not None and handler.inference_identity and len(node.inputs) == 1:
            alias[id(node.outputs[0])] = node.inputs[0]
        else:
            kept.append(node)
    graph.nodes = kept
    graph.outputs = [alias.get(id(t), t) for t in graph.outputs]
    _remove_dead(graph)
    return graph


def _remove_dead(graph: Graph) -> None:
    live = {id(t) for t in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(id(t) in live for t in node.outputs):
            kept.append(node)
            live.update(id(t) for t in node.inputs)
    graph.nodes = list(reversed(kept))
