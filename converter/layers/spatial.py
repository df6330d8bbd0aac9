"""Spatial resampling: UpSampling1D/2D/3D, ZeroPadding1D/2D/3D, Cropping1D/2D/3D.

They are `channels_first_only` so a conv stack stays NC... through them (the layout pass would
otherwise have to transpose back to channels_last around each); each reads its spatial axes from its
spec's data_format, which the layout pass switches. The 1-D layers have no data_format in Keras
(always (batch, steps, features)); absent means channels_last. Config parsing and the shape helpers
are windows.py's, shared with the other spatial families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.graph import CHANNELS_LAST
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec
from converter.layers.windows import (
    channels_first_io,
    join_spatial,
    parse_data_format,
    parse_pairs,
    parse_window,
    spatial_axes,
    split_spatial,
)

INT64_MAX = 2**63 - 1
# Keras interpolation -> ONNX Resize attributes. tf.image.resize is half-pixel, not align_corners.
# Its bicubic is not ONNX's cubic (it looks its weights up in a 1024-entry table), so it is emitted
# as two MatMuls with TF's exact weights instead (see `tf_bicubic_matrix`).
INTERPOLATIONS: dict[str, dict[str, Any]] = {
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {},
}
TABLE_SIZE = 1024


def _cubic_table(a: float = -0.5) -> np.ndarray:
    """TF's resize_bicubic coefficient table (Keys' kernel, a = -0.5 for half-pixel centres)."""
    x = (np.arange(TABLE_SIZE + 1) / TABLE_SIZE).astype(np.float32)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


def tf_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of tf.image.resize(bicubic) along one axis: taps outside the input get
    weight 0 and the rest are renormalised, as TF's kernel does."""
    table, scale = _cubic_table(), np.float32(n_in / n_out)
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        at = np.float32((np.float32(o) + np.float32(0.5)) * scale - np.float32(0.5))
        base = int(np.floor(at))
        offset = int(np.rint(np.float32(at - base) * TABLE_SIZE))
        weights = [table[offset, 1], table[offset, 0], table[TABLE_SIZE - offset, 0], table[TABLE_SIZE - offset, 1]]
        taps = [(base + i - 1, float(w)) for i, w in enumerate(weights) if 0 <= base + i - 1 < n_in]
        total = sum(w for _, w in taps)
        for index, w in taps:
            matrix[o, index] += w / total
    return matrix.astype(np.float32)


@dataclass(frozen=True)
class PaddingSpec(LayerSpec):
    """ZeroPadding's `padding` (Keras' own name) as (before, after) per spatial axis."""

    padding: tuple[tuple[int, int], ...]
    data_format: str = CHANNELS_LAST


@dataclass(frozen=True)
class CroppingSpec(LayerSpec):
    cropping: tuple[tuple[int, int], ...]
    data_format: str = CHANNELS_LAST


@dataclass(frozen=True)
class UpSamplingSpec(LayerSpec):
    size: tuple[int, ...]
    interpolation: str = "nearest"
    data_format: str = CHANNELS_LAST


class Spatial(LayerHandler[Any]):
    """Shared shape rule: each spatial length changes by its axis' amounts (`new_length`)."""

    channels_first_only = True
    amounts_key = "padding"  # the argument `amounts` reads

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        raise UnsupportedLayerError(f"{node.kind} has no amounts", layer=node.layer_name, hint="a kconvert bug")

    def data_format(self, node: Node) -> str:
        return str(self.spec(node).data_format)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, data_format = input_shapes[0], self.data_format(node)
        channels, spatial = split_spatial(node, data_format, shape, self.rank)
        out = [self.new_length(n, a, z) for n, (a, z) in zip(spatial, self.amounts(node))]
        return [check_output(node, join_spatial(data_format, shape[0], channels, out), self.amounts_key)]


# ZeroPadding's and Cropping's amounts: [before, after] per axis, not a padding mode. Either name is checked
# as amounts in both classes, so a stray `padding` on a Cropping is refused as amounts, never as a mode.
AMOUNTS_ARGUMENTS = {"padding": "amounts", "cropping": "amounts"}


class ZeroPadding(Spatial):
    keras3_args = "padding data_format"

    argument_kinds = AMOUNTS_ARGUMENTS

    def parse(self, config: Config) -> PaddingSpec:
        return PaddingSpec(data_format=parse_data_format(config),
                           padding=parse_pairs(config, "padding", self.rank, 1))

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return tuple(self.spec(node).padding)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length + before + after if isinstance(length, int) else None

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        begins, ends = [0] * (self.rank + 2), [0] * (self.rank + 2)
        for axis, (before, after) in zip(spatial_axes(self.data_format(node), self.rank), self.amounts(node)):
            begins[axis], ends[axis] = before, after
        return [b.op("Pad", inputs[0], b.ints(begins + ends, "pads"), mode="constant")]


class Cropping(Spatial):
    keras3_args = {
        "Cropping1D": "cropping",
        "Cropping2D": "cropping data_format",
        "Cropping3D": "cropping data_format",
    }
    amounts_key = "cropping"

    argument_kinds = AMOUNTS_ARGUMENTS

    def parse(self, config: Config) -> CroppingSpec:
        return CroppingSpec(data_format=parse_data_format(config),
                            cropping=parse_pairs(config, "cropping", self.rank, 1 if self.rank == 1 else 0))

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return tuple(self.spec(node).cropping)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        if not isinstance(length, int):
            return None
        return length - before - after

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        (shape,) = super().output_shapes(node, input_shapes)
        _, spatial = split_spatial(node, self.data_format(node), shape, self.rank)
        if any(isinstance(n, int) and n <= 0 for n in spatial):
            raise ShapeError(
                f"{node.kind} '{node.layer_name}' crops {self.amounts(node)} from an input of shape "
                f"{tuple(input_shapes[0][1:])}, which leaves nothing", layer=node.layer_name,
                hint="cropping must be smaller than the spatial dims")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        amounts = self.amounts(node)
        starts = [before for before, _ in amounts]
        ends = [-after if after else INT64_MAX for _, after in amounts]
        return [b.slice(inputs[0], starts, ends, spatial_axes(self.data_format(node), self.rank))]


class UpSampling(Spatial):
    keras3_args = {
        "UpSampling1D": "size",
        "UpSampling2D": "size data_format interpolation",
        "UpSampling3D": "size data_format",
    }
    amounts_key = "size"

    argument_kinds = {"size": "window", "length": "positive"}  # `length`: Keras 1 UpSampling1D

    def parse(self, config: Config) -> UpSamplingSpec:
        data_format = parse_data_format(config)
        # Keras 1 spelled UpSampling1D's size `length`.
        key = "length" if self.rank == 1 and not config.has("size") and config.has("length") else "size"
        size = parse_window(config, key, self.rank, 2)
        mode = config.text("interpolation", "nearest").lower()
        where = f"{config.ctx.kind} '{config.ctx.layer_name}'"
        if mode != "nearest" and self.rank != 2:
            raise UnsupportedLayerError(f"{where} has interpolation={mode!r}", layer=config.ctx.layer_name,
                                        hint=f"Keras interpolates only in UpSampling2D; {config.ctx.kind} repeats "
                                        "('nearest')")
        if mode not in INTERPOLATIONS:
            raise UnsupportedLayerError(f"{where} uses interpolation={mode!r}", layer=config.ctx.layer_name,
                                        hint="supported: " + ", ".join(INTERPOLATIONS))
        return UpSamplingSpec(size=size, interpolation=mode, data_format=data_format)

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return tuple((size, size) for size in self.spec(node).size)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length * before if isinstance(length, int) else None

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        mode, sizes = spec.interpolation, list(spec.size)
        if mode == "nearest":  # a plain repeat: right in any layout
            scales = [1.0] * (self.rank + 2)
            for axis, size in zip(spatial_axes(self.data_format(node), self.rank), sizes):
                scales[axis] = float(size)
            return [self.resize(b, inputs[0], scales, mode)]
        if mode == "bicubic":
            return [channels_first_io(node, self.data_format(node), b, inputs[0],
                                      lambda x, n: self.bicubic(b, x, n, sizes))]
        # ONNX Runtime interpolates linearly only over the trailing axes: run it NC...
        scales = [1.0, 1.0, *map(float, sizes)]
        return [channels_first_io(node, self.data_format(node), b, inputs[0],
                                  lambda x, _: self.resize(b, x, scales, mode))]

    def bicubic(self, b: OpBuilder, x: str, lengths: list[Dim], sizes: list[int]) -> str:
        """NCHW: rows = A_h @ x, then rows @ A_w^T."""
        (height, width), (sh, sw) = lengths, sizes
        if not (isinstance(height, int) and isinstance(width, int)):  # output_shapes refuses these first
            raise ShapeError("bicubic UpSampling2D needs a static height and width", layer=self.name_of(b),
                             hint="give the model input a fixed shape")
        rows = b.op("MatMul", b.const(tf_bicubic_matrix(height, height * sh), "rows"), x)
        return b.op("MatMul", rows, b.const(tf_bicubic_matrix(width, width * sw).T.copy(), "cols"))

    def name_of(self, b: OpBuilder) -> str:
        return b.node.layer_name if b.node is not None else ""

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        (shape,) = super().output_shapes(node, input_shapes)
        _, spatial = split_spatial(node, self.data_format(node), input_shapes[0], self.rank)
        if self.spec(node).interpolation == "bicubic":
            self._check_bicubic(node, input_shapes[0], spatial)
        return [shape]

    def _check_bicubic(self, node: Node, shape: Shape, spatial: list[Dim]) -> None:
        if not all(isinstance(n, int) for n in spatial):
            raise UnsupportedLayerError(
                f"{node.kind} '{node.layer_name}' resizes bicubically an input of unknown size "
                f"{tuple(shape[1:])}", layer=node.layer_name,
                hint="kconvert emits TF's exact bicubic weights, which need static height and width: "
                     "give the model input a fixed shape")
        grown = [n * size for n, (size, _) in zip(spatial, self.amounts(node)) if isinstance(n, int)]
        check_elements(node, sum(grown), "bicubic weight tables", "size", MAX_TABLE_ENTRIES)
        check_elements(node, max(n * g for n, g in zip(spatial, grown) if isinstance(n, int)),
                       "a bicubic weight matrix", "size")

    def resize(self, b: OpBuilder, x: str, scales: list[float], mode: str) -> str:
        return b.op("Resize", x, "", b.const(scales, "scales"), **INTERPOLATIONS[mode])


for _rank in (1, 2, 3):
    LAYERS.add(f"ZeroPadding{_rank}D", ZeroPadding(_rank))
    LAYERS.add(f"Cropping{_rank}D", Cropping(_rank))
    LAYERS.add(f"UpSampling{_rank}D", UpSampling(_rank))
