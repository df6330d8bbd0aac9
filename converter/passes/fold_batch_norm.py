"""Fold BatchNormalization into the Conv / Dense / DepthwiseConv / SeparableConv before it.

Rule: BN(layer(x)) == layer'(x) when the layer's output feeds only the BN (and is no graph output),
the layer has no activation and the BN normalises the layer's channel axis. Then with
s = gamma / sqrt(moving_variance + epsilon), layer' has its output channels' kernel entries scaled by
s and bias' = bias * s + beta - moving_mean * s (s and the bias in float64). The BN node disappears.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from converter.ir import Graph, Node, Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.layers.activations import activation_name
from converter.layers.conv import depthwise_axes, onnx_kernel_axes
from converter.layers.normalization import bn_scale_shift

# kind -> (the weight holding each output channel's entries, where the output channels are:
# "last" axis, "second_last" axis, or "depthwise": the last two axes (in, multiplier) flattened).
FOLDABLE: dict[str, tuple[str, str]] = {
    "Dense": ("kernel", "last"),
    "Conv1D": ("kernel", "last"),
    "Conv2D": ("kernel", "last"),
    "Conv3D": ("kernel", "last"),
    "Conv1DTranspose": ("kernel", "second_last"),
    "Conv2DTranspose": ("kernel", "second_last"),
    "Conv3DTranspose": ("kernel", "second_last"),
    "SeparableConv1D": ("pointwise_kernel", "last"),
    "SeparableConv2D": ("pointwise_kernel", "last"),
    "DepthwiseConv1D": ("depthwise_kernel", "depthwise"),
    "DepthwiseConv2D": ("depthwise_kernel", "depthwise"),
}
# How each handler transposes the folded weight for ONNX (layers/conv.py): the scaled kernel is
# written straight into that memory order, so the handler's transpose is a free view, and the
# weights are traversed once (scale and transpose together) instead of twice. Dense keeps its order.
_ONNX_AXES: dict[str, Callable[[int], tuple[int, ...]]] = {
    **{kind: onnx_kernel_axes for kind, (_, where) in FOLDABLE.items() if where in ("last", "second_last")},
    "DepthwiseConv1D": depthwise_axes,
    "DepthwiseConv2D": depthwise_axes,
    "Dense": lambda ndim: tuple(range(ndim)),
}


def run(graph: Graph) -> Graph:
    """One walk in topological order; a folded BN's output becomes an alias of the layer's output, which
    later nodes read instead (linear in the number of nodes, however many BNs fold)."""
    uses = {tensor_id: len(nodes) for tensor_id, nodes in graph.readers().items()}
    outputs = {id(t) for t in graph.outputs}
    present = {id(n) for n in graph.nodes}
    alias: dict[int, Tensor] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [alias.get(id(t), t) for t in node.inputs]
        layer = _foldable_producer(node, uses, outputs, present)
        replaced = None if layer is None else layer.weights.get(FOLDABLE[layer.kind][0])
        if layer is None or not _fold(layer, node):
            kept.append(node)
            continue
        bn_out, layer_out = node.outputs[0], layer.outputs[0]
        alias[id(bn_out)] = layer_out
        uses[id(layer_out)] = uses.get(id(bn_out), 0)
        if id(bn_out) in outputs:
            outputs.add(id(layer_out))
        if replaced is not None:  # a shared layer's other calls may still read it: release, never free
            graph.release_weight(replaced)
    graph.nodes = kept
    graph.outputs = [alias.get(id(t), t) for t in graph.outputs]
    return graph


def _foldable_producer(bn: Node, uses: dict[int, int], outputs: set[int], present: set[int]) -> Node | None:
    """The layer BN reads, when BN is its only reader and the fold computes the same."""
    if bn.kind != "BatchNormalization" or len(bn.inputs) != 1:
        return None
    tensor = bn.inputs[0]
    layer = tensor.producer
    if layer is None or layer.kind not in FOLDABLE or id(layer) not in present or len(layer.outputs) != 1:
        return None
    if uses.get(id(tensor)) != 1 or id(tensor) in outputs:
        return None
    if activation_name(layer.attrs.get("activation")) != "linear" or "moving_mean" not in bn.weights:
        return None
    return layer if _bn_axis(bn, tensor.shape) == _channel_axis(layer, len(tensor.shape or ())) else None


def _bn_axis(bn: Node, shape: tuple[object, ...] | None) -> int | None:
    raw = bn.attrs.get("axis", -1)
    axes = [raw] if isinstance(raw, (int, float)) else list(raw)
    if shape is None or len(axes) != 1:
        return None
    axis = int(axes[0])
    return axis + len(shape) if axis < 0 else axis


def _channel_axis(layer: Node, rank: int) -> int:
    if layer.kind != "Dense" and layer.attr("data_format") == CHANNELS_FIRST:
        return 1
    return rank - 1


def _scaled(kernel: np.ndarray, factor: np.ndarray, onnx_axes: tuple[int, ...]) -> np.ndarray:
    """kernel * factor (one float32 rounding per entry, no float64 copy of a big kernel), shaped as
    the Keras kernel but laid out in memory as `kernel.transpose(onnx_axes)` will read it."""
    ordered = np.multiply(kernel.transpose(onnx_axes), np.broadcast_to(factor, kernel.shape).transpose(onnx_axes),
                          order="C")
    return ordered.transpose(np.argsort(onnx_axes))


def _fold(layer: Node, bn: Node) -> bool:
    """Scale the layer's weights in place (new arrays, so a shared layer's other calls keep theirs)."""
    key, where = FOLDABLE[layer.kind]
    kernel = layer.weights.get(key)
    scale, shift = (a.astype(np.float64) for a in bn_scale_shift(bn))
    if kernel is None or kernel.ndim < 2 or scale.ndim != 1:
        return False
    if where == "depthwise":
        per_channel = kernel.shape[-2] * kernel.shape[-1]
        broadcast = scale.reshape(kernel.shape[-2], kernel.shape[-1])
    elif where == "second_last":
        per_channel, broadcast = kernel.shape[-2], scale[:, None]
    else:
        per_channel, broadcast = kernel.shape[-1], scale
    if per_channel != scale.size:
        return False
    bias = layer.weights.get("bias")
    old_bias = np.zeros(scale.size) if bias is None else bias.astype(np.float64)
    layer.weights = {
        **layer.weights,
        key: _scaled(kernel, broadcast.astype(np.float32), _ONNX_AXES[layer.kind](kernel.ndim)),
        "bias": (old_bias * scale + shift).astype(np.float32),
    }
    layer.attrs["use_bias"] = True
    return True
