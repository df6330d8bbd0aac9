"""RandomCrop at inference: tf_keras center-crops and resizes (smart_resize), Keras 3 passes the input
through. Both against live Keras."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import run_onnx

import converter

pytestmark = pytest.mark.tf
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.mark.parametrize("module", ["keras", "tf_keras"])
@pytest.mark.parametrize("size", [(4, 6), (5, 5)])
def test_random_crop_matches_keras(tmp_path: Path, rng: np.random.Generator, module: str,
                                   size: tuple[int, int]) -> None:
    K = pytest.importorskip(module)
    inputs = K.Input((8, 10, 3))
    outputs = K.layers.Conv2D(2, 1)(K.layers.RandomCrop(*size)(inputs))
    model = K.Model(inputs, outputs)
    path = tmp_path / ("m.keras" if module == "keras" else "m.h5")
    model.save(path)
    x = rng.normal(size=(3, 8, 10, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, model.predict(x, verbose=0))
