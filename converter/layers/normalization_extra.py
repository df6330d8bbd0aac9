"""LayerNormalization, GroupNormalization and UnitNormalization (BatchNormalization is in normalization.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import resolve_axes, resolve_axis
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler


def norm_axes(node: Node, value: Any, rank: int) -> list[int]:
    """Config axis (int, list, or None meaning the last) -> sorted positive sample axes."""
    return resolve_axes(node, "axis", -1 if value is None else value, rank)


def moments(b: OpBuilder, x: str, axes: Sequence[int]) -> tuple[str, str]:
    """Mean and (two-pass) variance with kept dims, as tf.nn.moments computes them."""
    mean = b.reduce("ReduceMean", x, axes, keepdims=True)
    centered = b.op("Sub", x, mean)
    return mean, b.reduce("ReduceMean", b.op("Mul", centered, centered), axes, keepdims=True)


def broadcast_param(node: Node, b: OpBuilder, key: str, axes: Sequence[int], dims: Shape) -> str:
    """A parameter reshaped the way Keras reshapes it: its flat values into 1s except on `axes`."""
    shape = [int(d) if a in axes and isinstance(d, int) else 1 for a, d in enumerate(dims)]
    return b.weight(key, np.reshape(node.weights[key], shape))


@LAYERS.register("LayerNormalization")
class LayerNormalization(LayerHandler):
    """(x - mean) / sqrt(var + eps) * gamma + beta over `axis` (an int or a list of axes)."""

    def weight_names(self, node: Node) -> list[str]:
        rms = bool(node.attr("rms_scaling", False))
        names = ["gamma"] if node.attr("scale", True) or rms else []
        return names + (["beta"] if node.attr("center", True) and not rms else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        # Keras stores gamma/beta with the normalised axes' dims in its own axis order (which differs
        # between Keras 2 and 3) and reshapes their flat values; only the element count must agree.
        shape = input_shapes[0]
        dims = [shape[a] for a in norm_axes(node, node.attrs.get("axis"), len(shape))]
        count = int(np.prod([d for d in dims if isinstance(d, int)]))
        return {k: tuple(w.shape) if w.size == count else (count,) for k, w in node.weights.items()}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        for a in norm_axes(node, node.attrs.get("axis"), len(shape)):
            if a == 0 or not isinstance(shape[a], int):
                raise ShapeError(f"LayerNormalization '{node.layer_name}' normalises axis {a}, "
                                 f"whose size is unknown in {shape}", layer=node.layer_name,
                                 hint="give the input a static size on the normalised axes")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = inputs[0], node.inputs[0].shape or ()
        rank = len(shape)
        axes = norm_axes(node, node.attrs.get("axis"), rank)
        eps = float(node.attr("epsilon", 1e-3))
        if node.attr("rms_scaling", False):
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


@LAYERS.register("GroupNormalization")
class GroupNormalization(LayerHandler):
    """Channels split into `groups`; each group normalised over itself and every non-batch axis."""

    def check(self, node: Node) -> None:
        if node.attr("groups", 32) == 0:
            raise UnsupportedLayerError(f"GroupNormalization '{node.layer_name}' has groups=0",
                                        layer=node.layer_name, hint="groups must divide the channels")

    def weight_names(self, node: Node) -> list[str]:
        return (["gamma"] if node.attr("scale", True) else []) + (["beta"] if node.attr("center", True) else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shape = input_shapes[0]
        channels = shape[_group_axis(node, len(shape))]
        dim = channels if isinstance(channels, int) else None
        return {"gamma": (dim,), "beta": (dim,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels = shape[_group_axis(node, len(shape))]
        groups = _groups(node, channels)
        if not isinstance(channels, int) or channels % groups:
            raise ShapeError(f"GroupNormalization '{node.layer_name}': {groups} groups do not divide "
                             f"{channels} channels", layer=node.layer_name,
                             hint="groups must divide the (static) size of the axis it splits")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = inputs[0], node.inputs[0].shape or ()
        rank = len(shape)
        axis = _group_axis(node, rank)
        channels = int(shape[axis])  # type: ignore[arg-type]
        groups = _groups(node, channels)
        dims = b.op("Shape", x)
        grouped_shape = b.op("Concat", b.slice(dims, [0], [axis], [0]),
                             b.ints([groups, channels // groups], "groups"),
                             b.slice(dims, [axis + 1], [rank], [0]), axis=0)
        grouped = b.op("Reshape", x, grouped_shape)
        reduce_axes = [a for a in range(1, rank + 1) if a != axis]
        mean, var = moments(b, grouped, reduce_axes)
        eps = b.scalar(float(node.attr("epsilon", 1e-3)), "epsilon")
        y = b.op("Reshape", b.op("Div", b.op("Sub", grouped, mean), b.op("Sqrt", b.op("Add", var, eps))), dims)
        if "gamma" in node.weights:
            y = b.op("Mul", y, broadcast_param(node, b, "gamma", [axis], shape))
        if "beta" in node.weights:
            y = b.op("Add", y, broadcast_param(node, b, "beta", [axis], shape))
        return [y]


def _group_axis(node: Node, rank: int) -> int:
    return resolve_axis(node, "axis", node.attr("axis", -1), rank)


def _groups(node: Node, channels: Any) -> int:
    groups = int(node.attr("groups", 32))
    return channels if groups == -1 and isinstance(channels, int) else groups


@LAYERS.register("UnitNormalization")
class UnitNormalization(LayerHandler):
    """x / ||x||_2 over `axis`; the floor on the norm differs: Keras 3 1e-12, Keras 2 1e-6 (sqrt of 1e-12)."""

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        axes = norm_axes(node, node.attr("axis", -1), len(node.inputs[0].shape or ()))
        square_sum = b.reduce("ReduceSum", b.op("Mul", x, x), axes, keepdims=True)
        if b.keras_major >= 3:
            inv = b.op("Min", b.op("Reciprocal", b.op("Sqrt", square_sum)), b.scalar(1e12, "max_inv_norm"))
        else:
            inv = b.op("Reciprocal", b.op("Sqrt", b.op("Max", square_sum, b.scalar(1e-12, "epsilon"))))
        return [b.op("Mul", x, inv)]
