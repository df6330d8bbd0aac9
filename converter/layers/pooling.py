"""Pooling: Max/AveragePooling1D/2D/3D and GlobalMax/GlobalAveragePooling1D/2D/3D.

ONNX pools are channels-first only, so every handler here is `channels_first_only` and the layout
pass hands it NC... tensors. Keras' average over a 'same' window divides by the number of real
elements (TF excludes the padding): ONNX AveragePool count_include_pad=0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.graph import CHANNELS_FIRST, CHANNELS_LAST
from converter.ir.shape import Dim, to_channels_first
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spatial import ZeroPadding
from converter.layers.spec import Config, LayerSpec
from converter.layers.windows import (
    channels_first_io,
    join_spatial,
    pad_attrs,
    parse_data_format,
    parse_padding,
    parse_window,
    split_spatial,
    window_lengths,
    window_pads,
)


@dataclass(frozen=True)
class PoolSpec(LayerSpec):
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]  # Keras' default: the pool size
    padding: str = "valid"
    data_format: str = CHANNELS_LAST
    # ONNX pads (all begins, then all ends) of a ZeroPadding folded in (passes/fold_padding.py).
    explicit_pads: tuple[int, ...] | None = None


class Pooling(LayerHandler[PoolSpec]):
    keras3_args = "pool_size strides padding data_format"
    channels_first_only = True

    def __init__(self, rank: int, op_type: str) -> None:
        self.rank, self.op_type = rank, op_type
        # Padded zeros never win a max over non-negative inputs; they would change an average.
        self.absorbs_zero_padding = op_type == "MaxPool"
        self.consumes_sequence = rank == 1

    def parse(self, config: Config) -> PoolSpec:
        size = parse_window(config, "pool_size", self.rank, 2)
        strides = parse_window(config, "strides", self.rank, None) if config.has("strides") else size
        return PoolSpec(pool_size=size, strides=strides, padding=parse_padding(config, ("valid", "same")),
                        data_format=parse_data_format(config))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec, shape = self.spec(node), input_shapes[0]
        channels, spatial = split_spatial(node, spec.data_format, shape, self.rank)
        if spec.explicit_pads is not None:  # a ZeroPadding folded in: pooled as padded
            ends = spec.explicit_pads[self.rank:]
            spatial = [n + b + e if isinstance(n, int) else None for n, b, e in zip(spatial, spec.explicit_pads, ends)]
        out = window_lengths(node, "pool_size", spatial, spec.pool_size, spec.strides, [1] * self.rank, spec.padding)
        return [join_spatial(spec.data_format, shape[0], channels, out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        extra: dict[str, Any] = {"count_include_pad": 0} if self.op_type == "AveragePool" else {}

        def body(x: str, lengths: list[Dim]) -> str:
            pads = list(spec.explicit_pads) if spec.explicit_pads is not None else \
                window_pads(lengths, spec.pool_size, spec.strides, [1] * self.rank, spec.padding)
            return b.op(self.op_type, x, kernel_shape=list(spec.pool_size), strides=list(spec.strides),
                        **pad_attrs(pads), **extra)

        return [channels_first_io(node, spec.data_format, b, inputs[0], body)]

    def absorb_zero_padding(self, pool: Node, padding: Node) -> bool:
        """Take the ZeroPadding `padding` (the pool's only input) into the pool's own pads, when every
        window keeps a real element (each pad is smaller than the pool size), both share one data_format,
        and the pool is 'valid' with no pads yet. The caller has checked the padded input is >= 0."""
        spec, handler = self.spec(pool), LAYERS.get(padding.kind)
        if not (self.absorbs_zero_padding and isinstance(handler, ZeroPadding) and handler.rank == self.rank):
            return False
        padded = handler.spec(padding)
        if spec.padding != "valid" or spec.explicit_pads is not None or spec.data_format != padded.data_format:
            return False
        if any(before >= k or after >= k for (before, after), k in zip(padded.padding, spec.pool_size)):
            return False
        pads = tuple(before for before, _ in padded.padding) + tuple(after for _, after in padded.padding)
        pool.spec = spec.replace(explicit_pads=pads)
        return True


for _rank in (1, 2, 3):
    LAYERS.add(f"MaxPooling{_rank}D", Pooling(_rank, "MaxPool"))
    LAYERS.add(f"AveragePooling{_rank}D", Pooling(_rank, "AveragePool"))


@dataclass(frozen=True)
class GlobalPoolSpec(LayerSpec):
    data_format: str = CHANNELS_LAST
    keepdims: bool = False


class GlobalPooling(LayerHandler[GlobalPoolSpec]):
    """Reduce every spatial axis; (batch, channels), or with keepdims the input rank with 1s."""

    keras3_args = "data_format keepdims"

    channels_first_only = True
    global_pooling = True

    def __init__(self, rank: int, op_type: str) -> None:
        self.rank, self.op_type = rank, op_type
        self.consumes_mask = (op_type, rank) == ("GlobalAveragePool", 1)  # Keras' masked mean over steps

    def parse(self, config: Config) -> GlobalPoolSpec:
        return GlobalPoolSpec(data_format=parse_data_format(config), keepdims=config.flag("keepdims", False))

    def check(self, node: Node) -> None:
        if self.mask_index(node) is not None and not self.consumes_mask:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called with a mask",
                                        layer=node.layer_name,
                                        hint="only GlobalAveragePooling1D takes a mask; drop the mask argument")

    def mask_index(self, node: Node) -> int | None:
        found = node.call.tensor_kwargs.get("mask")
        return int(found[0]) if found else None

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec, shape = self.spec(node), input_shapes[0]
        channels, spatial = split_spatial(node, spec.data_format, shape, self.rank)
        if spec.keepdims:
            return [join_spatial(spec.data_format, shape[0], channels, [1] * len(spatial))]
        return [(shape[0], channels)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec, index = self.spec(node), self.mask_index(node)
        axes = list(range(2, self.rank + 2))

        def body(x: str, lengths: list[Dim]) -> str:
            if index is not None:
                return masked_mean(b, x, inputs[index])
            return b.op(self.op_type, x)

        if spec.keepdims:
            return [channels_first_io(node, spec.data_format, b, inputs[0], body)]
        return [b.squeeze(body(self.first(node, b, inputs[0]), []), axes)]

    def first(self, node: Node, b: OpBuilder, x: str) -> str:
        """The NC... view of the input (only a graph lowered without the layout pass needs the Transpose,
        as in windows.channels_first_io)."""
        if self.spec(node).data_format == CHANNELS_FIRST:
            return x
        return b.transpose(x, list(to_channels_first(self.rank + 2)))

    def kept_shape(self, node: Node) -> Shape | None:
        """The output shape this pooling would have with keepdims, when it does not keep them now and its
        channel count is static (a following Reshape to that shape folds into keepdims=True)."""
        spec, source = self.spec(node), node.inputs[0].shape or ()
        if spec.keepdims or len(source) < 3:
            return None
        channel = 1 if spec.data_format == CHANNELS_FIRST else len(source) - 1
        if not isinstance(source[channel], int):
            return None
        return tuple(1 if i not in (0, channel) else d for i, d in enumerate(source))

    def keep_dims(self, node: Node) -> None:
        node.spec = self.spec(node).replace(keepdims=True)


def masked_mean(b: OpBuilder, x: str, mask: str) -> str:
    """GlobalAveragePooling1D(x, mask): mean over the steps the (batch, steps) mask keeps; x is NCW."""
    weights = b.unsqueeze(b.op("Cast", mask, to=1), [1])  # 1 = FLOAT
    total = b.reduce("ReduceSum", b.op("Mul", x, weights), [2], keepdims=True)
    return b.op("Div", total, b.reduce("ReduceSum", weights, [2], keepdims=True))


for _rank in (1, 2, 3):
    LAYERS.add(f"GlobalMaxPooling{_rank}D", GlobalPooling(_rank, "GlobalMaxPool"))
    LAYERS.add(f"GlobalAveragePooling{_rank}D", GlobalPooling(_rank, "GlobalAveragePool"))
