"""Spatial resampling: UpSampling1D/2D/3D, ZeroPadding1D/2D/3D, Cropping1D/2D/3D.

They are `channels_first_only` so a conv stack stays NC... through them (the layout pass would
otherwise have to transpose back to channels_last around each); each also reads its spatial axes
from the current data_format, so it is right in either layout. The 1-D layers have no
data_format in Keras (always (batch, steps, features)); absent means channels_last.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.conv import channels_first_io
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.windows import CHANNELS_FIRST, data_format, ints, join_shape, pairs, record_format, split_shape

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


def meaning(rank: int) -> str:
    axes = ["steps"] if rank == 1 else [f"dim{i + 1}" for i in range(rank)]
    return f"(batch, {', '.join(axes)}, channels)"


def spatial_axes(node: Node, rank: int) -> list[int]:
    return list(range(2, rank + 2)) if data_format(node) == CHANNELS_FIRST else list(range(1, rank + 1))


class Spatial(LayerHandler):
    channels_first_only = True
    rank = 2
    amounts_key = "padding"  # the argument `amounts` reads

    def check(self, node: Node) -> None:
        record_format(node)
        self.amounts(node)

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        raise UnsupportedLayerError(f"{node.kind} has no amounts", layer=node.layer_name, hint="a kconvert bug")

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        channels, spatial = split_shape(node, shape, self.rank, meaning(self.rank))
        out = [self.new_length(n, a, z) for n, (a, z) in zip(spatial, self.amounts(node))]
        return [check_output(node, join_shape(node, shape[0], channels, out), self.amounts_key)]


class ZeroPadding(Spatial):
    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return pairs(node, "padding", self.rank, 1)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length + before + after if isinstance(length, int) else None

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        begins, ends = [0] * (self.rank + 2), [0] * (self.rank + 2)
        for axis, (before, after) in zip(spatial_axes(node, self.rank), self.amounts(node)):
            begins[axis], ends[axis] = before, after
        return [b.op("Pad", inputs[0], b.ints(begins + ends, "pads"), mode="constant")]


class Cropping(Spatial):
    amounts_key = "cropping"

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return pairs(node, "cropping", self.rank, 1 if self.rank == 1 else 0)

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        if not isinstance(length, int):
            return None
        return length - before - after

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        (shape,) = super().output_shapes(node, input_shapes)
        _, spatial = split_shape(node, shape, self.rank, meaning(self.rank))
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
        return [b.slice(inputs[0], starts, ends, spatial_axes(node, self.rank))]


class UpSampling(Spatial):
    amounts_key = "size"

    def check(self, node: Node) -> None:
        super().check(node)
        mode = self.interpolation(node)
        if mode != "nearest" and self.rank != 2:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has interpolation={mode!r}",
                                        layer=node.layer_name, hint="Keras interpolates only in UpSampling2D; "
                                        f"{node.kind} repeats ('nearest')")
        if mode not in INTERPOLATIONS:
            raise UnsupportedLayerError(
                f"{node.kind} '{node.layer_name}' uses interpolation={mode!r}", layer=node.layer_name,
                hint="supported: " + ", ".join(INTERPOLATIONS))

    def interpolation(self, node: Node) -> str:
        return str(node.attr("interpolation", "nearest")).lower()

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        return tuple((size, size) for size in ints(node, "size", self.rank, 2))

    def new_length(self, length: Dim, before: int, after: int) -> Dim:
        return length * before if isinstance(length, int) else None

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        mode = self.interpolation(node)
        sizes = [size for size, _ in self.amounts(node)]
        if mode == "nearest":  # a plain repeat: right in any layout
            scales = [1.0] * (self.rank + 2)
            for axis, size in zip(spatial_axes(node, self.rank), sizes):
                scales[axis] = float(size)
            return [self.resize(b, inputs[0], scales, mode)]
        if mode == "bicubic":
            return [channels_first_io(node, b, inputs[0], lambda x, n: self.bicubic(b, x, n, sizes))]
        # ONNX Runtime interpolates linearly only over the trailing axes: run it NC...
        scales = [1.0, 1.0, *map(float, sizes)]
        return [channels_first_io(node, b, inputs[0], lambda x, _: self.resize(b, x, scales, mode))]

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
        _, spatial = split_shape(node, input_shapes[0], self.rank, meaning(self.rank))
        if self.interpolation(node) == "bicubic" and not all(isinstance(n, int) for n in spatial):
            raise UnsupportedLayerError(
                f"{node.kind} '{node.layer_name}' resizes bicubically an input of unknown size "
                f"{tuple(input_shapes[0][1:])}", layer=node.layer_name,
                hint="kconvert emits TF's exact bicubic weights, which need static height and width: "
                     "give the model input a fixed shape")
        if self.interpolation(node) == "bicubic":
            grown = [n * size for n, (size, _) in zip(spatial, self.amounts(node)) if isinstance(n, int)]
            check_elements(node, sum(grown), "bicubic weight tables", "size", MAX_TABLE_ENTRIES)
            check_elements(node, max(n * g for n, g in zip(spatial, grown) if isinstance(n, int)),
                           "a bicubic weight matrix", "size")
        return [shape]

    def resize(self, b: OpBuilder, x: str, scales: list[float], mode: str) -> str:
        return b.op("Resize", x, "", b.const(scales, "scales"), **INTERPOLATIONS[mode])


@LAYERS.register("ZeroPadding1D")
class ZeroPadding1D(ZeroPadding):
    rank = 1


@LAYERS.register("ZeroPadding2D")
class ZeroPadding2D(ZeroPadding):
    rank = 2


@LAYERS.register("ZeroPadding3D")
class ZeroPadding3D(ZeroPadding):
    rank = 3


@LAYERS.register("Cropping1D")
class Cropping1D(Cropping):
    rank = 1


@LAYERS.register("Cropping2D")
class Cropping2D(Cropping):
    rank = 2


@LAYERS.register("Cropping3D")
class Cropping3D(Cropping):
    rank = 3


@LAYERS.register("UpSampling1D")
class UpSampling1D(UpSampling):
    rank = 1

    def amounts(self, node: Node) -> tuple[tuple[int, int], ...]:
        key = "length" if node.attrs.get("size") is None and node.attrs.get("length") is not None else "size"
        (size,) = ints(node, key, 1, 2)  # Keras 1 spelled it `length`
        return ((size, size),)


@LAYERS.register("UpSampling2D")
class UpSampling2D(UpSampling):
    rank = 2


@LAYERS.register("UpSampling3D")
class UpSampling3D(UpSampling):
    rank = 3
