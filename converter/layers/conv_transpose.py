"""Transposed convolutions: Conv1DTranspose, Conv2DTranspose, Conv3DTranspose -> ONNX ConvTranspose.

Keras runs tf.nn.conv_transpose with an output length O from its own rule (Keras 2's
deconv_output_length, Keras 3's compute_conv_transpose_output_shape; they agree):
  valid: O = (n - 1) s + k' + p, p = output_padding or max(k', s) - k'
  same:  O = n s without output_padding, else (n - 1) s + k' % 2 + p
(k' = dilated kernel). TensorFlow then takes O values of the full transposed result, of length
(n - 1) s + k', starting at the 'same' padding TF would give the forward conv of an O-long input:
max(full - O, 0) // 2. full - O does not depend on n, so the pads are static for any input length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import FormatError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.channel_linear import ChannelLinear
from converter.layers.conv import ConvBase, ConvSpec, keras_to_onnx_kernel, onnx_kernel_axes
from converter.layers.limits import check_output
from converter.layers.registry import LAYERS
from converter.layers.spec import Config
from converter.layers.windows import join_spatial, static


def excess(kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None) -> int:
    """full - O: how much longer the full transposed result is than Keras' output (may be negative)."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return -(max(span, stride) - span if output_padding is None else output_padding)
    if output_padding is None:
        return span - stride
    return span - span % 2 - output_padding


def transpose_length(length: Dim, kernel: int, stride: int, dilation: int, padding: str,
                     output_padding: int | None) -> Dim:
    span = (kernel - 1) * dilation + 1
    extra = excess(kernel, stride, dilation, padding, output_padding)
    if isinstance(length, int):
        return (length - 1) * stride + span - extra
    # a symbolic length survives only where the output length equals it ('same', stride 1)
    return length if stride == 1 and extra == span - 1 else None


@dataclass(frozen=True, kw_only=True)
class ConvTransposeSpec(ConvSpec):
    filters: int
    output_padding: tuple[int | None, ...] = ()  # one entry per spatial axis; None: Keras' own rule


class ConvTranspose(ChannelLinear, ConvBase[ConvTransposeSpec]):
    """Kernel (k..., filters, in): a per-channel fold scales its second-last axis."""

    keras3_args = ("filters kernel_size strides padding output_padding data_format dilation_rate "
                   "activation use_bias kernel_initializer bias_initializer kernel_regularizer "
                   "bias_regularizer kernel_constraint bias_constraint")
    affine_activations = ("activation",)
    legacy_kernel_rank = {
        "Conv2DTranspose": 4,
    }

    spec_type = ConvTransposeSpec

    required_arguments = ("filters", "kernel_size")

    def parse_more(self, config: Config) -> dict[str, Any]:
        given = config.value("output_padding")
        padding: tuple[int | None, ...] = (None,) * self.rank if given is None else \
            config.ints("output_padding", self.rank)
        strides = config.ints("strides", self.rank, 1)
        if any(p is not None and p >= s for p, s in zip(padding, strides)):
            name = config.ctx.layer_name
            raise FormatError(f"layer '{name}': output_padding={given!r} must be less than the strides {strides}",
                              layer=name,
                              hint="Keras refuses an output_padding that is not below the stride on every axis")
        return {"output_padding": padding}

    def channel_factor(self, kernel: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
        return scale[:, None] if kernel.shape[-2] == scale.size else None

    def onnx_axes(self, ndim: int) -> tuple[int, ...]:
        return onnx_kernel_axes(ndim)

    def out_channels(self, node: Node, channels: Dim) -> Dim:
        return self.spec(node).filters

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if self.spec(node).use_bias else ["kernel"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = self.split(node, input_shapes[0])
        spec = self.spec(node)
        return {"kernel": (*spec.kernel_size, spec.filters, static(channels)), "bias": (spec.filters,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        spec = self.spec(node)
        _, spatial = self.split(node, shape)
        out = [transpose_length(n, k, s, d, spec.padding, p) for n, k, s, d, p in
               zip(spatial, spec.kernel_size, spec.strides, spec.dilation_rate, spec.output_padding)]
        out_shape = join_spatial(spec.data_format, shape[0], spec.filters, out)
        return [check_output(node, out_shape, "strides and kernel_size")]

    def pads(self, node: Node) -> tuple[list[int], list[int], list[int]]:
        """ONNX begins, ends and output_padding: crop `before` at the start, the rest (or extend) at the end."""
        spec = self.spec(node)
        begins, ends, extend = [], [], []
        for k, s, d, p in zip(spec.kernel_size, spec.strides, spec.dilation_rate, spec.output_padding):
            extra = excess(k, s, d, spec.padding, p)
            before = max(extra, 0) // 2 if spec.padding == "same" else 0
            begins.append(before)
            ends.append(max(extra - before, 0))
            extend.append(max(before - extra, 0))
        return begins, ends, extend

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        # Keras stores (k..., out, in); ONNX ConvTranspose wants (in, out, k...): the same permutation as Conv.
        weight = b.weight("kernel", keras_to_onnx_kernel(node.weights["kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        begins, ends, extend = self.pads(node)
        spec = self.spec(node)

        def body(x: str, lengths: list[Dim]) -> str:
            args = [x, weight] if bias is None else [x, weight, bias]
            return b.op("ConvTranspose", *args, kernel_shape=list(spec.kernel_size), strides=list(spec.strides),
                        dilations=list(spec.dilation_rate), pads=begins + ends,
                        output_padding=extend if any(extend) else None)

        return [self.activate(node, b, self.channels_first_io(node, b, inputs[0], body))]


for _rank in (1, 2, 3):
    LAYERS.add(f"Conv{_rank}DTranspose", ConvTranspose(rank=_rank))
