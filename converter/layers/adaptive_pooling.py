"""AdaptiveAveragePooling1D/2D/3D and AdaptiveMaxPooling1D/2D/3D (Keras 3.12+).

Output cell i of an axis of length L pooled to n cells covers [floor(i*L/n), ceil((i+1)*L/n)), so
every window has one of two sizes: small = ceil(L/n) or small + 1. Keras' TensorFlow backend pools
each axis in turn with both window sizes (stride 1, 'valid') and gathers each cell from the pool of
its size at its start; this module emits the same per-axis "two pools and a Gather" on NC... data.
The spatial sizes must be static, as Keras itself requires.
"""

from __future__ import annotations

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.conv import channels_first_io
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.pooling import meaning
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.windows import join_shape, record_format, split_shape


def windows(length: int, cells: int) -> list[tuple[int, int]]:
    """(start, size) of each output cell, from Keras' start/end formula in exact integer arithmetic."""
    out = []
    for i in range(cells):
        start = min(i * length // cells, length - 1)
        end = min(-(-(i + 1) * length // cells), length)
        out.append((start, end - start))
    return out


class AdaptivePooling(LayerHandler):
    channels_first_only = True
    rank = 2
    op_type = "AveragePool"

    def sizes(self, node: Node) -> tuple[int, ...]:
        value = node.attrs.get("output_size")
        values = [value] * self.rank if isinstance(value, int) else list(value if value is not None else [])
        if len(values) == 1 and self.rank > 1:
            values = values * self.rank
        if len(values) != self.rank or not all(isinstance(v, int) and v > 0 for v in values):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has output_size={value!r}; expected "
                                        f"{self.rank} positive ints", layer=node.layer_name,
                                        hint="fix the layer config")
        return tuple(int(v) for v in values)

    def check(self, node: Node) -> None:
        record_format(node)
        check_elements(node, sum(self.sizes(node)), "pooling window tables", "output_size", MAX_TABLE_ENTRIES)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels, spatial = split_shape(node, shape, self.rank, meaning(self.rank))
        if not all(isinstance(d, int) for d in spatial):
            raise ShapeError(f"{node.kind} '{node.layer_name}' needs static spatial sizes but its input is "
                             f"{shape}", layer=node.layer_name,
                             hint="Keras requires them too: give the Input a fixed spatial shape")
        return [check_output(node, join_shape(node, shape[0], channels, list(self.sizes(node))), "output_size")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        sizes = self.sizes(node)

        def body(x: str, lengths: list[Dim]) -> str:
            for axis, (length, cells) in enumerate(zip(lengths, sizes)):
                x = self._pool_axis(b, x, axis, int(length), cells)  # type: ignore[arg-type]
            return x

        return [channels_first_io(node, b, inputs[0], body)]

    def _pool_axis(self, b: OpBuilder, x: str, axis: int, length: int, cells: int) -> str:
        """Pool spatial axis `axis` of an NC... tensor from `length` to `cells`."""
        cuts = windows(length, cells)
        if all(size == 1 for _, size in cuts) and [s for s, _ in cuts] == list(range(length)):
            return x
        pools, offsets, offset = [], {}, 0
        for size in sorted({size for _, size in cuts}):
            kernel = [1] * self.rank
            kernel[axis] = size
            pools.append(x if size == 1 else b.op(self.op_type, x, kernel_shape=kernel, strides=[1] * self.rank))
            offsets[size] = offset
            offset += length - size + 1
        stacked = pools[0] if len(pools) == 1 else b.op("Concat", *pools, axis=axis + 2)
        indices = b.ints([offsets[size] + start for start, size in cuts], "cells")
        return b.op("Gather", stacked, indices, axis=axis + 2)


@LAYERS.register("AdaptiveAveragePooling1D")
class AdaptiveAveragePooling1D(AdaptivePooling):
    rank = 1


@LAYERS.register("AdaptiveAveragePooling2D")
class AdaptiveAveragePooling2D(AdaptivePooling):
    rank = 2


@LAYERS.register("AdaptiveAveragePooling3D")
class AdaptiveAveragePooling3D(AdaptivePooling):
    rank = 3


@LAYERS.register("AdaptiveMaxPooling1D")
class AdaptiveMaxPooling1D(AdaptivePooling):
    rank, op_type = 1, "MaxPool"


@LAYERS.register("AdaptiveMaxPooling2D")
class AdaptiveMaxPooling2D(AdaptivePooling):
    rank, op_type = 2, "MaxPool"


@LAYERS.register("AdaptiveMaxPooling3D")
class AdaptiveMaxPooling3D(AdaptivePooling):
    rank, op_type = 3, "MaxPool"
