"""Live cross-checks of ConvLSTM1D/2D/3D against Keras 3 (.keras, .h5) and tf_keras (Keras 2, .h5)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, keras_outputs
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
WRITERS = {"keras3.keras": ("keras", ".keras"), "keras3.h5": ("keras", ".h5"), "tf_keras.h5": ("tf_keras", ".h5")}


def _flat(value: Any) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in _flat(item)]
    return [np.asarray(value)]


def compare_live(k: Any, build: Callable[[Any], Any], shapes: list[tuple[int, ...]], path: Path,
                 rng: np.random.Generator) -> None:
    """Random weights, save, convert once, compare with Keras at batch 1 and 3."""
    model = build(k)
    for w in model.weights:
        w.assign((0.5 * rng.normal(size=w.shape)).astype(np.float32))
    model.save(path)
    onnx_model = converter.convert(path)
    for batch in (1, 3):
        xs = [rng.normal(size=(batch, *shape)).astype(np.float32) for shape in shapes]
        expected = _flat(keras_outputs(model, xs))
        got = run_onnx(onnx_model, *xs)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_close(g, e)


def _same_2d(k: Any) -> Any:
    inp = k.Input((4, 6, 5, 2))
    return k.Model(inp, k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(inp))


def _strided_backwards_2d(k: Any) -> Any:
    inp = k.Input((4, 7, 6, 2))
    layer = k.layers.ConvLSTM2D(3, (3, 2), strides=2, padding="same", go_backwards=True, return_sequences=True,
                                return_state=True, recurrent_activation="hard_sigmoid")
    return k.Model(inp, layer(inp))


def _dilated_1d(k: Any) -> Any:
    inp = k.Input((5, 9, 2))
    return k.Model(inp, k.layers.ConvLSTM1D(3, 3, dilation_rate=2, return_state=True, activation="relu")(inp))


def _channels_first_2d(k: Any) -> Any:
    inp = k.Input((3, 2, 6, 5))
    layer = k.layers.ConvLSTM2D(3, 3, data_format="channels_first", use_bias=False, return_sequences=True)
    return k.Model(inp, layer(inp))


def _stacked_3d(k: Any) -> Any:
    inp = k.Input((3, 4, 5, 4, 2))
    x = k.layers.ConvLSTM3D(2, 2, padding="same", return_sequences=True)(inp)
    return k.Model(inp, k.layers.ConvLSTM3D(2, 2)(x))


def _initial_state_2d(k: Any) -> Any:
    inp, h0, c0 = k.Input((3, 5, 4, 2)), k.Input((5, 4, 3)), k.Input((5, 4, 3))
    out = k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(inp, initial_state=[h0, c0])
    return k.Model([inp, h0, c0], out)


MODELS = {
    "same_2d": (_same_2d, [(4, 6, 5, 2)]),
    "strided_backwards_2d": (_strided_backwards_2d, [(4, 7, 6, 2)]),
    "dilated_1d": (_dilated_1d, [(5, 9, 2)]),
    "channels_first_2d": (_channels_first_2d, [(3, 2, 6, 5)]),
    "stacked_3d": (_stacked_3d, [(3, 4, 5, 4, 2)]),
    "initial_state_2d": (_initial_state_2d, [(3, 5, 4, 2), (5, 4, 3), (5, 4, 3)]),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_conv_lstm_matches_keras(tmp_path: Path, rng: np.random.Generator, writer: str, model_name: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    build, shapes = MODELS[model_name]
    compare_live(k, build, shapes, tmp_path / f"m{suffix}", rng)
