"""Live cross-checks of keras.layers.Pipeline and StringLookup against Keras 3 `model.predict`
(.keras and legacy .h5)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_pipeline_matches_keras(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    pipeline = keras.layers.Pipeline([
        keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(), keras.layers.Dropout(0.2),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(2, activation="tanh")])
    model = keras.Sequential([keras.Input((6, 6, 3)), pipeline, keras.layers.Dense(3)])
    for inner in pipeline.layers:
        inner.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in inner.get_weights()])
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    onnx_model = converter.convert(path)
    for batch in (1, 3):
        x = rng.normal(size=(batch, 6, 6, 3)).astype(np.float32)
        (y,) = run_onnx(onnx_model, x)
        assert_close(y, model.predict(x, verbose=0))


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize(("vocabulary", "mask"), [(["a", "b", "c"], None), (["[PAD]", "[UNK]", "a", "b"], "[PAD]")])
def test_string_lookup_matches_keras(tmp_path: Path, fmt: str, vocabulary: list[str], mask: str | None) -> None:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    text = keras.Input((3,), dtype="string")
    model = keras.Model(text, keras.layers.StringLookup(vocabulary=vocabulary, mask_token=mask)(text))
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    x = np.array([["a", "zz", "b"], ["c", "", "[PAD]"], ["[UNK]", "b", "a"]])
    (y,) = run_onnx(converter.convert(path), x.astype(object))
    np.testing.assert_array_equal(y, model.predict(tf.constant(x), verbose=0))


def test_string_lookup_matches_tf_keras(tmp_path: Path) -> None:
    keras = pytest.importorskip("tf_keras")
    tf = pytest.importorskip("tensorflow")
    text = keras.Input((3,), dtype="string")
    model = keras.Model(text, keras.layers.StringLookup(vocabulary=["[PAD]", "[UNK]", "a", "b"],
                                                        mask_token="[PAD]")(text))
    model.save(tmp_path / "m.h5")
    x = np.array([["a", "zz", "b"], ["c", "", "[PAD]"]])
    (y,) = run_onnx(converter.convert(tmp_path / "m.h5"), x.astype(object))
    np.testing.assert_array_equal(y, model.predict(tf.constant(x), verbose=0))
