"""Live cross-checks of adapt()ed IntegerLookup / StringLookup (vocabulary in the .keras assets) against
Keras 3 and tf_keras; Keras 3's legacy .h5, which drops the adapted vocabulary, is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kmodels import run_onnx

import converter
from converter.errors import UnsupportedLayerError

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

INTS = np.array([[0, 5, 7, 100], [12, 9, 3, -1], [7, 7, 12, 13]], "int64")
TEXT = np.array([["a", "b", "zz"], ["é", "", "c c"], ["[UNK]", "b", "q"]])


def _adapted_model(keras: Any, nested: bool) -> Any:
    ints = keras.layers.IntegerLookup(mask_token=0, num_oov_indices=2)
    ints.adapt(np.array([[5, 7, 7, 9, 12, 12, 12]]))
    hot = keras.layers.IntegerLookup(mask_token=7, output_mode="multi_hot")
    hot.adapt(np.array([[5, 9, 9, 12]]))
    words = keras.layers.StringLookup(mask_token="")
    words.adapt(np.array([["a", "b", "b", "c c", "é"]]))
    xi, xs = keras.Input((4,), dtype="int64"), keras.Input((3,), dtype="string")
    ids = keras.Sequential([keras.Input((4,), dtype="int64"), ints])(xi) if nested else ints(xi)
    return keras.Model([xi, xs], [ids, hot(xi), words(xs)])


def _check(model: Any, path: Path, tf: Any) -> None:
    onnx_model = converter.convert(path)
    for batch in (1, 3):
        expected = model([tf.constant(INTS[:batch]), tf.constant(TEXT[:batch])])
        got = run_onnx(onnx_model, INTS[:batch], TEXT[:batch].astype(object))
        assert len(got) == len(expected) == 3
        for y, ref in zip(got, expected):
            np.testing.assert_array_equal(y, np.asarray(ref))


@pytest.mark.parametrize("nested", [False, True])
def test_adapted_lookups_match_keras3(tmp_path: Path, nested: bool) -> None:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    model = _adapted_model(keras, nested)
    model.save(tmp_path / "m.keras")
    _check(model, tmp_path / "m.keras", tf)


def test_adapted_lookups_match_tf_keras(tmp_path: Path) -> None:
    keras = pytest.importorskip("tf_keras")
    tf = pytest.importorskip("tensorflow")
    model = _adapted_model(keras, nested=False)
    model.save(tmp_path / "m.keras")  # tf_keras cannot save an adapted lookup as .h5 at all
    _check(model, tmp_path / "m.keras", tf)


def test_keras3_h5_drops_the_adapted_vocabulary(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    model = _adapted_model(keras, nested=False)
    model.save(tmp_path / "m.h5")
    with pytest.raises(UnsupportedLayerError, match="a .h5 file drops it"):
        converter.convert(tmp_path / "m.h5")
