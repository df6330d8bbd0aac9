"""Normalisation: BatchNormalization, LayerNormalization, GroupNormalization, UnitNormalization."""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank

# --------------------------------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------------------------------


def _bn_axes(node: Node, rank: int) -> list[int]:
    """`axis` as positive ints; Keras 3 stores an int, tf.keras may store a list."""
    raw: Any = node.attr("axis", -1)
    axes = [raw] if isinstance(raw, int) else list(raw)
    positive = sorted({a + rank if a < 0 else a for a in axes})
    if not positive or positive[0] <= 0 or positive[-1] >= rank or len(positive) != len(axes):
        raise ShapeError(f"BatchNormalization '{node.layer_name}' has axis={raw!r}, not valid for a rank-{rank} "
                         "input", layer=node.layer_name, hint="axis must name sample axes, each once")
    return positive


def _bn_param_shape(node: Node, shape: Shape) -> tuple[int | None, ...]:
    """tf.keras stores per-axis params flat for one axis, full-rank (1 on other axes) for several."""
    axes = _bn_axes(node, len(shape))
    dims: list[int | None] = [d if isinstance(d, int) else None for d in (shape[a] for a in axes)]
    if len(axes) == 1:
        return (dims[0],)
    full: list[int | None] = [1] * len(shape)
    for a, d in zip(axes, dims):
        full[a] = d
    return tuple(full)


@LAYERS.register("BatchNormalization")
class BatchNormalization(LayerHandler):
    """Inference: y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta.

    Folded into one scale and one shift in numpy, shaped to broadcast on the normalised axes, so any
    axis works without a layout rule (the node is neither channels_first_only nor layout-agnostic).
    """

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout pass: a one-axis BN on a permuted input normalises where that axis now sits."""
        rank = len(node.inputs[0].shape or ())
        axes = _bn_axes(node, rank) if rank == len(perm) else []
        if len(axes) != 1:
            return False
        node.attrs["axis"] = perm.index(axes[0])
        return True

    def check(self, node: Node) -> None:
        for key in ("renorm", "virtual_batch_size"):
            if node.attr(key, False):
                raise UnsupportedLayerError(f"BatchNormalization '{node.layer_name}' uses {key}, whose stored "
                                            "weights kconvert does not read", layer=node.layer_name,
                                            hint=f"rebuild the layer without {key} before saving")

    def weight_names(self, node: Node) -> list[str]:
        names = ["gamma"] if node.attr("scale", True) else []
        names += ["beta"] if node.attr("center", True) else []
        return [*names, "moving_mean", "moving_variance"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        param = _bn_param_shape(node, input_shapes[0])
        return {name: param for name in self.weight_names(node)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_min_rank(node, input_shapes[0], 2)
        _bn_axes(node, len(input_shapes[0]))
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        scale, shift = bn_scale_shift(node)
        rank = len(node.inputs[0].shape or ())
        # Broadcast over the sample axes: the batch axis is left out (numpy aligns from the end).
        if scale.ndim == rank:  # several axes: stored full-rank with a leading 1
            target = list(scale.shape[1:])
        else:
            target = [1] * (rank - 1)
            target[_bn_axes(node, rank)[0] - 1] = scale.size
        scale, shift = scale.reshape(target), shift.reshape(target)
        y = b.op("Mul", inputs[0], b.weight("scale", scale))
        return [b.op("Add", y, b.weight("shift", shift))]


def bn_scale_shift(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 math, as float32: x * scale + shift equals Keras' inference output."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in node.weights.items()}
    epsilon = float(node.attr("epsilon", 1e-3))
    inv = 1.0 / np.sqrt(w["moving_variance"] + epsilon)
    scale = inv * w["gamma"] if "gamma" in w else inv
    shift = -w["moving_mean"] * scale + w.get("beta", 0.0)
    return scale.astype(np.float32), np.asarray(shift, dtype=np.float32)
