"""--streaming against live Keras: a stateful=True Keras model fed chunk by chunk equals the ONNX model
fed the same chunks with its states fed back; a stateless model's whole-sequence run equals Keras'."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
B, F = 2, 3
CHUNKS = (4, 3, 5)


def _randomise(model: Any, rng: np.random.Generator) -> None:
    for w in model.weights:
        w.assign((0.6 * rng.normal(size=w.shape)).astype(np.float32))


def _stack(k: Any, stateful: bool) -> Any:
    """LSTM (sequences) -> GRU (reset_after) -> SimpleRNN: every recurrent kind, stacked."""
    inp = k.Input(batch_shape=(B, None, F))
    x = k.layers.LSTM(5, return_sequences=True, stateful=stateful)(inp)
    x = k.layers.GRU(4, return_sequences=True, stateful=stateful)(x)
    return k.Model(inp, k.layers.SimpleRNN(3, stateful=stateful)(x))


def _reset(model: Any) -> None:
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


class OnnxStream:
    """The streamed ONNX model, holding its states between chunks as a deployment would."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.first = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.reset()

    def reset(self) -> None:  # zeros for the first chunk: ONNX inputs have no default
        self.states = {i.name: np.zeros((B, i.shape[1]), np.float32) for i in self.session.get_inputs()[1:]}

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        got = dict(zip(self.outputs, self.session.run(None, {self.first: chunk, **self.states})))
        self.states = {name: got[name.removesuffix("_in") + "_out"] for name in self.states}
        return got[self.outputs[0]]


def _convert(model: Any, tmp_path: Path, suffix: str) -> OnnxStream:
    model.save(tmp_path / f"m{suffix}")
    out = tmp_path / "m.onnx"
    converter.save(converter.convert(tmp_path / f"m{suffix}", streaming=True), out)
    return OnnxStream(out)


def _stateful_case(k: Any, tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    model = _stack(k, stateful=True)
    _randomise(model, rng)
    stream = _convert(model, tmp_path, suffix)
    for _ in range(2):  # two sequences: both sides reset between them
        _reset(model)
        stream.reset()
        for length in CHUNKS:
            chunk = rng.normal(size=(B, length, F)).astype(np.float32)
            assert_close(stream(chunk), np.asarray(model(chunk)))


def _stateless_case(k: Any, tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    model = _stack(k, stateful=False)
    _randomise(model, rng)
    stream = _convert(model, tmp_path, suffix)
    x = rng.normal(size=(B, sum(CHUNKS), F)).astype(np.float32)
    expected = np.asarray(model(x))
    assert_close(stream(x), expected)  # the whole sequence from zero states
    stream.reset()
    start = 0
    for length in CHUNKS:
        last = stream(x[:, start:start + length])
        start += length
    assert_close(last, expected)  # chunk by chunk, states fed back


def test_keras3_stateful(tmp_path: Path, rng: np.random.Generator) -> None:
    _stateful_case(pytest.importorskip("keras"), tmp_path, rng, ".keras")


def test_keras3_stateless(tmp_path: Path, rng: np.random.Generator) -> None:
    _stateless_case(pytest.importorskip("keras"), tmp_path, rng, ".keras")


def test_keras2_stateful(tmp_path: Path, rng: np.random.Generator) -> None:
    _stateful_case(pytest.importorskip("tf_keras"), tmp_path, rng, ".h5")


def test_keras2_stateless(tmp_path: Path, rng: np.random.Generator) -> None:
    _stateless_case(pytest.importorskip("tf_keras"), tmp_path, rng, ".h5")
