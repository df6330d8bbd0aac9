"""Convolutions: Conv1D/2D/3D (groups, dilation, causal), DepthwiseConv1D/2D, SeparableConv1D/2D.

All emit ONNX Conv, which is channels-first only: the layout pass hands these handlers NC... tensors.
Kernels are stored by Keras as (k..., in / groups, out); ONNX wants (out, in / groups, k...).
Depthwise kernels are (k..., in, depth_multiplier) with output channel c * multiplier + m, which is
ONNX's grouped-conv order once reshaped to (in * multiplier, 1, k...).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.activations import parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.channel_linear import ChannelLinear
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import (
    CHANNELS_FIRST,
    CHANNELS_LAST,
    activate_in,
    channels_first_io,
    join_spatial,
    pad_attrs,
    parse_data_format,
    parse_padding,
    split_spatial,
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


@dataclass(frozen=True, kw_only=True)
class ConvSpec(LayerSpec):
    """What every Conv-based layer shares; tuples hold one int per spatial axis."""

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation_rate: tuple[int, ...]
    padding: str = "valid"
    data_format: str = CHANNELS_LAST  # what the node computes in: the layout pass switches it
    keras_data_format: str = CHANNELS_LAST  # what the file asked for (where Keras' last axis is)
    activation: str = "linear"
    use_bias: bool = True


@dataclass(frozen=True, kw_only=True)
class FiltersConvSpec(ConvSpec):
    filters: int
    groups: int = 1


@dataclass(frozen=True, kw_only=True)
class DepthwiseSpec(ConvSpec):
    depth_multiplier: int = 1


@dataclass(frozen=True, kw_only=True)
class SeparableSpec(ConvSpec):
    filters: int
    depth_multiplier: int = 1


C = TypeVar("C", bound=ConvSpec)


class ConvBase(LayerHandler[C]):
    """Shared parse, shape rule and emission for every Conv-based layer of spatial rank `rank`."""

    channels_first_only = True
    spec_type: type[LayerSpec] = ConvSpec

    def __init__(self, rank: int, paddings: tuple[str, ...] = ("valid", "same")) -> None:
        self.rank = rank
        self.paddings = paddings

    def parse(self, config: Config) -> C:
        fmt = parse_data_format(config)
        activation = parse_activation(config)
        padding = parse_padding(config, self.paddings)
        windows = {"kernel_size": config.ints("kernel_size", self.rank),
                   "strides": config.ints("strides", self.rank, 1),
                   "dilation_rate": config.ints("dilation_rate", self.rank, 1)}
        spec = parse_fields(self.spec_type, config, data_format=fmt, keras_data_format=fmt, activation=activation,
                            padding=padding, **windows, **self.parse_more(config))
        return cast(C, spec)  # spec_type is C's class

    def parse_more(self, config: Config) -> dict[str, Any]:
        """Family-specific values `parse_fields` cannot read alone (checked, or shaped by the rank)."""
        return {}

    def channel_axis(self, node: Node, rank: int) -> int | None:
        """Where a per-channel fold finds the output channels; None under a fused activation."""
        spec = self.spec(node)
        if spec.activation != "linear":
            return None
        return 1 if spec.data_format == CHANNELS_FIRST else rank - 1

    def split(self, node: Node, shape: Shape) -> tuple[Dim, list[Dim]]:
        return split_spatial(node, self.spec(node).data_format, shape, self.rank)

    @abstractmethod
    def out_channels(self, node: Node, channels: Dim) -> Dim:
        """The output channel count for `channels` input channels (each family knows its own)."""

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        spec = self.spec(node)
        channels, spatial = self.split(node, shape)
        out = window_lengths(node, "kernel_size", spatial, spec.kernel_size, spec.strides, spec.dilation_rate,
                             spec.padding)
        return [join_spatial(spec.data_format, shape[0], self.out_channels(node, channels), out)]

    def channels_first_io(self, node: Node, b: OpBuilder, x: str, body: Callable[[str, list[Dim]], str]) -> str:
        return channels_first_io(node, self.spec(node).data_format, b, x, body)

    def activate(self, node: Node, b: OpBuilder, y: str) -> str:
        spec = self.spec(node)
        return activate_in(b, y, spec.activation, spec.keras_data_format, spec.data_format)

    def conv(self, node: Node, b: OpBuilder, x: str, lengths: list[Dim], weight: str, bias: str | None,
             group: int = 1, pointwise: bool = False) -> str:
        spec = self.spec(node)
        ones = (1,) * self.rank
        kernel = ones if pointwise else spec.kernel_size
        strides = ones if pointwise else spec.strides
        dilations = ones if pointwise else spec.dilation_rate
        padding = "valid" if pointwise else spec.padding
        pads = window_pads(lengths, kernel, strides, dilations, padding)
        args = [x, weight] if bias is None else [x, weight, bias]
        return b.op("Conv", *args, kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                    group=group, **pad_attrs(pads))


class Conv(ChannelLinear, ConvBase[FiltersConvSpec]):
    """Conv1D/2D/3D, grouped; kernel (k..., in / groups, filters), output channels last."""

    keras3_args = ("filters kernel_size strides padding data_format dilation_rate groups activation "
                   "use_bias kernel_initializer bias_initializer kernel_regularizer bias_regularizer "
                   "kernel_constraint bias_constraint")
    affine_activations = ("activation",)
    legacy_kernel_rank = {
        "Conv1D": 3,
        "Conv2D": 4,
        "Conv3D": 5,
    }

    spec_type = FiltersConvSpec

    required_arguments = ("filters", "kernel_size")

    def parse_more(self, config: Config) -> dict[str, Any]:
        groups = config.integer("groups", 1)
        if groups < 1:
            raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has groups={groups}",
                                        layer=config.ctx.layer_name, hint="groups must be a positive int")
        return {"groups": groups}

    def onnx_axes(self, ndim: int) -> tuple[int, ...]:
        return onnx_kernel_axes(ndim)

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return self.spec(node).filters

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if self.spec(node).use_bias else ["kernel"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = self.split(node, input_shapes[0])
        spec = self.spec(node)
        per_group = channels // spec.groups if isinstance(channels, int) else None
        return {"kernel": (*spec.kernel_size, per_group, spec.filters), "bias": (spec.filters,)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        weight = b.weight("kernel", keras_to_onnx_kernel(node.weights["kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = self.spec(node).groups
        y = self.channels_first_io(node, b, inputs[0], lambda x, n: self.conv(node, b, x, n, weight, bias, group))
        return [self.activate(node, b, y)]


class Depthwise(ChannelLinear, ConvBase[DepthwiseSpec]):
    """Keras 3 names the depthwise kernel `kernel`; Keras 2 `depthwise_kernel`: the order is the same.
    Output channel c * multiplier + m is the kernel's (c, m) entry: the last two axes flattened."""

    keras3_args = ("kernel_size strides padding depth_multiplier data_format dilation_rate activation "
                   "use_bias depthwise_initializer bias_initializer depthwise_regularizer "
                   "bias_regularizer depthwise_constraint bias_constraint")
    affine_activations = ("activation",)
    affine_weights = ("depthwise_kernel", "bias")

    spec_type = DepthwiseSpec
    scaled_weight = "depthwise_kernel"

    required_arguments = ("kernel_size",)

    def channel_factor(self, kernel: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
        if kernel.shape[-2] * kernel.shape[-1] != scale.size:
            return None
        return scale.reshape(kernel.shape[-2], kernel.shape[-1])

    def onnx_axes(self, ndim: int) -> tuple[int, ...]:
        return depthwise_axes(ndim)

    def weight_names(self, node: Node) -> list[str]:
        return ["depthwise_kernel", "bias"] if self.spec(node).use_bias else ["depthwise_kernel"]

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return channels * self.spec(node).depth_multiplier if isinstance(channels, int) else None

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = self.split(node, input_shapes[0])
        out = self.out_channels(node, channels)
        spec = self.spec(node)
        return {"depthwise_kernel": (*spec.kernel_size, static(channels), spec.depth_multiplier),
                "bias": (static(out),)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        kernel = node.weights["depthwise_kernel"]
        weight = b.weight("depthwise_kernel", depthwise_to_onnx(kernel))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = int(kernel.shape[-2])
        y = self.channels_first_io(node, b, inputs[0], lambda x, n: self.conv(node, b, x, n, weight, bias, group))
        return [self.activate(node, b, y)]


class Separable(ChannelLinear, ConvBase[SeparableSpec]):
    """A depthwise conv (strides, dilation, padding) then a 1x1 conv to `filters`, bias on the second
    (which a per-channel fold scales: its kernel's last axis)."""

    keras3_args = ("filters kernel_size strides padding data_format dilation_rate depth_multiplier "
                   "activation use_bias depthwise_initializer pointwise_initializer bias_initializer "
                   "depthwise_regularizer pointwise_regularizer bias_regularizer depthwise_constraint "
                   "pointwise_constraint bias_constraint")
    affine_activations = ("activation",)
    affine_weights = ("pointwise_kernel", "bias")

    spec_type = SeparableSpec
    scaled_weight = "pointwise_kernel"

    required_arguments = ("filters", "kernel_size")

    def onnx_axes(self, ndim: int) -> tuple[int, ...]:
        return onnx_kernel_axes(ndim)

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return self.spec(node).filters

    def weight_names(self, node: Node) -> list[str]:
        names = ["depthwise_kernel", "pointwise_kernel"]
        return [*names, "bias"] if self.spec(node).use_bias else names

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = self.split(node, input_shapes[0])
        spec = self.spec(node)
        mid = channels * spec.depth_multiplier if isinstance(channels, int) else None
        return {"depthwise_kernel": (*spec.kernel_size, static(channels), spec.depth_multiplier),
                "pointwise_kernel": (*([1] * self.rank), mid, spec.filters), "bias": (spec.filters,)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        depthwise = node.weights["depthwise_kernel"]
        dw = b.weight("depthwise_kernel", depthwise_to_onnx(depthwise))
        pw = b.weight("pointwise_kernel", keras_to_onnx_kernel(node.weights["pointwise_kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        group = int(depthwise.shape[-2])

        def body(x: str, lengths: list[Dim]) -> str:
            mid = self.conv(node, b, x, lengths, dw, None, group)
            return self.conv(node, b, mid, lengths, pw, bias, pointwise=True)

        return [self.activate(node, b, self.channels_first_io(node, b, inputs[0], body))]


def _register() -> None:
    conv1d = Conv(rank=1, paddings=("valid", "same", "causal"))
    conv1d.consumes_sequence = True  # Conv1D(input_dim=..., input_length=...) spells (batch, steps, features)
    LAYERS.add("Conv1D", conv1d)
    LAYERS.add("Conv2D", Conv(rank=2))
    LAYERS.add("Conv3D", Conv(rank=3))
    for rank in (1, 2):
        LAYERS.add(f"DepthwiseConv{rank}D", Depthwise(rank=rank))
        LAYERS.add(f"SeparableConv{rank}D", Separable(rank=rank))


_register()
