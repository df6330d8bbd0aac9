"""TimeDistributed around Dense, Conv2D and other layers, from both writers, against numpy."""

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


def _td(inner: dict[str, Any], name: str = "td") -> dict[str, Any]:
    return layer("TimeDistributed", name, layer=inner)


def _convert_run(tmp_path: Path, fmt: str, config: dict[str, Any], weights: dict[str, Any],
                 x: np.ndarray) -> np.ndarray:
    (y,) = run_onnx(converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)), x)
    return y


def _conv2d_nhwc(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid', stride 1; x (n, h, w, c), kernel (kh, kw, c, f)."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # n, oh, ow, c, kh, kw
    return np.einsum("nhwcij,ijcf->nhwf", windows, kernel)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("sample", [(4, 5), (4, 2, 5)])
def test_time_distributed_dense(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int,
                                sample: tuple[int, ...]) -> None:
    kernel, bias = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    config = sequential([_td(layer("Dense", "dense", units=3, activation="tanh"))], sample)
    # Keras 3 stores the child's weights under `time_distributed/layer/vars`.
    weights = {"td": {"layer": [kernel, bias]}}
    x = rng.normal(size=(batch, *sample)).astype("float32")
    assert_close(_convert_run(tmp_path, fmt, config, weights, x), np.tanh(x @ kernel + bias))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_time_distributed_conv2d_channels_last(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    kernel, bias = rng.normal(size=(3, 3, 2, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    conv = layer("Conv2D", "conv", filters=4, kernel_size=[3, 3], padding="valid", activation="relu",
                 data_format="channels_last")
    config = sequential([_td(conv), _td(layer("Flatten", "flat"), "td_flat")], (3, 6, 5, 2))
    x = rng.normal(size=(batch, 3, 6, 5, 2)).astype("float32")
    y = _convert_run(tmp_path, fmt, config, {"td": {"layer": [kernel, bias]}}, x)
    steps = np.maximum(_conv2d_nhwc(x.reshape(-1, 6, 5, 2), kernel) + bias, 0)
    assert_close(y, steps.reshape(batch, 3, -1))


@pytest.mark.parametrize("batch", [1, 3])
def test_time_distributed_conv2d_channels_first(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    kernel = rng.normal(size=(2, 2, 3, 4)).astype("float32")
    conv = layer("Conv2D", "conv", filters=4, kernel_size=[2, 2], use_bias=False, data_format="channels_first")
    config = sequential([_td(conv)], (2, 3, 5, 4))
    x = rng.normal(size=(batch, 2, 3, 5, 4)).astype("float32")
    y = _convert_run(tmp_path, "keras", config, {"td": {"layer": [kernel]}}, x)
    steps = _conv2d_nhwc(x.reshape(-1, 3, 5, 4).transpose(0, 2, 3, 1), kernel).transpose(0, 3, 1, 2)
    assert_close(y, steps.reshape(batch, 2, 4, 4, 3))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_time_distributed_batch_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                              batch: int) -> None:
    gamma, beta, mean = (rng.normal(size=4).astype("float32") for _ in range(3))
    var = rng.uniform(0.5, 2, size=4).astype("float32")
    config = sequential([_td(layer("BatchNormalization", "bn", axis=-1, epsilon=1e-3))], (3, 4))
    x = rng.normal(size=(batch, 3, 4)).astype("float32")
    y = _convert_run(tmp_path, fmt, config, {"td": {"layer": [gamma, beta, mean, var]}}, x)
    assert_close(y, (x - mean) / np.sqrt(var + 1e-3) * gamma + beta)


def test_time_distributed_with_unknown_time_and_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    # Unknown sizes after the time axis take the dynamic (Shape/Concat) path of the batch-time merge.
    config = sequential([_td(layer("Reshape", "r", target_shape=[-1]))], (None, None, 3))
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    assert_close(_convert_run(tmp_path, "keras", config, {}, x), x.reshape(2, 4, 15))


def test_time_distributed_over_an_unsupported_layer_is_reported(tmp_path: Path) -> None:
    config = sequential([_td(layer("Lambda", "fn", function="garbage"))], (3, 4))
    with pytest.raises(UnsupportedLayerError, match="wraps Lambda 'fn'"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


def test_time_distributed_needs_a_time_axis(tmp_path: Path) -> None:
    config = sequential([_td(layer("Dense", "dense", units=2))], (4,))
    weights = {"td": {"layer": [np.zeros((4, 2), "float32"), np.zeros(2, "float32")]}}
    with pytest.raises(ShapeError, match="rank >= 3"):
        converter.convert(save_keras(tmp_path / "m.keras", config, weights))
