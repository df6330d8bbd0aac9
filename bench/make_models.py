"""Make the benchmark models with random weights (Keras 3, run in bench/.venv) and cache them.

    bench/.venv/bin/python bench/make_models.py ResNet50 MobileNetV2   # -> bench/.cache/<name>.keras/.h5
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
CACHE = Path(__file__).resolve().parent / ".cache"


def build(name: str):  # noqa: ANN201  (a keras.Model; keras is imported lazily)
    import keras

    if name == "BiLSTM":
        inputs = keras.Input((128,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(20000, 128)(inputs)
        x = keras.layers.Bidirectional(keras.layers.LSTM(128))(x)
        outputs = keras.layers.Dense(2, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="bilstm")
    return getattr(keras.applications, name)(weights=None)


def make(name: str) -> None:
    import keras
    import numpy as np

    if (CACHE / f"{name}.keras").exists() and (CACHE / f"{name}.h5").exists():
        return
    keras.utils.set_random_seed(0)
    model = build(name)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # BN statistics too, so folding is exercised on real numbers
        value = rng.normal(0.0, 0.05, size=variable.shape)
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, size=variable.shape)
        variable.assign(value.astype(variable.dtype))
    CACHE.mkdir(exist_ok=True)
    model.save(CACHE / f"{name}.keras")
    model.save(CACHE / f"{name}.h5")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        make(arg)
