"""Cleanup: inference-time identities (Dropout family, GaussianNoise, ...) removed; dead nodes dropped."""

from __future__ import annotations

from converter.ir import Graph
from converter.layers.registry import handler_for


def run(graph: Graph) -> Graph:
    for node in list(graph.nodes):
        handler = handler_for(node)
        if handler is not None and handler.inference_identity and len(node.inputs) == 1:
            graph.replace_uses(node.outputs[0], node.inputs[0])
            graph.nodes.remove(node)
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
