"""Activation layers: ReLU, LeakyReLU, PReLU, ELU, Softmax, ThresholdedReLU."""

from __future__ import annotations

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import resolve_axes
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler

# Keras masks softmax inputs with a large negative number (Keras 3: -1e9; Keras 2: the float32
# minimum). Either way a masked entry's exp underflows to exactly 0 when its row keeps any entry.
MASK_NEGATIVE = -1e9


def keras_relu(b: OpBuilder, x: str, slope: float, max_value: float | None, threshold: float) -> str:
    """`keras.activations.relu` step by step (Keras 2 and 3 share it), so edge cases agree too.

    x > threshold keeps x (else 0), then clip to [0, max_value], then subtract
    slope * relu(threshold - x); with only a slope it is a plain leaky relu.
    """
    if slope != 0.0 and max_value is None and threshold == 0.0:
        return b.op("LeakyRelu", x, alpha=slope)
    if threshold != 0.0:
        keep = b.op("Cast", b.op("Greater", x, b.scalar(threshold, "threshold")), to=1)
        y = b.op("Mul", x, keep)
    elif max_value is not None:  # one Clip(0, max) rather than Relu + Clip: onnxruntime fuses Conv + Clip
        y = x
    else:
        y = b.op("Relu", x)
    if max_value is not None:
        y = b.op("Clip", y, b.scalar(0.0, "zero"), b.scalar(float(max_value), "max_value"))
    if slope != 0.0:
        below = b.op("Relu", b.op("Sub", b.scalar(threshold, "threshold_neg"), x))
        y = b.op("Sub", y, b.op("Mul", below, b.scalar(slope, "negative_slope")))
    return y


@LAYERS.register("ReLU")
class ReLU(LayerHandler):
    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        max_value = node.attrs.get("max_value")
        return [keras_relu(b, inputs[0], float(node.attr("negative_slope", 0.0)),
                           None if max_value is None else float(max_value), float(node.attr("threshold", 0.0)))]


@LAYERS.register("LeakyReLU")
class LeakyReLU(LayerHandler):
    """Keras 2's `alpha` arrives renamed to `negative_slope`; both default to 0.3."""

    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("LeakyRelu", inputs[0], alpha=float(node.attr("negative_slope", 0.3)))]


@LAYERS.register("ELU")
class ELU(LayerHandler):
    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("Elu", inputs[0], alpha=float(node.attr("alpha", 1.0)))]


@LAYERS.register("ThresholdedReLU")
class ThresholdedReLU(LayerHandler):
    """Keras 2 only: x where x > theta, else 0 (ONNX ThresholdedRelu is exactly that)."""

    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("ThresholdedRelu", inputs[0], alpha=float(node.attr("theta", 1.0)))]


@LAYERS.register("PReLU")
class PReLU(LayerHandler):
    """relu(x) - alpha * relu(-x); alpha has the sample shape with 1 on each shared axis."""

    def weight_names(self, node: Node) -> list[str]:
        return ["alpha"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shared = set(_shared_axes(node))
        dims = tuple(1 if i in shared else (d if isinstance(d, int) else None)
                     for i, d in enumerate(input_shapes[0][1:], start=1))
        return {"alpha": dims}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("PRelu", inputs[0], b.weight("alpha"))]


def _shared_axes(node: Node) -> list[int]:
    axes = node.attrs.get("shared_axes")
    if axes is None:
        return []
    return [int(axes)] if isinstance(axes, int) else [int(a) for a in axes]


@LAYERS.register("Softmax")
class Softmax(LayerHandler):
    """Softmax over one axis or several (Keras 3 accepts a list); an optional `mask` tensor kwarg."""

    def check(self, node: Node) -> None:
        extra = set(node.call.tensor_kwargs) - {"mask"}
        if extra:
            raise UnsupportedLayerError(
                f"Softmax '{node.layer_name}' is called with tensor arguments {sorted(extra)}",
                layer=node.layer_name, hint="only `mask` is understood")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        resolve_axes(node, "axis", node.attr("axis", -1), len(input_shapes[0]), batch=True)
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        rank = len(node.inputs[0].shape or ())
        axes = resolve_axes(node, "axis", node.attr("axis", -1), rank, batch=True)
        mask_at = node.call.tensor_kwargs.get("mask")
        x = inputs[0]
        if not mask_at:
            return [softmax(b, x, axes)]
        mask = b.op("Cast", inputs[mask_at[0]], to=9)
        y = softmax(b, b.op("Where", mask, x, b.scalar(MASK_NEGATIVE, "mask_value")), axes)
        if b.keras_major >= 3:  # Keras 3 also zeroes masked entries (a fully masked row is all 0)
            y = b.op("Where", mask, y, b.scalar(0.0, "zero"))
        return [y]


def softmax(b: OpBuilder, x: str, axes: list[int]) -> str:
    """ONNX Softmax normalises one axis; several axes use exp(x - logsumexp(x)), as Keras does."""
    if len(axes) == 1:
        return b.op("Softmax", x, axis=axes[0])
    return b.op("Exp", b.op("Sub", x, b.reduce("ReduceLogSumExp", x, axes, keepdims=True)))
