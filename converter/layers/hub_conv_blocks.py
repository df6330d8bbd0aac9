"""Shared emission for Keras Hub's convolutional block layers (EfficientNet's MBConvBlock and
FusedMBConvBlock, MobileNet's blocks): channels-first ONNX Conv with the following inference
BatchNormalization folded into its kernel and bias, squeeze-and-excite, and the spatial shape rules.

A block's sublayers are stored as child groups named by Python attribute (`conv1`, `bn1`, ...); a
handler lists its arrays as `<child>/<variable>` in the order `weights.collect_vars` reads them (child
groups alphabetically) with `conv_names` / `bn_names`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.ir import Dim, Node
from converter.layers.builder import OpBuilder
from converter.layers.conv import depthwise_to_onnx, keras_to_onnx_kernel
from converter.layers.windows import activate_in, out_length, pad_attrs, window_pads

BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


def bn_names(child: str) -> list[str]:
    return [f"{child}/{v}" for v in BN_VARIABLES]


def bn_shapes(child: str, channels: int) -> dict[str, tuple[int | None, ...]]:
    return {name: (channels,) for name in bn_names(child)}


def conv_names(child: str, use_bias: bool = False) -> list[str]:
    return [f"{child}/kernel", f"{child}/bias"] if use_bias else [f"{child}/kernel"]


@dataclass(frozen=True)
class Window:
    """A 2-D convolution window: square kernel, stride, and its padding ('valid', 'same', or symmetric
    zero padding of `pad` pixels before a 'valid' window, as ZeroPadding2D + Conv2D(valid) give)."""

    kernel: int
    strides: int = 1
    padding: str = "valid"
    pad: int = 0

    def lengths(self, spatial: list[Dim]) -> list[Dim]:
        if self.pad and 2 * self.pad == self.kernel - 1 and self.strides == 1:
            return list(spatial)  # a "same" window: a symbolic length stays symbolic
        padded = [n + 2 * self.pad if isinstance(n, int) else None for n in spatial] if self.pad else spatial
        return [out_length(n, self.kernel, self.strides, 1, self.padding) for n in padded]

    def pads(self, spatial: list[Dim]) -> list[int] | None:
        if self.pad:
            return [self.pad] * 4
        return window_pads(spatial, (self.kernel,) * 2, (self.strides,) * 2, (1, 1), self.padding)


def conv(b: OpBuilder, x: str, spatial: list[Dim], key: str, kernel: np.ndarray, bias: np.ndarray | None,
         window: Window, group: int = 1) -> str:
    """ONNX Conv on channels-first `x`; `kernel` already in ONNX layout (out, in / group, kh, kw)."""
    args = [x, b.weight(f"{key}/kernel", kernel)]
    if bias is not None:
        args.append(b.weight(f"{key}/bias", bias))
    return b.op("Conv", *args, kernel_shape=[window.kernel] * 2, strides=[window.strides] * 2, dilations=[1, 1],
                group=group, **pad_attrs(window.pads(spatial)))


def conv_bn(b: OpBuilder, node: Node, x: str, spatial: list[Dim], conv_child: str, bn_child: str,
            window: Window, epsilon: float, depthwise: bool = False, group: int = 1) -> str:
    """Conv2D (no bias; `group` groups) or DepthwiseConv2D, then BatchNormalization at inference, as one
    Conv: the BN's scale multiplies the kernel's output channels (in float64, as kconvert's BN folding)."""
    stored = node.weights[f"{conv_child}/kernel"]
    kernel = depthwise_to_onnx(stored) if depthwise else keras_to_onnx_kernel(stored)
    bn = {v: np.asarray(node.weights[f"{bn_child}/{v}"], dtype=np.float64) for v in BN_VARIABLES}
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + epsilon)
    shift = bn["beta"] - bn["moving_mean"] * scale
    folded = (kernel.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    group = kernel.shape[0] if depthwise else group
    return conv(b, x, spatial, conv_child, folded, shift.astype(np.float32), window, group)


def activate(b: OpBuilder, x: str, activation: str) -> str:
    """A Keras activation on a channels-first tensor (an axis activation acts on the channels)."""
    return activate_in(b, x, activation, "channels_last", "channels_first")


def squeeze_excite(b: OpBuilder, node: Node, x: str, reduce_child: str, expand_child: str,
                   squeeze_activation: str, excite_activation: str) -> str:
    """x * excite(expand(squeeze(reduce(mean over height and width)))) with 1x1 convs with bias."""
    s = b.reduce("ReduceMean", x, [2, 3], keepdims=True)
    for child, activation in ((reduce_child, squeeze_activation), (expand_child, excite_activation)):
        kernel = keras_to_onnx_kernel(node.weights[f"{child}/kernel"])
        s = activate(b, conv(b, s, [1, 1], child, kernel, node.weights[f"{child}/bias"], Window(1)), activation)
    return b.op("Mul", x, s)
