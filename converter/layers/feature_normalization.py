"""Per-sample normalisations over features: LayerNormalization, RMSNormalization, GroupNormalization,
UnitNormalization. Each normalises every sample by statistics of its own values (unlike BatchNormalization,
batch_normalization.py, whose statistics were gathered over batches while training).

RMSNormalization follows `keras.ops.rms_normalization`: x * rsqrt(mean(x**2, axis) + epsilon) * scale,
where `scale` keeps the shape Keras built it with (the normalised dims, in sorted-axis order) and is
multiplied with numpy broadcasting, exactly as Keras multiplies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import AxisArg, parse_axis_arg, resolve_spec_axes, resolve_spec_axis
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields


def norm_axes(node: Node, value: AxisArg, rank: int) -> list[int]:
    """A spec's axis (an int or a tuple; the parse made a null the last axis) -> sorted positive sample axes."""
    return resolve_spec_axes(node, "axis", value, rank)


def moments(b: OpBuilder, x: str, axes: Sequence[int]) -> tuple[str, str]:
    """Mean and (two-pass) variance with kept dims, as tf.nn.moments computes them."""
    mean = b.reduce("ReduceMean", x, axes, keepdims=True)
    centered = b.op("Sub", x, mean)
    return mean, b.reduce("ReduceMean", b.op("Mul", centered, centered), axes, keepdims=True)


def broadcast_param(node: Node, b: OpBuilder, key: str, axes: Sequence[int], dims: Shape) -> str:
    """A parameter reshaped the way Keras reshapes it: its flat values into 1s except on `axes`."""
    shape = [int(d) if a in axes and isinstance(d, int) else 1 for a, d in enumerate(dims)]
    return b.weight(key, np.reshape(node.weights[key], shape))


@dataclass(frozen=True)
class LayerNormSpec(LayerSpec):
    axis: AxisArg = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    rms_scaling: bool = False


@LAYERS.register("LayerNormalization")
class LayerNormalization(LayerHandler[LayerNormSpec]):
    """(x - mean) / sqrt(var + eps) * gamma + beta over `axis` (an int or a list of axes)."""

    keras3_args = ("axis epsilon center scale beta_initializer gamma_initializer beta_regularizer "
                   "gamma_regularizer beta_constraint gamma_constraint rms_scaling")

    passes_mask = True

    def parse(self, config: Config) -> LayerNormSpec:
        return parse_fields(LayerNormSpec, config, axis=parse_axis_arg(config, "axis"))

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = ["gamma"] if spec.scale or spec.rms_scaling else []
        return names + (["beta"] if spec.center and not spec.rms_scaling else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        # Keras stores gamma/beta with the normalised axes' dims in its own axis order (which differs
        # between Keras 2 and 3) and reshapes their flat values; only the element count must agree.
        shape = input_shapes[0]
        dims = [shape[a] for a in norm_axes(node, self.spec(node).axis, len(shape))]
        count = int(np.prod([d for d in dims if isinstance(d, int)]))
        return {k: tuple(w.shape) if w.size == count else (count,) for k, w in node.weights.items()}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        for a in norm_axes(node, self.spec(node).axis, len(shape)):
            if a == 0 or not isinstance(shape[a], int):
                raise ShapeError(f"LayerNormalization '{node.layer_name}' normalises axis {a}, "
                                 f"whose size is unknown in {shape}", layer=node.layer_name,
                                 hint="give the input a static size on the normalised axes")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = inputs[0], node.inputs[0].shape or ()
        rank = len(shape)
        spec = self.spec(node)
        axes = norm_axes(node, spec.axis, rank)
        eps = spec.epsilon
        if spec.rms_scaling:
            # Keras' deprecated rms_scaling: x * rsqrt(var + eps) * gamma (the variance, not the RMS).
            _, var = moments(b, x, axes)
            y = b.op("Div", x, b.op("Sqrt", b.op("Add", var, b.scalar(eps, "epsilon"))))
            return [b.op("Mul", y, broadcast_param(node, b, "gamma", axes, shape)) if "gamma" in node.weights else y]
        if b.opset >= 17 and axes == list(range(axes[0], rank)):
            return [_fused(node, b, x, axes, shape, eps)]
        mean, var = moments(b, x, axes)
        y = b.op("Div", b.op("Sub", x, mean), b.op("Sqrt", b.op("Add", var, b.scalar(eps, "epsilon"))))
        if "gamma" in node.weights:
            y = b.op("Mul", y, broadcast_param(node, b, "gamma", axes, shape))
        if "beta" in node.weights:
            y = b.op("Add", y, broadcast_param(node, b, "beta", axes, shape))
        return [y]


def _fused(node: Node, b: OpBuilder, x: str, axes: list[int], shape: Shape, eps: float) -> str:
    """ONNX LayerNormalization (opset 17) normalises every axis from `axis` on: trailing axes only."""
    trailing = [int(shape[a]) for a in axes]  # type: ignore[arg-type]
    gamma = b.weight("gamma", np.reshape(node.weights["gamma"], trailing)) if "gamma" in node.weights \
        else b.const(np.ones(trailing, np.float32), "gamma")
    args = [x, gamma]
    if "beta" in node.weights:
        args.append(b.weight("beta", np.reshape(node.weights["beta"], trailing)))
    return b.op("LayerNormalization", *args, axis=axes[0], epsilon=eps)


@dataclass(frozen=True)
class GroupNormSpec(LayerSpec):
    groups: int = 32  # -1: one group per channel
    axis: AxisArg = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True


@LAYERS.register("GroupNormalization")
class GroupNormalization(LayerHandler[GroupNormSpec]):
    """Channels split into `groups`; each group normalised over itself and every non-batch axis."""

    keras3_args = ("groups axis epsilon center scale beta_initializer gamma_initializer "
                   "beta_regularizer gamma_regularizer beta_constraint gamma_constraint")

    passes_mask = True

    argument_kinds = {"groups": "positive_or_minus_one"}  # -1: one group per channel

    def parse(self, config: Config) -> GroupNormSpec:
        spec = parse_fields(GroupNormSpec, config, axis=parse_axis_arg(config, "axis"))
        if spec.groups == 0:
            name = config.ctx.layer_name
            raise UnsupportedLayerError(f"GroupNormalization '{name}' has groups=0",
                                        layer=name, hint="groups must divide the channels")
        return spec

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        return (["gamma"] if spec.scale else []) + (["beta"] if spec.center else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shape = input_shapes[0]
        channels = shape[_group_axis(node, self.spec(node), len(shape))]
        dim = channels if isinstance(channels, int) else None
        return {"gamma": (dim,), "beta": (dim,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels = shape[_group_axis(node, self.spec(node), len(shape))]
        groups = _groups(self.spec(node), channels)
        if not isinstance(channels, int) or channels % groups:
            raise ShapeError(f"GroupNormalization '{node.layer_name}': {groups} groups do not divide "
                             f"{channels} channels", layer=node.layer_name,
                             hint="groups must divide the (static) size of the axis it splits")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = inputs[0], node.inputs[0].shape or ()
        rank = len(shape)
        axis = _group_axis(node, self.spec(node), rank)
        channels = int(shape[axis])  # type: ignore[arg-type]
        groups = _groups(self.spec(node), channels)
        dims = b.op("Shape", x)
        grouped_shape = b.op("Concat", b.slice(dims, [0], [axis], [0]),
                             b.ints([groups, channels // groups], "groups"),
                             b.slice(dims, [axis + 1], [rank], [0]), axis=0)
        grouped = b.op("Reshape", x, grouped_shape)
        reduce_axes = [a for a in range(1, rank + 1) if a != axis]
        mean, var = moments(b, grouped, reduce_axes)
        eps = b.scalar(self.spec(node).epsilon, "epsilon")
        y = b.op("Reshape", b.op("Div", b.op("Sub", grouped, mean), b.op("Sqrt", b.op("Add", var, eps))), dims)
        if "gamma" in node.weights:
            y = b.op("Mul", y, broadcast_param(node, b, "gamma", [axis], shape))
        if "beta" in node.weights:
            y = b.op("Add", y, broadcast_param(node, b, "beta", [axis], shape))
        return [y]


def _group_axis(node: Node, spec: GroupNormSpec, rank: int) -> int:
    return resolve_spec_axis(node, "axis", spec.axis, rank)


def _groups(spec: GroupNormSpec, channels: Any) -> int:
    return channels if spec.groups == -1 and isinstance(channels, int) else spec.groups


@dataclass(frozen=True)
class UnitNormSpec(LayerSpec):
    axis: AxisArg = -1
    # Keras 3 caps 1 / norm at 1e12; Keras 1/2 floor the squared norm at 1e-12 (different at tiny norms).
    cap_inverse_norm: bool = True


@LAYERS.register("UnitNormalization")
class UnitNormalization(LayerHandler[UnitNormSpec]):
    """x / ||x||_2 over `axis`; the floor on the norm differs: Keras 3 1e-12, Keras 2 1e-6 (sqrt of 1e-12)."""

    keras3_args = "axis"

    passes_mask = True

    def parse(self, config: Config) -> UnitNormSpec:
        return UnitNormSpec(axis=parse_axis_arg(config, "axis"), cap_inverse_norm=config.ctx.keras3)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        axes = norm_axes(node, self.spec(node).axis, len(node.inputs[0].shape or ()))
        square_sum = b.reduce("ReduceSum", b.op("Mul", x, x), axes, keepdims=True)
        if self.spec(node).cap_inverse_norm:
            inv = b.op("Min", b.op("Reciprocal", b.op("Sqrt", square_sum)), b.scalar(1e12, "max_inv_norm"))
        else:
            inv = b.op("Reciprocal", b.op("Sqrt", b.op("Max", square_sum, b.scalar(1e-12, "epsilon"))))
        return [b.op("Mul", x, inv)]


@dataclass(frozen=True)
class RMSNormSpec(LayerSpec):
    axis: AxisArg = -1
    epsilon: float = 1e-6


def _rms_axes(node: Node, spec: RMSNormSpec, rank: int) -> list[int]:
    return resolve_spec_axes(node, "axis", spec.axis, rank)


@LAYERS.register("RMSNormalization")
class RMSNormalization(LayerHandler[RMSNormSpec]):
    keras_availability = "keras3"

    def parse(self, config: Config) -> RMSNormSpec:
        return parse_fields(RMSNormSpec, config, axis=parse_axis_arg(config, "axis"))

    def weight_names(self, node: Node) -> list[str]:
        return ["scale"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shape = input_shapes[0]
        dims = [shape[a] for a in _rms_axes(node, self.spec(node), len(shape))]
        return {"scale": tuple(d if isinstance(d, int) else None for d in dims)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        _rms_axes(node, self.spec(node), len(shape))
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        axes = _rms_axes(node, self.spec(node), len(node.inputs[0].shape or ()))
        mean_square = b.reduce("ReduceMean", b.op("Mul", x, x), axes, keepdims=True)
        eps = b.scalar(self.spec(node).epsilon, "epsilon")
        inv_rms = b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean_square, eps)))
        return [b.op("Mul", b.op("Mul", x, inv_rms), b.weight("scale"))]
