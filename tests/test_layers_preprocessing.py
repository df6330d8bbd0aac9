"""Rescaling, Normalization, Resizing and CenterCrop from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError
from converter.layers.preprocessing import tf_bicubic_matrix

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
IMAGE = (10, 14, 3)


def _image(rng: np.random.Generator, batch: int) -> np.ndarray:
    return (rng.uniform(size=(batch, *IMAGE)) * 255).astype("float32")


def _convert_run(tmp_path: Path, fmt: str, layers: list[dict[str, Any]], x: np.ndarray,
                 weights: dict[str, Any] | None = None) -> np.ndarray:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential(layers, x.shape[1:]), weights or {})
    return run_onnx(converter.convert(path), x)[0]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("scale, offset", [(1 / 255, 0.0), (1 / 127.5, -1.0), ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])])
@pytest.mark.parametrize("batch", [1, 3])
def test_rescaling(tmp_path: Path, rng: np.random.Generator, fmt: str, scale: Any, offset: Any, batch: int) -> None:
    x = _image(rng, batch)
    y = _convert_run(tmp_path, fmt, [layer("Rescaling", "rescaling", scale=scale, offset=offset)], x)
    assert_close(y, (x * np.asarray(scale, "float32") + np.asarray(offset, "float32")).astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("axis, stat_shape", [(-1, (3,)), ([1, 3], (10, 3)), (None, ())])
@pytest.mark.parametrize("batch", [1, 3])
def test_normalization_adapted(tmp_path: Path, rng: np.random.Generator, fmt: str, invert: bool, axis: Any,
                               stat_shape: tuple[int, ...], batch: int) -> None:
    mean = rng.normal(size=stat_shape).astype("float32") * 50
    variance = rng.uniform(1, 900, size=stat_shape).astype("float32")
    variance.flat[0] = 0.0  # a constant feature: the std is floored at 1e-7
    weights = {"normalization": [mean, variance, np.array(100, "int64")]}
    config = layer("Normalization", "normalization", axis=axis, invert=invert, mean=None, variance=None)
    x = _image(rng, batch) / 255
    y = _convert_run(tmp_path, fmt, [config], x, weights)
    keep = [] if axis is None else [a % 4 for a in ([axis] if isinstance(axis, int) else axis)]
    bshape = [x.shape[a] if a in keep else 1 for a in range(4)]
    m, std = mean.reshape(bshape), np.maximum(np.sqrt(variance), 1e-7).reshape(bshape)
    assert_close(y, (x * std + m if invert else (x - m) / std).astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("mean, variance", [([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), (3.0, 2.0)])
def test_normalization_with_given_statistics(tmp_path: Path, rng: np.random.Generator, fmt: str, mean: Any,
                                             variance: Any) -> None:
    x = _image(rng, 2)
    y = _convert_run(tmp_path, fmt, [layer("Normalization", "normalization", axis=-1, mean=mean, variance=variance)], x)
    assert_close(y, ((x - np.asarray(mean, "float32")) / np.sqrt(np.asarray(variance, "float32"))).astype("float32"))


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """tf.image.resize bilinear (half-pixel centres) as an (out, in) matrix."""
    matrix = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        low = int(np.floor(src))
        frac = src - low
        matrix[o, min(max(low, 0), n_in - 1)] += 1 - frac
        matrix[o, min(max(low + 1, 0), n_in - 1)] += frac
    return matrix


def _nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
    """TF's half-pixel nearest neighbour; in float32 as TF computes it (14 -> 23 hits 6.9999 vs 7 at o=11)."""
    matrix = np.zeros((n_out, n_in))
    scale = np.float32(n_in) / np.float32(n_out)
    for o in range(n_out):
        matrix[o, min(int(np.floor((np.float32(o) + np.float32(0.5)) * scale)), n_in - 1)] = 1
    return matrix


MATRICES = {"bilinear": _bilinear_matrix, "nearest": _nearest_matrix, "bicubic": tf_bicubic_matrix}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("interpolation", sorted(MATRICES))
@pytest.mark.parametrize("size", [(7, 9), (17, 23)])
@pytest.mark.parametrize("batch", [1, 3])
def test_resizing(tmp_path: Path, rng: np.random.Generator, fmt: str, interpolation: str, size: tuple[int, int],
                  batch: int) -> None:
    x = _image(rng, batch)
    y = _convert_run(tmp_path, fmt, [layer("Resizing", "resizing", height=size[0], width=size[1],
                                           interpolation=interpolation)], x)
    rows, cols = MATRICES[interpolation](10, size[0]), MATRICES[interpolation](14, size[1])
    assert_close(y, np.einsum("oh,bhwc,pw->bopc", rows, x, cols).astype("float32"), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resizing_an_image_of_unknown_size(tmp_path: Path, rng: np.random.Generator, interpolation: str) -> None:
    x = _image(rng, 2)
    config = sequential([layer("Resizing", "resizing", height=5, width=28, interpolation=interpolation)],
                        (None, None, 3))
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x)
    rows, cols = MATRICES[interpolation](10, 5), MATRICES[interpolation](14, 28)
    assert_close(y, np.einsum("oh,bhwc,pw->bopc", rows, x, cols).astype("float32"), atol=1e-3)


def test_bicubic_matrix_rows_are_normalised_keys_weights() -> None:
    matrix = tf_bicubic_matrix(10, 21)
    assert_close(matrix.sum(axis=1), np.ones(21, "float32"))
    assert matrix.min() < 0  # Keys' kernel has negative lobes, unlike bilinear


@pytest.mark.parametrize("size, crop", [((8, 8), (10, 10, 2)), ((5, 12), (5, 14, 0))])
def test_resizing_crop_to_aspect_ratio(tmp_path: Path, rng: np.random.Generator, size: tuple[int, int],
                                       crop: tuple[int, int, int]) -> None:
    x = _image(rng, 2)
    y = _convert_run(tmp_path, "keras", [layer("Resizing", "resizing", height=size[0], width=size[1],
                                               crop_to_aspect_ratio=True)], x)
    crop_h, crop_w, left = crop
    top = (10 - crop_h) // 2
    window = x[:, top:top + crop_h, left:left + crop_w]
    rows, cols = _bilinear_matrix(crop_h, size[0]), _bilinear_matrix(crop_w, size[1])
    assert_close(y, np.einsum("oh,bhwc,pw->bopc", rows, window, cols).astype("float32"), atol=1e-3)


@pytest.mark.parametrize("config, what", [
    ({"interpolation": "lanczos3"}, "lanczos3"), ({"antialias": True}, "antialias"),
    ({"pad_to_aspect_ratio": True}, "pad_to_aspect_ratio"),
])
def test_resizing_refuses_what_it_cannot_match(tmp_path: Path, config: dict[str, Any], what: str) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("Resizing", "resizing", height=4, width=4, **config)],
                                                       IMAGE), {})
    with pytest.raises(UnsupportedLayerError, match=what):
        converter.convert(path)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("size", [(7, 9), (5, 4), (10, 14)])
@pytest.mark.parametrize("batch", [1, 3])
def test_center_crop(tmp_path: Path, rng: np.random.Generator, fmt: str, size: tuple[int, int], batch: int) -> None:
    x = _image(rng, batch)
    y = _convert_run(tmp_path, fmt, [layer("CenterCrop", "center_crop", height=size[0], width=size[1])], x)
    top, left = (10 - size[0]) // 2, (14 - size[1]) // 2
    assert_close(y, x[:, top:top + size[0], left:left + size[1]])


def test_center_crop_refuses_a_smaller_input(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("CenterCrop", "center_crop", height=12, width=4)],
                                                       IMAGE), {})
    with pytest.raises(UnsupportedLayerError, match="target 12"):
        converter.convert(path)


def test_uint8_images_are_cast_before_rescaling(tmp_path: Path, rng: np.random.Generator) -> None:
    config = sequential([layer("Rescaling", "rescaling", scale=1 / 255, offset=0.0)])
    config["config"]["layers"].insert(0, layer("InputLayer", "pixels", batch_shape=[None, *IMAGE], dtype="uint8"))
    x = rng.integers(0, 256, size=(2, *IMAGE)).astype("uint8")
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x)
    assert_close(y, x.astype("float32") / 255)
