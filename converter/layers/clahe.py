"""ContrastLimitedAdaptiveHistogramEqualization (Keras 3): CLAHE, applied at inference too.

As `ContrastLimitedAdaptiveHistogramEqualization._clahe` computes it (channels_last; channels_first is
transposed around it): map `value_range` to [0, 255]; pad height and width up to a multiple of
`tile_grid_size` (mode "symmetric"); per tile and channel, a 256-bin histogram of clip(int(x), 0, 255);
clip it at `clip_limit * tile_pixels / 256` and spread the excess evenly over the bins; the normalised CDF
(cdf - min) * 255 / (tile_pixels - min), clipped to [0, 255], edge-padded by one tile on every side; each
pixel's value is the bilinear blend of the four neighbouring tiles' CDFs at its bin; map back to
`value_range`. Every index and weight depends only on the (static) image size, so they are constants here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.limits import check_elements
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import parse_data_format

NAME = "ContrastLimitedAdaptiveHistogramEqualization"


@dataclass(frozen=True)
class ClaheSpec(LayerSpec):
    value_range: tuple[float, float] = (0.0, 255.0)
    tile_grid_size: tuple[int, int] = (8, 8)
    clip_limit: float = 4.0
    data_format: str = "channels_last"


def _pair(config: Config, key: str, default: list[float]) -> tuple[float, float]:
    value = config.value(key, default)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UnsupportedLayerError(f"{NAME} '{config.ctx.layer_name}' has {key}={value!r}",
                                    layer=config.ctx.layer_name, hint=f"{key} must be a pair")
    return float(value[0]), float(value[1])


def _grid(config: Config) -> tuple[int, int]:
    grid_h, grid_w = _pair(config, "tile_grid_size", [8, 8])
    if grid_h != int(grid_h) or grid_w != int(grid_w) or grid_h < 1 or grid_w < 1:
        raise UnsupportedLayerError(f"{NAME} '{config.ctx.layer_name}' has tile_grid_size={(grid_h, grid_w)}",
                                    layer=config.ctx.layer_name, hint="tile_grid_size must be two positive integers")
    return int(grid_h), int(grid_w)


def _static_hwc(node: Node, spec: ClaheSpec, shape: Shape) -> tuple[int, int, int]:
    """(height, width, channels) of the Keras-layout input; CLAHE's tiling needs them known."""
    dims = shape[1:] if spec.data_format == "channels_last" else (*shape[2:], shape[1])
    known = [d for d in dims if isinstance(d, int)]
    if len(known) != 3:
        raise ShapeError(f"{NAME} '{node.layer_name}' needs a static image size, got {tuple(shape[1:])}",
                         layer=node.layer_name, hint="give the Input a fixed (height, width, channels)")
    return known[0], known[1], known[2]


def _rescale(b: OpBuilder, x: str, source: tuple[float, float], target: tuple[float, float]) -> str:
    """Keras' _transform_value_range: (x - lo) / (hi - lo) * (t_hi - t_lo) + t_lo, skipped when equal."""
    if source == target:
        return x
    # Keras takes the spans in float32, after rounding each end.
    lo, hi, t_lo, t_hi = (np.float32(v) for v in (*source, *target))
    unit = b.op("Div", b.op("Sub", x, b.const(lo, "source_min")), b.const(hi - lo, "span"))
    return b.op("Add", b.op("Mul", unit, b.const(t_hi - t_lo, "target_span")), b.const(t_lo, "t_min"))


def _bins(b: OpBuilder, x: str) -> str:
    """Keras' clip(cast(x, int32), 0, 255), as float: truncation equals floor once clipped to [0, 255]."""
    return b.op("Floor", b.op("Clip", x, b.scalar(0.0, "zero"), b.scalar(255.0, "top")))


def _histograms(b: OpBuilder, bins: str, hwc: tuple[int, int, int], grid: tuple[int, int]) -> str:
    """(batch, grid_h, grid_w, C, 256) counts of the symmetric-padded image's tiles."""
    (height, width, channels), (grid_h, grid_w) = hwc, grid
    tile_h, tile_w = -(-height // grid_h), -(-width // grid_w)
    rows = np.pad(np.arange(height, dtype=np.int64), (0, tile_h * grid_h - height), mode="symmetric")
    cols = np.pad(np.arange(width, dtype=np.int64), (0, tile_w * grid_w - width), mode="symmetric")
    if len(rows) > height:
        bins = b.op("Gather", bins, b.const(rows, "pad_rows", np.int64), axis=1)
    if len(cols) > width:
        bins = b.op("Gather", bins, b.const(cols, "pad_cols", np.int64), axis=2)
    tiled = b.reshape(bins, [0, grid_h, tile_h, grid_w, tile_w, channels])
    flat = b.reshape(b.transpose(tiled, [0, 1, 3, 5, 2, 4]), [0, grid_h, grid_w, channels, tile_h * tile_w, 1])
    hot = b.op("Equal", flat, b.const(np.arange(256, dtype=np.float32), "levels"))
    return b.reduce("ReduceSum", b.op("Cast", hot, to=1), [4], keepdims=False)


def _cdf(b: OpBuilder, hists: str, clip_limit: float, pixels: int) -> str:
    """Clip-and-redistribute, then the normalised CDF, as Keras orders the float32 arithmetic."""
    if clip_limit > 0:
        clipped = b.op("Clip", hists, b.scalar(0.0, "zero"), b.scalar(clip_limit * pixels / 256.0, "limit"))
        excess = b.reduce("ReduceSum", b.op("Sub", hists, clipped), [4], keepdims=True)
        hists = b.op("Add", clipped, b.op("Div", excess, b.scalar(256.0, "bins")))
    cdf = b.op("CumSum", hists, b.const(np.asarray(4, np.int64), "axis", np.int64))
    low = b.reduce("ReduceMin", cdf, [4], keepdims=True)
    numerator = b.op("Mul", b.op("Sub", cdf, low), b.scalar(255.0, "full"))
    denominator = b.op("Sub", b.scalar(float(pixels), "pixels"), low)
    one = b.scalar(1.0, "one")
    denominator = b.op("Where", b.op("Equal", denominator, b.scalar(0.0, "zero")), one, denominator)
    return b.op("Clip", b.op("Div", numerator, denominator), b.scalar(0.0, "zero"), b.scalar(255.0, "full"))


def _axis_plan(size: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keras' float32 grid for one axis (first `size` positions): tile indices into the edge-padded
    CDFs (floor, floor + 1, clipped to [0, tiles + 1]) and the weight of the second."""
    tile = -(-size // tiles)
    grid = (np.arange(size, dtype=np.float32) - np.float32(tile / 2.0)) / np.float32(tile) + np.float32(1.0)
    low = np.floor(grid)
    weight = grid - low
    first = np.clip(low, 0, tiles + 1).astype(np.int64)
    second = np.clip(low + np.float32(1.0), 0, tiles + 1).astype(np.int64)
    return first, second, weight


def _interpolate(b: OpBuilder, cdf: str, bins: str, hwc: tuple[int, int, int], grid: tuple[int, int]) -> str:
    """Bilinear blend of the four neighbouring tiles' CDFs at each pixel's bin (on the unpadded image:
    Keras computes the padded one and crops, pixel by pixel the same)."""
    (height, width, channels), (grid_h, grid_w) = hwc, grid
    edge_rows = np.asarray([0, *range(grid_h), grid_h - 1], np.int64)
    edge_cols = np.asarray([0, *range(grid_w), grid_w - 1], np.int64)
    padded = b.op("Gather", b.op("Gather", cdf, b.const(edge_rows, "edge_rows", np.int64), axis=1),
                  b.const(edge_cols, "edge_cols", np.int64), axis=2)
    table = b.reshape(padded, [0, -1])
    stride_x, stride_y = 256 * channels, 256 * channels * (grid_w + 2)
    y0, y1, wy = _axis_plan(height, grid_h)
    x0, x1, wx = _axis_plan(width, grid_w)
    channel = np.arange(channels, dtype=np.int64) * 256
    pixel = b.op("Cast", bins, to=7)

    def corner(ys: np.ndarray, xs: np.ndarray, name: str) -> str:
        base = ys[:, None, None] * stride_y + xs[None, :, None] * stride_x + channel[None, None, :]
        index = b.reshape(b.op("Add", pixel, b.const(base, name, np.int64)), [0, -1])
        return b.op("Reshape", b.op("GatherElements", table, index, axis=1), b.ints([0, height, width, channels],
                                                                                   "shape"))

    wy_c, wx_c = b.const(wy[:, None, None], "wy"), b.const(wx[None, :, None], "wx")
    wy_n, wx_n = b.const(1.0 - wy[:, None, None], "wy_rest"), b.const(1.0 - wx[None, :, None], "wx_rest")
    top = b.op("Add", b.op("Mul", corner(y0, x0, "nw"), wx_n), b.op("Mul", corner(y0, x1, "ne"), wx_c))
    bottom = b.op("Add", b.op("Mul", corner(y1, x0, "sw"), wx_n), b.op("Mul", corner(y1, x1, "se"), wx_c))
    return b.op("Add", b.op("Mul", top, wy_n), b.op("Mul", bottom, wy_c))


@LAYERS.register(NAME)
class ContrastLimitedAdaptiveHistogramEqualization(LayerHandler[ClaheSpec]):
    keras_availability = "keras3"

    def parse(self, config: Config) -> ClaheSpec:
        """data_format, then the two pairs, are checked here: a bad one is refused before the rest."""
        data_format = parse_data_format(config)
        return parse_fields(ClaheSpec, config, data_format=data_format,
                            value_range=_pair(config, "value_range", [0, 255]), tile_grid_size=_grid(config))

    def check(self, node: Node) -> None:
        dtype = node.inputs[0].dtype if node.inputs else "float32"
        if dtype != "float32":
            raise UnsupportedLayerError(f"{NAME} '{node.layer_name}' receives {dtype} images",
                                        layer=node.layer_name, hint="feed float32 images")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_rank(node, input_shapes[0], 4, "(batch, height, width, channels)")
        spec = self.spec(node)
        height, width, channels = _static_hwc(node, spec, input_shapes[0])
        check_elements(node, (height, width, channels), "per-pixel index tables", "input shape")
        grid_h, grid_w = spec.tile_grid_size
        check_elements(node, (grid_h + 2, grid_w + 2, channels, 256), "tile histograms", "tile_grid_size")
        # Keras pads with tf.pad(mode="SYMMETRIC"), which fails when the padding exceeds the image.
        if -(-height // grid_h) * grid_h - height > height or -(-width // grid_w) * grid_w - width > width:
            raise ShapeError(f"{NAME} '{node.layer_name}': a {height}x{width} image is too small for "
                             f"tile_grid_size={(grid_h, grid_w)} (Keras cannot pad it either)",
                             layer=node.layer_name, hint="use a smaller tile_grid_size")
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        first = spec.data_format == "channels_first"
        shape = node.inputs[0].shape
        assert shape is not None  # shape inference ran
        hwc, grid = _static_hwc(node, spec, shape), spec.tile_grid_size
        images = b.transpose(inputs[0], [0, 2, 3, 1]) if first else inputs[0]
        bins = _bins(b, _rescale(b, images, spec.value_range, (0.0, 255.0)))
        tile_pixels = -(-hwc[0] // grid[0]) * -(-hwc[1] // grid[1])
        cdf = _cdf(b, _histograms(b, bins, hwc, grid), spec.clip_limit, tile_pixels)
        result = _rescale(b, _interpolate(b, cdf, bins, hwc, grid), (0.0, 255.0), spec.value_range)
        return [b.transpose(result, [0, 3, 1, 2]) if first else result]
