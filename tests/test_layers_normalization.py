"""BatchNormalization (inference), from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError, UnsupportedLayerError, WeightsError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _bn_weights(rng: np.random.Generator, shape: tuple[int, ...], center: bool, scale: bool) -> dict[str, np.ndarray]:
    w = {
        "gamma": rng.normal(size=shape).astype("float32"),
        "beta": rng.normal(size=shape).astype("float32"),
        "moving_mean": rng.normal(size=shape).astype("float32"),
        "moving_variance": rng.uniform(0.2, 2.0, size=shape).astype("float32"),
    }
    # Keras stores gamma only with scale=True, beta only with center=True, then the moving statistics.
    return {k: v for k, v in w.items() if (k != "gamma" or scale) and (k != "beta" or center)}


def _reference(x: np.ndarray, w: dict[str, np.ndarray], axes: list[int], epsilon: float) -> np.ndarray:
    shape = [1] * x.ndim
    for a in axes:
        shape[a] = x.shape[a]

    def b(key: str, default: float) -> Any:
        return w[key].reshape(shape) if key in w else default

    y = (x - b("moving_mean", 0.0)) / np.sqrt(b("moving_variance", 1.0) + epsilon)
    return y * b("gamma", 1.0) + b("beta", 0.0)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("axis, shape", [(-1, (4,)), (-1, (3, 5, 4)), (1, (4, 5, 3)), (2, (3, 4, 5)), (-2, (2, 4, 3))])
def test_batch_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, center: bool,
                             scale: bool, axis: int, shape: tuple[int, ...]) -> None:
    rank = len(shape) + 1
    channels = shape[axis % rank - 1]
    w = _bn_weights(rng, (channels,), center, scale)
    config = sequential([layer("BatchNormalization", "bn", axis=axis, epsilon=0.01, center=center, scale=scale)],
                        shape)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"bn": list(w.values())})
    x = rng.normal(size=(batch, *shape)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, _reference(x, w, [axis % rank], 0.01).astype("float32"))


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_normalization_on_several_axes(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    # tf.keras allows axis=[1, 3]; its parameters are then stored full-rank with 1 on the other axes.
    w = _bn_weights(rng, (1, 3, 1, 5), True, True)
    config = sequential([layer("BatchNormalization", "bn", axis=[1, 3], epsilon=0.001)], (3, 4, 5))
    path = save_legacy_h5(tmp_path / "m.h5", config, {"bn": list(w.values())})
    x = rng.normal(size=(batch, 3, 4, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    expected = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + 0.001) * w["gamma"] + w["beta"]
    assert_close(y, expected.astype("float32"))


def test_batch_normalization_is_one_mul_and_one_add(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _bn_weights(rng, (4,), True, True)
    config = sequential([layer("BatchNormalization", "bn", axis=1)], (4, 6))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"bn": list(w.values())}))
    assert [n.op_type for n in model.graph.node] == ["Mul", "Add"]
    assert [list(t.dims) for t in model.graph.initializer] == [[4, 1], [4, 1]]


def test_batch_normalization_weights_must_fit_the_axis(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _bn_weights(rng, (4,), True, True)
    config = sequential([layer("BatchNormalization", "bn", axis=-1)], (4, 6))
    with pytest.raises(WeightsError, match="'gamma' should have shape \\(6,\\)"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"bn": list(w.values())}))


def test_batch_normalization_rejects_the_batch_axis(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _bn_weights(rng, (2,), True, True)
    config = sequential([layer("BatchNormalization", "bn", axis=0)], (4,))
    with pytest.raises(ShapeError, match="axis=0"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"bn": list(w.values())}))


def test_batch_normalization_refuses_renorm(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _bn_weights(rng, (4,), True, True)
    config = sequential([layer("BatchNormalization", "bn", renorm=True)], (4,))
    with pytest.raises(UnsupportedLayerError, match="renorm"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"bn": list(w.values())}))
