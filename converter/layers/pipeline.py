"""keras.layers.Pipeline: its layers (`node.children`, built from the config's `layers` list) applied in
order.

The topology reads each inner layer's weights by its own path and stores them on the Pipeline node as
`<index>/<name>`. The unwrap pass (passes/unwrap.py) replaces the Pipeline by its layers as ordinary
graph nodes in a chain (`unwrap`), named `<pipeline>/<layer>`, each with its own weights, so every later
pass sees them (a Dropout inside is removed, a BatchNormalization folds, the layout pass places the
Transposes). A Pipeline node reaching lowering without the pass is refused (wrappers.refuse_wrapper_emit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape, Tensor
from converter.ir.names import NameAuthority
from converter.ir.spec import NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, handler_for
from converter.layers.wrappers import graph_node_of, refuse_wrapper_emit


def _child_weights(node: Node, index: int) -> dict[str, np.ndarray]:
    prefix = f"{index}/"
    return {k[len(prefix):]: v for k, v in node.weights.items() if k.startswith(prefix)}


def _children(node: Node) -> list[tuple[Node, LayerHandler[Any]]]:
    if not node.children:
        raise UnsupportedLayerError(f"Pipeline '{node.layer_name}' has no layers in its config",
                                    layer=node.layer_name, hint="the config is incomplete")
    pairs = []
    for i, child in enumerate(node.children):
        handler = handler_for(child)
        if handler is None:
            raise UnsupportedLayerError(
                f"Pipeline '{node.layer_name}' holds {child.kind} '{child.name}', which kconvert cannot convert",
                layer=node.layer_name, hint="register a handler for that layer (see README, 'Custom layers')")
        child.weights = _child_weights(node, i)
        pairs.append((child, handler))
    return pairs


@LAYERS.register("Pipeline")
class Pipeline(LayerHandler[NoArgs]):
    keras_availability = "keras3"

    def check(self, node: Node) -> None:
        if len(node.inputs) > 1:
            raise UnsupportedLayerError(f"Pipeline '{node.layer_name}' is called on several tensors",
                                        layer=node.layer_name, hint="only a single-tensor Pipeline converts")
        for child, handler in _children(node):
            handler.check(child)
            if handler.num_outputs(child) != 1:
                raise UnsupportedLayerError(f"Pipeline '{node.layer_name}' holds {child.kind} '{child.name}', "
                                            "which has several outputs", layer=node.layer_name,
                                            hint="a Pipeline passes one tensor from layer to layer")

    def weight_names(self, node: Node) -> list[str]:
        return [f"{i}/{name}" for i, (child, handler) in enumerate(_children(node))
                for name in handler.weight_names(child)]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shapes: dict[str, tuple[int | None, ...]] = {}
        shape = input_shapes[0]
        for i, (child, handler) in enumerate(_children(node)):
            shapes.update({f"{i}/{k}": v for k, v in handler.weight_shapes(child, [shape]).items()})
            shape = handler.output_shapes(child, [shape])[0]
        return shapes

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        dtype = node.inputs[0].dtype if node.inputs else "float32"
        for child, handler in _children(node):
            out = tuple(handler.output_shapes(child, [shape])[0])
            # The children's own tensors carry their shapes, for handlers that read them while emitting.
            child.inputs = [Tensor(f"{node.name}/{child.name}/input", shape, dtype)]
            child.outputs = [Tensor(f"{node.name}/{child.name}", out, producer=child)]
            shape = out
        return [shape]

    def unwrap(self, node: Node, names: NameAuthority) -> list[Node]:
        """The layers as a chain of graph nodes; the last produces the Pipeline's own output tensor."""
        chain: list[Node] = []
        x = node.inputs[0]
        children = [child for child, _ in _children(node)]
        for i, child in enumerate(children):
            name = names.unique(f"{node.name}/{child.name}")
            out = node.outputs[0] if i == len(children) - 1 else Tensor(name)
            chain.append(graph_node_of(child, name, [x], out, _child_weights(node, i)))
            x = out
        return chain

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        raise refuse_wrapper_emit(node)
