"""Live cross-check of ContrastLimitedAdaptiveHistogramEqualization against Keras 3 `model.predict`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_saved_model_matches

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_clahe(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    L = keras.layers
    rng = np.random.default_rng(0)
    image, planes = L.Input((13, 11, 2)), L.Input((3, 12, 10))
    outs = [L.ContrastLimitedAdaptiveHistogramEqualization()(image),
            L.ContrastLimitedAdaptiveHistogramEqualization(clip_limit=2.0, tile_grid_size=(3, 4))(image),
            L.ContrastLimitedAdaptiveHistogramEqualization(clip_limit=0.0, value_range=(-1, 1))(image),
            L.ContrastLimitedAdaptiveHistogramEqualization(tile_grid_size=(2, 3), value_range=(0.1, 0.7),
                                                           data_format="channels_first")(planes)]
    model = keras.Model([image, planes], outs)

    def inputs(batch: int) -> list[np.ndarray]:
        x = rng.uniform(-30, 270, size=(batch, 13, 11, 2)).astype("float32")
        x[0, 1] = x[0, 0]  # repeated values share histogram bins
        return [x, rng.uniform(0.0, 0.8, size=(batch, 3, 12, 10)).astype("float32")]

    assert_saved_model_matches(tmp_path, model, fmt, inputs)
