"""ContrastLimitedAdaptiveHistogramEqualization against a numpy transliteration of Keras' `_clahe`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import KconvertError, ShapeError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
NAME = "ContrastLimitedAdaptiveHistogramEqualization"
f32 = np.float32


def _to_range(x: np.ndarray, source: tuple[float, float], target: tuple[float, float]) -> np.ndarray:
    if tuple(source) == tuple(target):
        return x
    lo, hi, t_lo, t_hi = (f32(v) for v in (*source, *target))
    return ((x - lo) / (hi - lo) * (t_hi - t_lo) + t_lo).astype(f32)


def _cdfs(tiles: np.ndarray, clip_limit: float) -> np.ndarray:
    """tiles (B, gh, gw, C, N) of 0..255 bins -> clipped, normalised CDFs (B, gh, gw, C, 256)."""
    count = tiles.shape[-1]
    hists = (tiles[..., None] == np.arange(256)).sum(axis=-2).astype(f32)
    if clip_limit > 0:
        clipped = np.clip(hists, 0, f32(clip_limit * count / 256.0))
        hists = clipped + (hists - clipped).sum(axis=-1, keepdims=True) / f32(256.0)
    cdf = np.cumsum(hists, axis=-1, dtype=f32)
    low = cdf.min(axis=-1, keepdims=True)
    denominator = f32(count) - low
    return np.clip((cdf - low) * f32(255.0) / np.where(denominator == 0, f32(1.0), denominator), 0, 255)


def _grid(size: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(size, dtype=f32) - f32(tile / 2.0)) / f32(tile) + f32(1.0)
    low = np.floor(pos)
    return np.clip(low, 0, tiles + 1).astype(int), np.clip(low + 1, 0, tiles + 1).astype(int), pos - low


def _clahe(images: np.ndarray, clip_limit: float, grid: tuple[int, int]) -> np.ndarray:
    """Keras' `_clahe` on (B, H, W, C) images in [0, 255]."""
    batch, height, width, channels = images.shape
    (gh, gw), (th, tw) = grid, (-(-height // grid[0]), -(-width // grid[1]))
    padded = np.pad(images, [(0, 0), (0, th * gh - height), (0, tw * gw - width), (0, 0)], mode="symmetric")
    bins = np.clip(padded.astype(np.int32), 0, 255)
    tiles = bins.reshape(batch, gh, th, gw, tw, channels).transpose(0, 1, 3, 5, 2, 4).reshape(
        batch, gh, gw, channels, th * tw)
    cdf = np.pad(_cdfs(tiles, clip_limit), [(0, 0), (1, 1), (1, 1), (0, 0), (0, 0)], mode="edge")
    y0, y1, wy = _grid(th * gh, th, gh)
    x0, x1, wx = _grid(tw * gw, tw, gw)
    b, c = np.arange(batch)[:, None, None, None], np.arange(channels)[None, None, None, :]

    def at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return cdf[b, ys[None, :, None, None], xs[None, None, :, None], c, bins]

    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy)[:, :height, :width, :]


def _reference(x: np.ndarray, value_range: tuple[float, float], clip_limit: float, grid: tuple[int, int],
               data_format: str) -> np.ndarray:
    images = x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x
    out = _clahe(_to_range(images, value_range, (0, 255)), clip_limit, grid)
    out = _to_range(out.astype(f32), (0, 255), value_range)
    return out.transpose(0, 3, 1, 2) if data_format == "channels_first" else out


def _convert(tmp_path: Path, fmt: str, shape: tuple[Any, ...], dtype: str = "float32", **config: Any) -> Any:
    model = sequential([layer(NAME, "clahe", **config)], None)
    model["config"]["layers"].insert(0, layer("InputLayer", "in", batch_shape=[None, *shape], dtype=dtype))
    return converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", model, {}))


CASES = [
    ((16, 16, 3), (0, 255), 4.0, (8, 8), "channels_last"),
    ((13, 11, 2), (0, 255), 2.0, (3, 4), "channels_last"),  # symmetric padding of both axes
    ((10, 9, 1), (-1, 1), 0.0, (4, 4), "channels_last"),  # no clipping
    ((3, 12, 10), (0.1, 0.7), 4.0, (2, 3), "channels_first"),
    ((7, 5, 2), (0, 1), 1.0, (1, 1), "channels_last"),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("shape, value_range, clip_limit, grid, data_format", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_clahe(tmp_path: Path, rng: np.random.Generator, fmt: str, shape: tuple[int, ...],
               value_range: tuple[float, float], clip_limit: float, grid: tuple[int, int], data_format: str,
               batch: int) -> None:
    model = _convert(tmp_path, fmt, shape, value_range=list(value_range), clip_limit=clip_limit,
                     tile_grid_size=list(grid), data_format=data_format)
    lo, hi = value_range
    x = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(batch, *shape)).astype(f32)
    x[0, 1] = x[0, 0]  # repeated values: histogram bins with several pixels
    (y,) = run_onnx(model, x)
    assert_close(y, _reference(x, value_range, clip_limit, grid, data_format))


def test_constant_image(tmp_path: Path) -> None:
    """Unclipped tiles all in bin 0 have cdf_min == tile pixels: Keras divides by 1 instead of 0 (zeros out)."""
    model = _convert(tmp_path, "keras", (8, 8, 1), tile_grid_size=[2, 2], clip_limit=0.0)
    x = np.full((2, 8, 8, 1), 0.5, f32)
    (y,) = run_onnx(model, x)
    assert_close(y, _reference(x, (0, 255), 0.0, (2, 2), "channels_last"))
    assert np.array_equal(y, np.zeros_like(x))


def test_unknown_image_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="static image size"):
        _convert(tmp_path, "keras", (None, None, 3))


def test_integer_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KconvertError, match="int32 images"):
        _convert(tmp_path, "keras", (8, 8, 3), dtype="int32")


def test_image_smaller_than_grid_padding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="too small"):
        _convert(tmp_path, "keras", (3, 20, 1), tile_grid_size=[8, 8])


@pytest.mark.parametrize("opset", [13, 18])
def test_opsets(tmp_path: Path, rng: np.random.Generator, opset: int) -> None:
    model = sequential([layer(NAME, "clahe", tile_grid_size=[3, 2])], (9, 7, 2))
    onnx_model = converter.convert(save_keras(tmp_path / "m.keras", model, {}), opset=opset)
    x = rng.uniform(0, 255, size=(2, 9, 7, 2)).astype(f32)
    (y,) = run_onnx(onnx_model, x)
    assert_close(y, _reference(x, (0, 255), 4.0, (3, 2), "channels_last"))
