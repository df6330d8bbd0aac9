"""keras.layers.Pipeline: inner layers emitted in order through their own handlers, weights read per
inner layer from both a Keras 3 zip and a Keras 3 legacy .h5, against numpy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from converter.errors import UnsupportedLayerError

EPS = 1e-3


def _pipeline(*inner: dict[str, Any], name: str = "pp") -> dict[str, Any]:
    return layer("Pipeline", name, layers=list(inner))


def _model() -> dict[str, Any]:
    return sequential([_pipeline(layer("Dense", "dense", units=3, activation="relu"),
                                 layer("BatchNormalization", "batch_normalization", epsilon=EPS),
                                 layer("Dropout", "dropout", rate=0.5),
                                 layer("Dense", "dense_1", units=2))], input_shape=(4,))


def _weights(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    f = np.float32
    return {"dense": [rng.normal(size=(4, 3)).astype(f), rng.normal(size=3).astype(f)],
            "batch_normalization": [rng.uniform(0.5, 1.5, 3).astype(f), rng.normal(size=3).astype(f),
                                    rng.normal(size=3).astype(f), rng.uniform(0.5, 1.5, 3).astype(f)],
            "dense_1": [rng.normal(size=(3, 2)).astype(f), rng.normal(size=2).astype(f)]}


def _reference(x: np.ndarray, w: dict[str, list[np.ndarray]]) -> np.ndarray:
    h = np.maximum(x @ w["dense"][0] + w["dense"][1], 0)
    gamma, beta, mean, var = w["batch_normalization"]
    h = (h - mean) / np.sqrt(var + EPS) * gamma + beta
    return h @ w["dense_1"][0] + w["dense_1"][1]


def _save_zip(path: Path, config: dict[str, Any], w: dict[str, list[np.ndarray]]) -> Path:
    # Keras 3: `layers/pipeline/layers/<saved name>/vars/<i>`
    return save_keras(path, config, {"pp": {f"layers/{k}": v for k, v in w.items()}})


def _save_h5(path: Path, config: dict[str, Any], w: dict[str, list[np.ndarray]]) -> Path:
    """What Keras 3 writes to a legacy .h5: names prefixed by the outer model and the Pipeline,
    trainable weights first (so BatchNormalization's moving statistics come last)."""
    bn = w["batch_normalization"]
    named = [("sequential/pp/dense/kernel", w["dense"][0]), ("sequential/pp/dense/bias", w["dense"][1]),
             ("sequential/pp/batch_normalization/gamma", bn[0]), ("sequential/pp/batch_normalization/beta", bn[1]),
             ("sequential/pp/dense_1/kernel", w["dense_1"][0]), ("sequential/pp/dense_1/bias", w["dense_1"][1]),
             ("sequential/pp/batch_normalization/moving_mean", bn[2]),
             ("sequential/pp/batch_normalization/moving_variance", bn[3])]
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        handle.attrs["keras_version"] = "3.15.1"
        handle.attrs["backend"] = "tensorflow"
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = [b"input_layer", b"pp"]
        group.create_group("input_layer").attrs["weight_names"] = []
        sub = group.create_group("pp")
        sub.attrs["weight_names"] = [n.encode() for n, _ in named]
        for name, array in named:
            sub.create_dataset(name, data=array)
    return path


SAVERS = {"keras": _save_zip, "h5": _save_h5}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_pipeline_applies_layers_in_order(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    w = _weights(rng)
    model = converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", _model(), w))
    x = rng.normal(size=(batch, 4)).astype(np.float32)
    (y,) = run_onnx(model, x)
    assert_close(y, _reference(x, w))


@pytest.mark.parametrize("batch", [1, 3])
def test_pipeline_with_channels_first_only_layer(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    """MaxPooling2D (channels_last) inside the Pipeline runs between Transposes, then Flatten."""
    config = sequential([_pipeline(layer("MaxPooling2D", "max_pooling2d", pool_size=[2, 2]),
                                   layer("Flatten", "flatten"))], input_shape=(4, 4, 3))
    x = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x)
    ref = x.reshape(batch, 2, 2, 2, 2, 3).max(axis=(2, 4)).reshape(batch, -1)
    assert_close(y, ref)


def test_pipeline_refuses_unknown_inner_layer(tmp_path: Path) -> None:
    config = sequential([_pipeline(layer("Dense", "dense", units=2), layer("Lambda", "fn"))], input_shape=(4,))
    w = {"pp": {"layers/dense": [np.zeros((4, 2), np.float32), np.zeros(2, np.float32)]}}
    with pytest.raises(UnsupportedLayerError, match="holds Lambda 'fn'"):
        converter.convert(save_keras(tmp_path / "m.keras", config, w))


def test_pipeline_refuses_empty(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLayerError, match="no layers"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([_pipeline()], input_shape=(4,)), {}))
