"""Layers that Keras Applications define for themselves (not exported by `keras.layers`) and that
saved application models contain: ConvNeXt's LayerScale and StochasticDepth
(keras/src/applications/convnext.py; tf_keras/src/applications/convnext.py defines the same two).
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.ir import Node, Shape
from converter.ir.spec import NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class LayerScaleSpec(LayerSpec):
    projection_dim: int | None = None  # None: gamma's length is the input's last dim


@LAYERS.register("LayerScale")
class LayerScale(LayerHandler[LayerScaleSpec]):
    """`x * gamma`, gamma of shape (projection_dim,) broadcast over the last axis."""

    keras_availability = "file"

    def parse(self, config: Config) -> LayerScaleSpec:
        return parse_fields(LayerScaleSpec, config)

    def weight_names(self, node: Node) -> list[str]:
        return ["gamma"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        dim = self.spec(node).projection_dim
        last = input_shapes[0][-1]
        if dim is None:
            dim = last if isinstance(last, int) else None
        return {"gamma": (dim,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_min_rank(node, input_shapes[0], 2)
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("Mul", inputs[0], b.weight("gamma"))]


@LAYERS.register("StochasticDepth")
class StochasticDepth(LayerHandler[NoArgs]):
    """Drops whole residual branches only when called with training=True; returns x at inference."""

    keras_availability = "file"

    inference_identity = True
    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [inputs[0]]
