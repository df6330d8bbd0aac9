"""BatchNormalization: inference with the moving statistics gathered while training (per-sample
normalisations are in feature_normalization.py).

Keras 1's `BatchNormalization(mode=2)` normalises with the statistics of the batch being predicted, at
inference too (Keras 1.2.2 `layers/normalization.py` calls `K.normalize_batch_in_training` in mode 2):
    mean, var = moments(x) over every axis but `axis` (var biased: divided by the count, as tf.nn.moments)
    y = (x - mean) / sqrt(var + epsilon) * gamma + beta
The running statistics are stored but unused. The output of one sample depends on the other samples of
the batch (a batch of one sample normalises it with its own statistics): the ONNX graph is
batch-dependent exactly as the Keras 1 model was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields

# --------------------------------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchNormSpec(LayerSpec):
    axis: tuple[int, ...] = (-1,)  # as written (negative counts from the end); Keras 3 one int, tf.keras a list
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    mode: int = 0  # Keras 1: 0 moving statistics, 2 the batch's own statistics (legacy_config refuses 1)


def bn_axes(node: Node, spec: BatchNormSpec, rank: int) -> list[int]:
    """The spec's `axis` as positive ints for a rank-`rank` input, refused when not sample axes, each once."""
    positive = sorted({a + rank if a < 0 else a for a in spec.axis})
    if not positive or positive[0] <= 0 or positive[-1] >= rank or len(positive) != len(spec.axis):
        shown = spec.axis[0] if len(spec.axis) == 1 else list(spec.axis)
        raise ShapeError(f"BatchNormalization '{node.layer_name}' has axis={shown!r}, not valid for a rank-{rank} "
                         "input", layer=node.layer_name, hint="axis must name sample axes, each once")
    return positive


def _bn_param_shape(node: Node, spec: BatchNormSpec, shape: Shape) -> tuple[int | None, ...]:
    """tf.keras stores per-axis params flat for one axis, full-rank (1 on other axes) for several."""
    axes = bn_axes(node, spec, len(shape))
    dims: list[int | None] = [d if isinstance(d, int) else None for d in (shape[a] for a in axes)]
    if len(axes) == 1:
        return (dims[0],)
    full: list[int | None] = [1] * len(shape)
    for a, d in zip(axes, dims):
        full[a] = d
    return tuple(full)


class BatchNormalization(LayerHandler[BatchNormSpec]):
    """Inference: y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta.

    Folded into one scale and one shift in numpy, shaped to broadcast on the normalised axes, so any
    axis works without a layout rule (the node is neither channels_first_only nor layout-agnostic).
    """

    keras3_args = ("axis momentum epsilon center scale beta_initializer gamma_initializer "
                   "moving_mean_initializer moving_variance_initializer beta_regularizer "
                   "gamma_regularizer beta_constraint gamma_constraint renorm renorm_clipping "
                   "renorm_momentum synchronized")

    passes_mask = True

    def parse(self, config: Config) -> BatchNormSpec:
        for key in ("renorm", "virtual_batch_size"):
            if config.value(key, False):
                name = config.ctx.layer_name
                raise UnsupportedLayerError(f"BatchNormalization '{name}' uses {key}, whose stored "
                                            "weights kconvert does not read", layer=name,
                                            hint=f"rebuild the layer without {key} before saving")
        spec = parse_fields(BatchNormSpec, config)
        if spec.mode not in (0, BATCH_STATISTICS) or (spec.mode and config.ctx.keras_major != 1):
            name = config.ctx.layer_name
            raise UnsupportedLayerError(f"BatchNormalization '{name}' has mode={spec.mode} in a Keras "
                                        f"{config.ctx.keras_major} file", layer=name,
                                        hint="mode is a Keras 1 argument: 0 or 2 in Keras 1 files only")
        return spec

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout pass: a one-axis BN on a permuted input normalises where that axis now sits."""
        rank = len(node.inputs[0].shape or ())
        axes = bn_axes(node, self.spec(node), rank) if rank == len(perm) else []
        if len(axes) != 1:
            return False
        node.spec = self.spec(node).replace(axis=(perm.index(axes[0]),))
        return True

    def channel_affine(self, node: Node, rank: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """BN folding (layers/traits.ChannelAffine): float64 scale and shift along the one normalised axis."""
        axes = self.spec(node).axis
        if len(axes) != 1 or "moving_mean" not in node.weights or self.spec(node).mode == BATCH_STATISTICS:
            return None
        scale, shift = (a.astype(np.float64) for a in bn_scale_shift(node))
        return scale, shift, axes[0] + rank if axes[0] < 0 else axes[0]

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = ["gamma"] if spec.scale else []
        names += ["beta"] if spec.center else []
        return [*names, "moving_mean", "moving_variance"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        param = _bn_param_shape(node, self.spec(node), input_shapes[0])
        return {name: param for name in self.weight_names(node)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_min_rank(node, input_shapes[0], 2)
        bn_axes(node, self.spec(node), len(input_shapes[0]))
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        if self.spec(node).mode == BATCH_STATISTICS:
            return [_batch_statistics(node, self.spec(node), b, inputs[0])]
        scale, shift = bn_scale_shift(node)
        rank = len(node.inputs[0].shape or ())
        # Broadcast over the sample axes: the batch axis is left out (numpy aligns from the end).
        if scale.ndim == rank:  # several axes: stored full-rank with a leading 1
            target = list(scale.shape[1:])
        else:
            target = [1] * (rank - 1)
            target[bn_axes(node, self.spec(node), rank)[0] - 1] = scale.size
        scale, shift = scale.reshape(target), shift.reshape(target)
        y = b.op("Mul", inputs[0], b.weight("scale", scale))
        return [b.op("Add", y, b.weight("shift", shift))]


BATCH_STATISTICS = 2  # Keras 1's mode=2
BATCH_NORMALIZATION = BatchNormalization()
LAYERS.add("BatchNormalization", BATCH_NORMALIZATION)


def bn_scale_shift(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 math, as float32: x * scale + shift equals Keras' inference output."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in node.weights.items()}
    epsilon = BATCH_NORMALIZATION.spec(node).epsilon
    inv = 1.0 / np.sqrt(w["moving_variance"] + epsilon)
    scale = inv * w["gamma"] if "gamma" in w else inv
    shift = -w["moving_mean"] * scale + w.get("beta", 0.0)
    return scale.astype(np.float32), np.asarray(shift, dtype=np.float32)


def _batch_statistics(node: Node, spec: BatchNormSpec, b: OpBuilder, x: str) -> str:
    """Keras 1 mode=2: (x - mean) / sqrt(var + epsilon) * gamma + beta with the batch's own moments."""
    rank = len(node.inputs[0].shape or ())
    axis = bn_axes(node, spec, rank)[0]
    reduced = [a for a in range(rank) if a != axis]
    centred = b.op("Sub", x, b.reduce("ReduceMean", x, reduced, keepdims=True))
    variance = b.reduce("ReduceMean", b.op("Mul", centred, centred), reduced, keepdims=True)
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", variance, b.const(np.float32(spec.epsilon), "epsilon"))))
    y = b.op("Mul", centred, inv)
    target = [1] * (rank - 1)  # the batch axis left out: numpy-style broadcasting aligns from the end
    target[axis - 1] = -1
    if "gamma" in node.weights:
        y = b.op("Mul", y, b.weight("gamma", node.weights["gamma"].reshape(target)))
    if "beta" in node.weights:
        y = b.op("Add", y, b.weight("beta", node.weights["beta"].reshape(target)))
    return y
