"""Live cross-checks of the recurrent family against real Keras 3 (.keras) and tf_keras (Keras 2, .h5)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
T = 7


def _ids(rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(1, 9, size=(4, T))
    ids[0, 5:], ids[1, :3], ids[2, [1, 4]], ids[3, :] = 0, 0, 0, 0  # post, pre, holes, empty
    return ids.astype(np.int32)


def _randomise(model: Any, rng: np.random.Generator) -> None:
    for w in model.weights:
        w.assign((0.6 * rng.normal(size=w.shape)).astype(np.float32))


def _compare(model: Any, path: Path, xs: list[np.ndarray]) -> None:
    model.save(path)
    expected = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = run_onnx(converter.convert(path), *xs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, np.asarray(e))


def _masked_stack(k: Any) -> Any:
    """Embedding(mask_zero) -> Dropout -> Bidirectional(LSTM, seq) -> GRU(go_backwards, seq) -> SimpleRNN."""
    inp = k.Input((T,), dtype="int32")
    x = k.layers.Embedding(10, 4, mask_zero=True)(inp)
    x = k.layers.Dropout(0.2)(x)
    x = k.layers.Bidirectional(k.layers.LSTM(5, return_sequences=True), merge_mode="sum")(x)
    x = k.layers.GRU(4, go_backwards=True, return_sequences=True)(x)
    return k.Model(inp, k.layers.SimpleRNN(3, activation="relu")(x))


def _masking_states(k: Any) -> Any:
    """Masking -> LSTM(return_state) -> Bidirectional(GRU, merge None) with custom activations."""
    inp = k.Input((T, 3))
    seq, h, c = k.layers.LSTM(5, return_sequences=True, return_state=True)(k.layers.Masking(-1.0)(inp))
    gru = k.layers.GRU(4, return_sequences=True, recurrent_activation="hard_sigmoid", activation="softsign")
    a, b = k.layers.Bidirectional(gru, merge_mode=None)(seq)
    return k.Model(inp, [a, b, h, c])


def _initial_states(k: Any) -> Any:
    inp, h0, c0 = k.Input((T, 3)), k.Input((5,)), k.Input((5,))
    out = k.layers.LSTM(5, go_backwards=True, return_sequences=True, return_state=True)(inp, initial_state=[h0, c0])
    return k.Model([inp, h0, c0], out)


def _masking_input(rng: np.random.Generator) -> list[np.ndarray]:
    x = rng.normal(size=(4, T, 3)).astype(np.float32)
    x[0, 5:], x[1, :2], x[2, 3] = -1.0, -1.0, -1.0
    return [x]


MODELS: dict[str, tuple[Callable[[Any], Any], Callable[[np.random.Generator], list[np.ndarray]]]] = {
    "masked_stack": (_masked_stack, lambda rng: [_ids(rng)]),
    "masking_states": (_masking_states, _masking_input),
    "initial_states": (_initial_states, lambda rng: [rng.normal(size=(2, T, 3)).astype(np.float32),
                                                      *rng.normal(size=(2, 2, 5)).astype(np.float32)]),
}


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_keras3(tmp_path: Path, rng: np.random.Generator, model_name: str) -> None:
    keras = pytest.importorskip("keras")
    build, inputs = MODELS[model_name]
    model = build(keras)
    _randomise(model, rng)
    _compare(model, tmp_path / "m.keras", inputs(rng))


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_keras2(tmp_path: Path, rng: np.random.Generator, model_name: str) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    build, inputs = MODELS[model_name]
    model = build(tf_keras)
    _randomise(model, rng)
    _compare(model, tmp_path / "m.h5", inputs(rng))
