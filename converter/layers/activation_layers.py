"""Activation layers: ReLU, LeakyReLU, PReLU, ELU, Softmax, ThresholdedReLU."""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import AxisArg, parse_axis_arg, resolve_spec_axes
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields

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


@dataclass(frozen=True)
class ReLUSpec(LayerSpec):
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0


@LAYERS.register("ReLU")
class ReLU(LayerHandler[ReLUSpec]):
    keras3_args = "max_value negative_slope threshold"
    layout_agnostic = True
    passes_mask = True

    def output_non_negative(self, node: Node) -> bool:
        spec = self.spec(node)
        return spec.negative_slope == 0.0 and spec.threshold >= 0.0

    def parse(self, config: Config) -> ReLUSpec:
        return parse_fields(ReLUSpec, config)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        return [keras_relu(b, inputs[0], spec.negative_slope, spec.max_value, spec.threshold)]


@dataclass(frozen=True)
class LeakyReLUSpec(LayerSpec):
    negative_slope: float = 0.3


@LAYERS.register("LeakyReLU")
class LeakyReLU(LayerHandler[LeakyReLUSpec]):
    """Keras 2's `alpha` arrives renamed to `negative_slope`; both default to 0.3."""

    keras3_args = "negative_slope"

    layout_agnostic = True
    passes_mask = True

    def parse(self, config: Config) -> LeakyReLUSpec:
        return parse_fields(LeakyReLUSpec, config)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("LeakyRelu", inputs[0], alpha=self.spec(node).negative_slope)]


@dataclass(frozen=True)
class ELUSpec(LayerSpec):
    alpha: float = 1.0


@LAYERS.register("ELU")
class ELU(LayerHandler[ELUSpec]):
    keras3_args = "alpha"
    layout_agnostic = True
    passes_mask = True

    def parse(self, config: Config) -> ELUSpec:
        return parse_fields(ELUSpec, config)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("Elu", inputs[0], alpha=self.spec(node).alpha)]


@dataclass(frozen=True)
class ThresholdedReLUSpec(LayerSpec):
    theta: float = 1.0


@LAYERS.register("ThresholdedReLU")
class ThresholdedReLU(LayerHandler[ThresholdedReLUSpec]):
    """Keras 2 only: x where x > theta, else 0 (ONNX ThresholdedRelu is exactly that)."""

    keras_availability = "keras2"

    layout_agnostic = True

    def parse(self, config: Config) -> ThresholdedReLUSpec:
        return parse_fields(ThresholdedReLUSpec, config)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("ThresholdedRelu", inputs[0], alpha=self.spec(node).theta)]


@dataclass(frozen=True)
class PReLUSpec(LayerSpec):
    shared_axes: tuple[int, ...] = ()


@LAYERS.register("PReLU")
class PReLU(LayerHandler[PReLUSpec]):
    """relu(x) - alpha * relu(-x); alpha has the sample shape with 1 on each shared axis."""

    keras3_args = "alpha_initializer alpha_regularizer alpha_constraint shared_axes"

    passes_mask = True

    def parse(self, config: Config) -> PReLUSpec:
        return parse_fields(PReLUSpec, config)

    def weight_names(self, node: Node) -> list[str]:
        return ["alpha"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shared = set(self.spec(node).shared_axes)
        dims = tuple(1 if i in shared else (d if isinstance(d, int) else None)
                     for i, d in enumerate(input_shapes[0][1:], start=1))
        return {"alpha": dims}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.op("PRelu", inputs[0], b.weight("alpha"))]


@dataclass(frozen=True)
class SoftmaxSpec(LayerSpec):
    axis: AxisArg = -1
    # Keras 3 also zeroes masked entries after the softmax (a fully masked row is all 0); Keras 2 does not.
    zero_masked: bool = True


@LAYERS.register("Softmax")
class Softmax(LayerHandler[SoftmaxSpec]):
    """Softmax over one axis or several (Keras 3 accepts a list); an optional `mask` tensor kwarg."""

    keras3_args = "axis"

    passes_mask = True

    def parse(self, config: Config) -> SoftmaxSpec:
        return SoftmaxSpec(axis=parse_axis_arg(config, "axis"), zero_masked=config.ctx.keras3)

    def check(self, node: Node) -> None:
        extra = set(node.call.tensor_kwargs) - {"mask"}
        if extra:
            raise UnsupportedLayerError(
                f"Softmax '{node.layer_name}' is called with tensor arguments {sorted(extra)}",
                layer=node.layer_name, hint="only `mask` is understood")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        resolve_spec_axes(node, "axis", self.spec(node).axis, len(input_shapes[0]), batch=True)
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        rank = len(node.inputs[0].shape or ())
        axes = resolve_spec_axes(node, "axis", self.spec(node).axis, rank, batch=True)
        mask_at = node.call.tensor_positions("mask")
        x = inputs[0]
        if not mask_at:
            return [softmax(b, x, axes)]
        mask = b.op("Cast", inputs[mask_at[0]], to=9)
        y = softmax(b, b.op("Where", mask, x, b.scalar(MASK_NEGATIVE, "mask_value")), axes)
        if self.spec(node).zero_masked:
            y = b.op("Where", mask, y, b.scalar(0.0, "zero"))
        return [y]


def softmax(b: OpBuilder, x: str, axes: list[int]) -> str:
    """ONNX Softmax normalises one axis; several axes use exp(x - logsumexp(x)), as Keras does."""
    if len(axes) == 1:
        return b.op("Softmax", x, axis=axes[0])
    return b.op("Exp", b.op("Sub", x, b.reduce("ReduceLogSumExp", x, axes, keepdims=True)))
