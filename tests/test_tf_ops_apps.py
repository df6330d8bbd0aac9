"""tf.keras Applications built of op layers: tf_keras' MobileNetV3Small / MobileNetV3Large (hard_sigmoid as
`tf.__operators__.add` / `tf.math.multiply` / `nn.relu6` TFOpLambda layers) and ConvNeXtTiny, built at test
time with `weights=None` at a small input, calibrated, saved as .h5, converted and matched against
`predict` at rtol 1e-4 / atol 1e-5 on random images, batch 1 and 3.

Calibration (as fixtures/make_zoo.py does for Keras 3): random BatchNormalization gamma / beta with moving
statistics from one training-mode pass (momentum 0, dropout off) plus a variance floor, and ConvNeXt's
LayerScale gammas near 1 instead of 1e-6, so every branch counts and the logits are well scaled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, keras_outputs
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

RTOL, ATOL = 1e-4, 1e-5
SIDE = 32
APPS = ["MobileNetV3Small", "MobileNetV3Large", "ConvNeXtTiny"]


@pytest.fixture(scope="module")
def tf_keras() -> Iterator[Any]:
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    yield pytest.importorskip("tf_keras")
    if previous is None:
        del os.environ["TF_USE_LEGACY_KERAS"]
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = previous


def calibrate(keras: Any, model: Any, x: np.ndarray, rng: np.random.Generator, floor: float = 0.1) -> None:
    layers = list(model._flatten_layers())
    norms = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    drops = [la for la in layers if isinstance(la, keras.layers.Dropout)]
    for layer in norms:
        layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
        layer.beta.assign(rng.normal(0.0, 0.2, size=layer.beta.shape))
    for layer in layers:
        if type(layer).__name__ == "LayerScale":
            layer.gamma.assign(rng.uniform(0.5, 1.0, size=layer.gamma.shape))
    saved = [(la, "momentum", la.momentum) for la in norms] + [(la, "rate", la.rate) for la in drops]
    for layer, attribute, _ in saved:
        setattr(layer, attribute, 0.0)
    model(x, training=True)
    for layer, attribute, value in saved:
        setattr(layer, attribute, value)
    for layer in norms:
        variance = layer.moving_variance.numpy()
        layer.moving_variance.assign(variance + floor * variance.mean())


@pytest.mark.parametrize("name", APPS)
def test_tf_keras_application_matches(tmp_path: Path, tf_keras: Any, name: str) -> None:
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    build = getattr(tf_keras.applications, name)
    model = build(weights=None, input_shape=(SIDE, SIDE, 3), classes=10, classifier_activation=None)
    functions = {la.get_config()["function"] for la in model.layers if type(la).__name__ == "TFOpLambda"}
    assert functions, f"{name} holds no TFOpLambda layer: the test would not exercise op layers"
    calibrate(tf_keras, model, rng.uniform(0, 255, size=(32, SIDE, SIDE, 3)).astype("float32"), rng)
    path = tmp_path / "model.h5"
    model.save(path)
    onnx_model = converter.convert(path)
    x = rng.uniform(0, 255, size=(3, SIDE, SIDE, 3)).astype("float32")
    for batch in (1, 3):
        (expected,) = keras_outputs(model, [x[:batch]])
        (actual,) = run_onnx(onnx_model, x[:batch])
        assert np.abs(expected - expected[:1]).max() > 100 * ATOL or batch == 1  # inputs tell apart
        assert_close(actual, expected, rtol=RTOL, atol=ATOL)
