"""Shape inference: every tensor gets its shape from its layer's rule; weights must fit.

A weight whose stored shape differs from what the layer's config and input imply is a WeightsError
naming the layer, the expected and the found shape.
"""

from __future__ import annotations

from converter.errors import WeightsError
from converter.ir import Graph, Node, Shape
from converter.layers.registry import handler_for


def run(graph: Graph) -> Graph:
    for node in graph.nodes:
        infer(node)
    return graph


def infer(node: Node) -> None:
    """One node's output shapes from its inputs' (and its weights checked against them): also for the
    nodes a later pass creates (the unwrap pass's former wrapper children)."""
    handler = handler_for(node)
    if handler is None:
        return
    input_shapes: list[Shape] = [t.shape or () for t in node.inputs]
    _check_weights(node, handler.weight_shapes(node, input_shapes))
    for tensor, shape in zip(node.outputs, handler.output_shapes(node, input_shapes)):
        tensor.shape = tuple(shape)
    for tensor, dtype in zip(node.outputs, handler.output_dtypes(node) or []):
        tensor.dtype = dtype


def _check_weights(node: Node, expected: dict[str, tuple[int | None, ...]]) -> None:
    for key, want in expected.items():
        array = node.weights.get(key)
        if array is None:
            continue
        fits = len(array.shape) == len(want) and all(w is None or w == a for w, a in zip(want, array.shape))
        if not fits:
            shown = tuple("?" if w is None else w for w in want)
            raise WeightsError(
                f"{node.kind} '{node.layer_name}': weight '{key}' should have shape {shown} "
                f"but the file holds {tuple(array.shape)}",
                layer=node.layer_name,
                hint="the weights do not belong to this architecture (or the input shape is wrong)",
            )
