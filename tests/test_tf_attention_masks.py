"""Implicit masks (Embedding(mask_zero=True), Masking) reaching attention layers, against live Keras.

Neither Keras 2 nor Keras 3 records these masks in the file, so kconvert must derive them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import run_onnx

import converter

pytestmark = pytest.mark.tf
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IDS = np.array([[1, 2, 3, 0, 0, 0], [0, 0, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8]], "float32")


def _model(K: Any, kind: str) -> Any:
    ids = K.Input((6,))
    x = K.layers.Embedding(20, 8, mask_zero=True)(ids)
    if kind == "mha":
        y = K.layers.MultiHeadAttention(2, 4)(x, x)
    elif kind == "mha_given_mask":
        given = K.Input((6, 6))
        y = K.layers.MultiHeadAttention(2, 4)(x, x, attention_mask=given)
        return K.Model([ids, given], K.layers.Dense(3)(y))
    elif kind == "cross_masking":
        other = K.Input((4, 8))
        y = K.layers.MultiHeadAttention(2, 4)(x, K.layers.Masking(0.0)(other))
        return K.Model([ids, other], K.layers.Dense(3)(y))
    elif kind == "attention":
        y = K.layers.Attention()([x, x])
    else:
        y = K.layers.AdditiveAttention()([x, x])
    return K.Model(ids, K.layers.Dense(3)(y))


def _inputs(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "mha_given_mask":
        return [IDS, (rng.random((3, 6, 6)) > 0.3).astype("float32")]
    if kind == "cross_masking":
        other = rng.normal(size=(3, 4, 8)).astype("float32")
        other[0, 2:] = 0.0
        return [IDS, other]
    return [IDS]


@pytest.mark.parametrize("keras_major", [3, 2])
@pytest.mark.parametrize("kind", ["mha", "mha_given_mask", "cross_masking", "attention", "additive"])
def test_implicit_masks_reach_attention(tmp_path: Path, rng: np.random.Generator, kind: str, keras_major: int) -> None:
    K = pytest.importorskip("keras" if keras_major == 3 else "tf_keras")
    model = _model(K, kind)
    path = tmp_path / ("m.keras" if keras_major == 3 else "m.h5")
    model.save(path)
    inputs = _inputs(kind, rng)
    expected = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    (actual,) = run_onnx(converter.convert(path), *inputs)
    assert_close(actual, expected)
