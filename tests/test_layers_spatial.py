"""UpSampling (nearest, bilinear, bicubic), ZeroPadding and Cropping, both layouts, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def run_layer(tmp_path: Path, fmt: str, x: np.ndarray, data_format: str | None, kind: str,
              **config: Any) -> np.ndarray:
    """Convert one layer given channels_last data; returns the channels_last result."""
    first = data_format == "channels_first"
    feed = np.moveaxis(x, -1, 1) if first else x
    extra = {} if data_format is None else {"data_format": data_format}
    cfg = layer(kind, "layer", **extra, **config)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([cfg], feed.shape[1:]), {})
    (y,) = run_onnx(converter.convert(path), feed)
    return np.moveaxis(y, 1, -1) if first else y


LAYOUTS = ["channels_last", "channels_first"]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("kind, spatial, size", [
    ("UpSampling2D", (3, 4), (2, 3)), ("UpSampling3D", (2, 3, 2), (2, 1, 3)),
])
def test_upsampling_nearest(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str,
                            kind: str, spatial: tuple[int, ...], size: tuple[int, ...]) -> None:
    x = rng.normal(size=(batch, *spatial, 2)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, kind, size=list(size))
    expected = x
    for axis, repeat in enumerate(size, start=1):
        expected = np.repeat(expected, repeat, axis=axis)
    assert_close(y, expected)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_upsampling1d_and_keras1_length(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    x = rng.normal(size=(batch, 4, 3)).astype(np.float32)
    assert_close(run_layer(tmp_path, fmt, x, None, "UpSampling1D", size=3), np.repeat(x, 3, axis=1))
    assert_close(run_layer(tmp_path, fmt, x, None, "UpSampling1D", length=2), np.repeat(x, 2, axis=1))


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Half-pixel linear interpolation (tf.image.resize), edges clamped."""
    at = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(at).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1 - (at - low))
    np.add.at(matrix, (np.arange(n_out), high), at - low)
    return matrix


def keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """TF's bicubic: Keys (a = -0.5) at half-pixel positions whose fraction TF rounds to 1/1024;
    taps outside the input are dropped and the rest renormalised."""
    matrix = np.zeros((n_out, n_in))
    for o in range(n_out):
        at = (o + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(at))
        frac = np.rint((at - base) * 1024) / 1024
        taps = [(base + i, keys_cubic(np.asarray(frac - i))) for i in (-1, 0, 1, 2) if 0 <= base + i < n_in]
        total = sum(float(w) for _, w in taps)
        for index, w in taps:
            matrix[o, index] += float(w) / total
    return matrix


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("interpolation, matrix", [("bilinear", bilinear_matrix), ("bicubic", bicubic_matrix)])
def test_upsampling2d_interpolated(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int,
                                   data_format: str, interpolation: str, matrix: Any) -> None:
    x = rng.normal(size=(batch, 4, 5, 2)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, "UpSampling2D", size=[3, 2], interpolation=interpolation)
    expected = np.einsum("oh,pw,nhwc->nopc", matrix(4, 12), matrix(5, 10), x)
    assert_close(y, expected.astype(np.float32))


PAD_CASES = [  # kind, spatial, amounts as Keras stores them, per-axis (before, after)
    ("ZeroPadding1D", (4,), [1, 2], [(1, 2)]),
    ("ZeroPadding1D", (4,), 2, [(2, 2)]),
    ("ZeroPadding2D", (3, 4), [[1, 2], [0, 3]], [(1, 2), (0, 3)]),
    ("ZeroPadding2D", (3, 4), [1, 2], [(1, 1), (2, 2)]),
    ("ZeroPadding3D", (2, 3, 2), [[1, 0], [0, 1], [2, 1]], [(1, 0), (0, 1), (2, 1)]),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("kind, spatial, amounts, pads", PAD_CASES)
def test_zero_padding(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                      spatial: tuple[int, ...], amounts: Any, pads: list[tuple[int, int]]) -> None:
    x = rng.normal(size=(batch, *spatial, 2)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, kind, padding=amounts)
    assert_close(y, np.pad(x, [(0, 0), *pads, (0, 0)]))


CROP_CASES = [  # kind, spatial, cropping as Keras stores it, per-axis (before, after); Cropping1D has no data_format
    ("Cropping2D", (5, 6), [[1, 0], [2, 1]], [(1, 0), (2, 1)]),
    ("Cropping2D", (5, 6), 1, [(1, 1), (1, 1)]),
    ("Cropping3D", (3, 4, 5), [[1, 0], [0, 1], [1, 1]], [(1, 0), (0, 1), (1, 1)]),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("kind, spatial, amounts, crops", CROP_CASES)
def test_cropping(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                  spatial: tuple[int, ...], amounts: Any, crops: list[tuple[int, int]]) -> None:
    x = rng.normal(size=(batch, *spatial, 2)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, kind, cropping=amounts)
    assert_close(y, x[(slice(None), *[slice(a, n - z) for (a, z), n in zip(crops, spatial)])])


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("amounts, crops", [([1, 2], (1, 2)), (None, (1, 1))])
def test_cropping1d(tmp_path: Path, rng: np.random.Generator, fmt: str, amounts: Any, crops: tuple[int, int]) -> None:
    x = rng.normal(size=(3, 6, 2)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, None, "Cropping1D", cropping=amounts)
    assert_close(y, x[:, crops[0]:6 - crops[1]])


def test_upsampling_stack_stays_channels_first(tmp_path: Path, rng: np.random.Generator) -> None:
    """ZeroPadding -> UpSampling -> Cropping between convs: no Transpose besides the input's and output's."""
    w1, w2 = rng.normal(size=(1, 1, 2, 3)).astype(np.float32), rng.normal(size=(1, 1, 3, 2)).astype(np.float32)
    layers = [layer("Conv2D", "c1", filters=3, kernel_size=[1, 1], use_bias=False),
              layer("ZeroPadding2D", "pad", padding=[[1, 1], [1, 1]]), layer("UpSampling2D", "up", size=[2, 2]),
              layer("Cropping2D", "crop", cropping=[[1, 2], [0, 1]]),
              layer("Conv2D", "c2", filters=2, kernel_size=[1, 1], use_bias=False)]
    path = save_keras(tmp_path / "m.keras", sequential(layers, (3, 4, 2)), {"c1": [w1], "c2": [w2]})
    model = converter.convert(path)
    x = rng.normal(size=(2, 3, 4, 2)).astype(np.float32)
    (y,) = run_onnx(model, x)
    mid = np.pad(x @ w1[0, 0], [(0, 0), (1, 1), (1, 1), (0, 0)]).repeat(2, axis=1).repeat(2, axis=2)
    assert_close(y, mid[:, 1:-2, 0:-1] @ w2[0, 0])
    assert [n.op_type for n in model.graph.node].count("Transpose") == 2


def test_unknown_interpolation_is_refused(tmp_path: Path) -> None:
    cfg = layer("UpSampling2D", "up", size=[2, 2], interpolation="lanczos3")
    with pytest.raises(UnsupportedLayerError, match="lanczos3"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([cfg], (4, 4, 2)), {}))


def test_bicubic_needs_static_spatial_dims(tmp_path: Path) -> None:
    cfg = layer("UpSampling2D", "up", size=[2, 2], interpolation="bicubic")
    with pytest.raises(UnsupportedLayerError, match="unknown size"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([cfg], (None, None, 2)), {}))


def test_cropping_everything_is_a_shape_error(tmp_path: Path) -> None:
    cfg = layer("Cropping2D", "crop", cropping=[[2, 2], [0, 0]])
    with pytest.raises(ShapeError, match="leaves nothing"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([cfg], (4, 4, 2)), {}))
