"""Layers linear per output channel, into which a following per-channel affine map folds.

The fold pass (passes/fold_batch_norm.py) asks a handler with the `folds_batch_norm` trait, through
the `FoldsChannelScale` protocol, where its channels are and to absorb `y * scale + shift`; it never
knows which weight holds the channels or how the handler lays it out for ONNX.
"""

from __future__ import annotations

import numpy as np

from converter.ir import Node
from converter.layers.traits import FoldsChannelScale  # noqa: F401  (the protocol ChannelLinear implements)


class ChannelLinear:
    """The fold for a handler whose kernel holds each output channel's entries (mixed in before the
    LayerHandler base). Subclasses say which weight, how the channels sit in it, and how `emit`
    transposes it for ONNX: the scaled kernel is written straight into that memory order, so the
    handler's transpose is a free view and the weights are traversed once."""

    folds_batch_norm = True
    scaled_weight = "kernel"

    def channel_factor(self, kernel: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
        """`scale` shaped to broadcast on the kernel; None when the channel counts differ. The output
        channels are the kernel's last axis here."""
        return scale if kernel.shape[-1] == scale.size else None

    def onnx_axes(self, ndim: int) -> tuple[int, ...]:
        """The transpose `emit` applies to the scaled weight (none here)."""
        return tuple(range(ndim))

    def fold_channel_scale(self, node: Node, scale: np.ndarray, shift: np.ndarray) -> np.ndarray | None:
        """New arrays (a shared layer's other calls keep theirs): kernel * s, bias * s + shift."""
        kernel = node.weights.get(self.scaled_weight)
        if kernel is None or kernel.ndim < 2 or scale.ndim != 1:
            return None
        factor = self.channel_factor(kernel, scale)
        if factor is None:
            return None
        bias = node.weights.get("bias")
        old_bias = np.zeros(scale.size) if bias is None else bias.astype(np.float64)
        node.weights = {
            **node.weights,
            self.scaled_weight: scaled_in_order(kernel, factor.astype(np.float32), self.onnx_axes(kernel.ndim)),
            "bias": (old_bias * scale + shift).astype(np.float32),
        }
        node.spec = node.spec.replace(use_bias=True)
        return kernel


# The ONNX-order kernel is written in tiles of (output rows x input columns): a tile's source entries
# then sit on a few dozen memory pages that stay cached while the tile is written, where one pass over
# the whole transposed view reads every entry from another page (a quarter less time on ResNet50).
_TILE_ROWS, _TILE_COLUMNS = 512, 16


def scaled_in_order(kernel: np.ndarray, factor: np.ndarray, onnx_axes: tuple[int, ...]) -> np.ndarray:
    """kernel * factor (one float32 rounding per entry, no float64 copy of a big kernel), shaped as
    the Keras kernel but laid out in memory as `kernel.transpose(onnx_axes)` will read it."""
    source = kernel.transpose(onnx_axes)
    factors = np.broadcast_to(factor, kernel.shape).transpose(onnx_axes)
    ordered = np.empty(source.shape, np.result_type(source, factors))
    rows, columns = source.shape[0], source.shape[1]  # the callers' kernels have 2 axes or more
    # Untransposed (Dense), memory order is already the best order: one tile.
    whole = (max(rows, 1), max(columns, 1))  # a range's step must be positive, for an empty kernel too
    tile_rows, tile_columns = whole if source.flags.c_contiguous else (_TILE_ROWS, _TILE_COLUMNS)
    for row in range(0, rows, tile_rows):
        for column in range(0, columns, tile_columns):
            tile = (slice(row, row + tile_rows), slice(column, column + tile_columns))
            np.multiply(source[tile], factors[tile], out=ordered[tile])
    result: np.ndarray = ordered.transpose(np.argsort(onnx_axes))
    return result
