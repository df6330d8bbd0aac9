"""Pooling: Max/AveragePooling1D/2D/3D and GlobalMax/GlobalAveragePooling1D/2D/3D.

ONNX pools are channels-first only, so every handler here is `channels_first_only` and the layout
pass hands it NC... tensors. Keras' average over a 'same' window divides by the number of real
elements (TF excludes the padding): ONNX AveragePool count_include_pad=0.
"""

from __future__ import annotations

from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.conv import channels_first_io
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.windows import (
    check_padding,
    ints,
    join_shape,
    pad_attrs,
    record_format,
    split_shape,
    window_lengths,
    window_pads,
)


def meaning(rank: int) -> str:
    axes = ["steps"] if rank == 1 else [f"dim{i + 1}" for i in range(rank)]
    return f"(batch, {', '.join(axes)}, channels)"


class Pooling(LayerHandler):
    channels_first_only = True
    rank = 2
    op_type = "MaxPool"

    def check(self, node: Node) -> None:
        record_format(node)
        check_padding(node, ("valid", "same"))
        self.window(node)

    def window(self, node: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(pool_size, strides); Keras' strides default to the pool size."""
        size = ints(node, "pool_size", self.rank, 2)
        strides = size if node.attrs.get("strides") is None else ints(node, "strides", self.rank, None)
        return size, strides

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels, spatial = split_shape(node, shape, self.rank, meaning(self.rank))
        size, strides = self.window(node)
        padding = str(node.attr("padding", "valid"))
        explicit = node.attrs.get("explicit_pads")
        if explicit is not None:  # a ZeroPadding folded in (passes/fold_padding.py): pooled as padded
            ends = explicit[self.rank:]
            spatial = [n + b + e if isinstance(n, int) else None for n, b, e in zip(spatial, explicit, ends)]
        out = window_lengths(node, "pool_size", spatial, size, strides, [1] * self.rank, padding)
        return [join_shape(node, shape[0], channels, out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        size, strides = self.window(node)
        padding = str(node.attr("padding", "valid"))
        extra: dict[str, Any] = {"count_include_pad": 0} if self.op_type == "AveragePool" else {}

        def body(x: str, lengths: list[Dim]) -> str:
            explicit = node.attrs.get("explicit_pads")
            pads = list(explicit) if explicit is not None else window_pads(lengths, size, strides, [1] * self.rank,
                                                                            padding)
            return b.op(self.op_type, x, kernel_shape=list(size), strides=list(strides), **pad_attrs(pads), **extra)

        return [channels_first_io(node, b, inputs[0], body)]


@LAYERS.register("MaxPooling1D")
class MaxPooling1D(Pooling):
    rank = 1


@LAYERS.register("MaxPooling2D")
class MaxPooling2D(Pooling):
    rank = 2


@LAYERS.register("MaxPooling3D")
class MaxPooling3D(Pooling):
    rank = 3


@LAYERS.register("AveragePooling1D")
class AveragePooling1D(Pooling):
    rank, op_type = 1, "AveragePool"


@LAYERS.register("AveragePooling2D")
class AveragePooling2D(Pooling):
    rank, op_type = 2, "AveragePool"


@LAYERS.register("AveragePooling3D")
class AveragePooling3D(Pooling):
    rank, op_type = 3, "AveragePool"


class GlobalPooling(LayerHandler):
    """Reduce every spatial axis; (batch, channels), or with keepdims the input rank with 1s."""

    channels_first_only = True
    rank = 2
    op_type = "GlobalMaxPool"

    def check(self, node: Node) -> None:
        record_format(node)
        if self.mask_index(node) is not None and (self.op_type, self.rank) != ("GlobalAveragePool", 1):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called with a mask",
                                        layer=node.layer_name,
                                        hint="only GlobalAveragePooling1D takes a mask; drop the mask argument")

    def mask_index(self, node: Node) -> int | None:
        found = node.call.tensor_kwargs.get("mask")
        return int(found[0]) if found else None

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels, spatial = split_shape(node, shape, self.rank, meaning(self.rank))
        if node.attr("keepdims", False):
            return [join_shape(node, shape[0], channels, [1] * len(spatial))]
        return [(shape[0], channels)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        index = self.mask_index(node)
        keep = bool(node.attr("keepdims", False))
        axes = list(range(2, self.rank + 2))

        def body(x: str, lengths: list[Dim]) -> str:
            if index is not None:
                return masked_mean(b, x, inputs[index])
            return b.op(self.op_type, x)

        pooled = channels_first_io(node, b, inputs[0], body) if keep else body(self.first(node, b, inputs[0]), [])
        return [pooled if keep else b.squeeze(pooled, axes)]

    def first(self, node: Node, b: OpBuilder, x: str) -> str:
        """The NC... view of the input (only a node emitted outside the layout pass needs a Transpose)."""
        rank = self.rank + 2
        if node.attr("data_format", "channels_last") == "channels_first":
            return x
        return b.transpose(x, [0, rank - 1, *range(1, rank - 1)])


def masked_mean(b: OpBuilder, x: str, mask: str) -> str:
    """GlobalAveragePooling1D(x, mask): mean over the steps the (batch, steps) mask keeps; x is NCW."""
    weights = b.unsqueeze(b.op("Cast", mask, to=1), [1])  # 1 = FLOAT
    total = b.reduce("ReduceSum", b.op("Mul", x, weights), [2], keepdims=True)
    return b.op("Div", total, b.reduce("ReduceSum", weights, [2], keepdims=True))


@LAYERS.register("GlobalMaxPooling1D")
class GlobalMaxPooling1D(GlobalPooling):
    rank = 1


@LAYERS.register("GlobalMaxPooling2D")
class GlobalMaxPooling2D(GlobalPooling):
    rank = 2


@LAYERS.register("GlobalMaxPooling3D")
class GlobalMaxPooling3D(GlobalPooling):
    rank = 3


@LAYERS.register("GlobalAveragePooling1D")
class GlobalAveragePooling1D(GlobalPooling):
    rank, op_type = 1, "GlobalAveragePool"


@LAYERS.register("GlobalAveragePooling2D")
class GlobalAveragePooling2D(GlobalPooling):
    rank, op_type = 2, "GlobalAveragePool"


@LAYERS.register("GlobalAveragePooling3D")
class GlobalAveragePooling3D(GlobalPooling):
    rank, op_type = 3, "GlobalAveragePool"
