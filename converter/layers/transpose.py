"""The layout pass's own Transpose node (not a Keras class): a permutation of all axes, batch included."""

from __future__ import annotations

from converter.ir.graph import INTERNAL_TRANSPOSE
from converter.ir import Node, Shape
from converter.ir.shape import permute
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler


@LAYERS.register(INTERNAL_TRANSPOSE)
class Transpose(LayerHandler):
    internal = True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [permute(input_shapes[0], tuple(node.attrs["perm"]))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.transpose(inputs[0], node.attrs["perm"])]
