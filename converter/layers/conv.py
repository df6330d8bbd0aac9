"""Convolutions: Conv1D/2D/3D (groups, dilation, causal), DepthwiseConv1D/2D, SeparableConv1D/2D.

All emit ONNX Conv, which is channels-first only: the layout pass hands these handlers NC... tensors.
Kernels are stored by Keras as (k..., in / groups, out); ONNX wants (out, in / groups, k...).
Depthwise kernels are (k..., in, depth_multiplier) with output channel c * multiplier + m, which is
ONNX's grouped-conv order once reshaped to (in * multiplier, 1, k...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.windows import (
    CHANNELS_FIRST,
    activate,
    check_conv_common,
    check_padding,
    data_format,
    ints,
    join_shape,
    pad_attrs,
    split_shape,
    static,
    window_lengths,
    window_pads,
)


def onnx_kernel_axes(ndim: int) -> tuple[int, ...]:
    """The transpose taking a Keras kernel (k..., in, out) to ONNX's (out, in, k...)."""
    rank = ndim - 2
    return (rank + 1, rank, *range(rank))


def depthwise_axes(ndim: int) -> tuple[int, ...]:
    """The transpose taking a depthwise kernel (k..., in, multiplier) to (in, multiplier, k...)."""
    rank = ndim - 2
    return (rank, rank + 1, *range(rank))


def keras_to_onnx_kernel(kernel: np.ndarray) -> np.ndarray:
    """(k..., in, out) -> (out, in, k...)."""
    return np.transpose(kernel, onnx_kernel_axes(kernel.ndim))


def depthwise_to_onnx(kernel: np.ndarray) -> np.ndarray:
    """(k..., in, multiplier) -> (in * multiplier, 1, k...)."""
    chw = np.transpose(kernel, depthwise_axes(kernel.ndim))
    return chw.reshape(chw.shape[0] * chw.shape[1], 1, *chw.shape[2:])


def channels_first_io(node: Node, b: OpBuilder, x: str, body: Callable[[str, list[Dim]], str]) -> str:
    """Run `body` on an NC... tensor. After the layout pass it already is one; a node emitted outside
    the pass (inside a wrapper) may still be channels_last, so transpose around it then."""
    shape = node.inputs[0].shape or ()
    rank = len(shape)
    if data_format(node) == CHANNELS_FIRST:
        return body(x, list(shape[2:]))
    inner = body(b.transpose(x, [0, rank - 1, *range(1, rank - 1)]), list(shape[1:-1]))
    return b.transpose(inner, [0, *range(2, rank), 1])


class ConvBase(LayerHandler):
    """Shared shape rule and emission for every Conv-based layer of spatial rank `rank`."""

    channels_first_only = True
    rank = 2
    paddings: tuple[str, ...] = ("valid", "same")

    def check(self, node: Node) -> None:
        check_conv_common(node)
        check_padding(node, self.paddings)
        for read in (self.kernel, self.strides, self.dilations):
            read(node)  # malformed tuples are refused here, before any shape work

    def kernel(self, node: Node) -> tuple[int, ...]:
        return ints(node, "kernel_size", self.rank, None)

    def strides(self, node: Node) -> tuple[int, ...]:
        return ints(node, "strides", self.rank, 1)

    def dilations(self, node: Node) -> tuple[int, ...]:
        return ints(node, "dilation_rate", self.rank, 1)

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return int(node.attrs["filters"])

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels, spatial = split_shape(node, shape, self.rank, self.meaning())
        padding = str(node.attr("padding", "valid"))
        out = window_lengths(node, "kernel_size", spatial, self.kernel(node), self.strides(node),
                             self.dilations(node), padding)
        return [join_shape(node, shape[0], self.out_channels(node, channels), out)]

    def meaning(self) -> str:
        axes = ", ".join(["steps"] if self.rank == 1 else [f"dim{i + 1}" for i in range(self.rank)])
        return f"(batch, {axes}, channels)"

    def conv(self, node: Node, b: OpBuilder, x: str, lengths: list[Dim], weight: str, bias: str | None,
             group: int = 1, pointwise: bool = False) -> str:
        ones = [1] * self.rank
        kernel = ones if pointwise else self.kernel(node)
        strides = ones if pointwise else self.strides(node)
        dilations = ones if pointwise else self.dilations(node)
        padding = "valid" if pointwise else str(node.attr("padding", "valid"))
        pads = window_pads(lengths, kernel, strides, dilations, padding)
        args = [x, weight] if bias is None else [x, weight, bias]
        return b.op("Conv", *args, kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                    group=group, **pad_attrs(pads))


class Conv(ConvBase):
    def check(self, node: Node) -> None:
        super().check(node)
        if int(node.attr("groups", 1)) < 1:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has groups={node.attrs['groups']}",
                                        layer=node.layer_name, hint="groups must be a positive int")

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if node.attr("use_bias", True) else ["kernel"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = split_shape(node, input_shapes[0], self.rank, self.meaning())
        filters, groups = int(node.attrs["filters"]), int(node.attr("groups", 1))
        per_group = channels // groups if isinstance(channels, int) else None
        return {"kernel": (*self.kernel(node), per_group, filters), "bias": (filters,)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        weight = b.weight("kernel", keras_to_onnx_kernel(node.weights["kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = int(node.attr("groups", 1))
        y = channels_first_io(node, b, inputs[0], lambda x, n: self.conv(node, b, x, n, weight, bias, group))
        return [activate(node, b, y)]


@LAYERS.register("Conv1D")
class Conv1D(Conv):
    rank = 1
    paddings = ("valid", "same", "causal")


@LAYERS.register("Conv2D")
class Conv2D(Conv):
    rank = 2


@LAYERS.register("Conv3D")
class Conv3D(Conv):
    rank = 3


class Depthwise(ConvBase):
    """Keras 3 names the depthwise kernel `kernel`; Keras 2 `depthwise_kernel`: the order is the same."""

    def weight_names(self, node: Node) -> list[str]:
        return ["depthwise_kernel", "bias"] if node.attr("use_bias", True) else ["depthwise_kernel"]

    def multiplier(self, node: Node) -> int:
        return int(node.attr("depth_multiplier", 1))

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return channels * self.multiplier(node) if isinstance(channels, int) else None

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = split_shape(node, input_shapes[0], self.rank, self.meaning())
        out = self.out_channels(node, channels)
        return {"depthwise_kernel": (*self.kernel(node), static(channels), self.multiplier(node)),
                "bias": (static(out),)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        kernel = node.weights["depthwise_kernel"]
        weight = b.weight("depthwise_kernel", depthwise_to_onnx(kernel))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = int(kernel.shape[-2])
        y = channels_first_io(node, b, inputs[0], lambda x, n: self.conv(node, b, x, n, weight, bias, group))
        return [activate(node, b, y)]


@LAYERS.register("DepthwiseConv1D")
class DepthwiseConv1D(Depthwise):
    rank = 1


@LAYERS.register("DepthwiseConv2D")
class DepthwiseConv2D(Depthwise):
    rank = 2


class Separable(ConvBase):
    """A depthwise conv (strides, dilation, padding) then a 1x1 conv to `filters`, bias on the second."""

    def weight_names(self, node: Node) -> list[str]:
        names = ["depthwise_kernel", "pointwise_kernel"]
        return [*names, "bias"] if node.attr("use_bias", True) else names

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = split_shape(node, input_shapes[0], self.rank, self.meaning())
        multiplier, filters = int(node.attr("depth_multiplier", 1)), int(node.attrs["filters"])
        mid = channels * multiplier if isinstance(channels, int) else None
        return {"depthwise_kernel": (*self.kernel(node), static(channels), multiplier),
                "pointwise_kernel": (*([1] * self.rank), mid, filters), "bias": (filters,)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        depthwise = node.weights["depthwise_kernel"]
        dw = b.weight("depthwise_kernel", depthwise_to_onnx(depthwise))
        pw = b.weight("pointwise_kernel", keras_to_onnx_kernel(node.weights["pointwise_kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = int(depthwise.shape[-2])

        def body(x: str, lengths: list[Dim]) -> str:
            mid = self.conv(node, b, x, lengths, dw, None, group)
            return self.conv(node, b, mid, lengths, pw, bias, pointwise=True)

        return [activate(node, b, channels_first_io(node, b, inputs[0], body))]


@LAYERS.register("SeparableConv1D")
class SeparableConv1D(Separable):
    rank = 1


@LAYERS.register("SeparableConv2D")
class SeparableConv2D(Separable):
    rank = 2
