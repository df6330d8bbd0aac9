"""AdaptiveAveragePooling1D/2D/3D and AdaptiveMaxPooling1D/2D/3D (Keras 3.12+).

Output cell i of an axis of length L pooled to n cells covers [floor(i*L/n), ceil((i+1)*L/n)), so
every window has one of two sizes: small = ceil(L/n) or small + 1. Keras' TensorFlow backend pools
each axis in turn with both window sizes (stride 1, 'valid') and gathers each cell from the pool of
its size at its start; this module emits the same per-axis "two pools and a Gather" on NC... data.
The spatial sizes must be static, as Keras itself requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.graph import CHANNELS_LAST
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec
from converter.layers.windows import channels_first_io, join_spatial, parse_data_format, split_spatial


def windows(length: int, cells: int) -> list[tuple[int, int]]:
    """(start, size) of each output cell, from Keras' start/end formula in exact integer arithmetic."""
    out = []
    for i in range(cells):
        start = min(i * length // cells, length - 1)
        end = min(-(-(i + 1) * length // cells), length)
        out.append((start, end - start))
    return out


@dataclass(frozen=True)
class AdaptivePoolSpec(LayerSpec):
    output_size: tuple[int, ...]
    data_format: str = CHANNELS_LAST


class AdaptivePooling(LayerHandler[AdaptivePoolSpec]):
    keras_availability = "keras3"
    channels_first_only = True

    required_arguments = ("output_size",)

    def __init__(self, rank: int, op_type: str) -> None:
        self.rank, self.op_type = rank, op_type

    def parse(self, config: Config) -> AdaptivePoolSpec:
        data_format = parse_data_format(config)
        value = config.value("output_size")
        values = [value] * self.rank if isinstance(value, int) else list(value if value is not None else [])
        if len(values) == 1 and self.rank > 1:
            values = values * self.rank
        if len(values) != self.rank or not all(isinstance(v, int) and v > 0 for v in values):
            raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has output_size={value!r}; "
                                        f"expected {self.rank} positive ints", layer=config.ctx.layer_name,
                                        hint="fix the layer config")
        return AdaptivePoolSpec(output_size=tuple(int(v) for v in values), data_format=data_format)

    def check(self, node: Node) -> None:
        check_elements(node, sum(self.spec(node).output_size), "pooling window tables", "output_size",
                       MAX_TABLE_ENTRIES)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec, shape = self.spec(node), input_shapes[0]
        channels, spatial = split_spatial(node, spec.data_format, shape, self.rank)
        if not all(isinstance(d, int) for d in spatial):
            raise ShapeError(f"{node.kind} '{node.layer_name}' needs static spatial sizes but its input is "
                             f"{shape}", layer=node.layer_name,
                             hint="Keras requires them too: give the Input a fixed spatial shape")
        out = join_spatial(spec.data_format, shape[0], channels, list(spec.output_size))
        return [check_output(node, out, "output_size")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)

        def body(x: str, lengths: list[Dim]) -> str:
            for axis, (length, cells) in enumerate(zip(lengths, spec.output_size)):
                x = self._pool_axis(b, x, axis, int(length), cells)  # type: ignore[arg-type]
            return x

        return [channels_first_io(node, spec.data_format, b, inputs[0], body)]

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


for _rank in (1, 2, 3):
    LAYERS.add(f"AdaptiveAveragePooling{_rank}D", AdaptivePooling(_rank, "AveragePool"))
    LAYERS.add(f"AdaptiveMaxPooling{_rank}D", AdaptivePooling(_rank, "MaxPool"))
