"""--streaming against live Keras for RNN(LSTMCell) and ConvLSTM2D: a stateful Keras model fed chunks equals
the ONNX model fed the same chunks with its states fed back (Keras 3 .keras, tf_keras .h5); a
channels_first ConvLSTM2D is checked against its channels_last twin (TF on CPUs without AVX-512 cannot run
channels_first convolutions); `kconvert convert --streaming --check` passes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_close
from test_tf_streaming import OnnxStream

import converter
from application.cli import main

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
B, F = 2, 3
CHUNKS = (4, 3, 5)
WRITERS = {"keras3.keras": ("keras", ".keras"), "tf_keras.h5": ("tf_keras", ".h5")}


def _randomise(model: Any, rng: np.random.Generator) -> None:
    for w in model.trainable_weights:  # a stateful layer's states are weights too (Keras 3 nests them)
        w.assign((0.5 * rng.normal(size=w.shape)).astype(np.float32))


def _reset(model: Any) -> None:
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


def _rnn_cell(k: Any, stacked: bool) -> Any:
    inp = k.Input(batch_shape=(B, None, F))
    cell = [k.layers.LSTMCell(5), k.layers.GRUCell(4)] if stacked else k.layers.LSTMCell(5)
    return k.Model(inp, k.layers.RNN(cell, return_sequences=True, stateful=True)(inp))


def _conv_lstm(k: Any, data_format: str = "channels_last") -> Any:
    sample = (2, 6, 5) if data_format == "channels_first" else (6, 5, 2)
    inp = k.Input(batch_shape=(B, None, *sample))
    layer = k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True, stateful=True, data_format=data_format)
    return k.Model(inp, layer(inp))


def _chunks_match(stream: OnnxStream, model: Any, make: Callable[[int], np.ndarray],
                  to_keras: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
    """Two sequences, both sides reset between them, each fed CHUNKS; `to_keras` maps an ONNX-side array
    to the Keras model's layout and back (a transpose is its own inverse here)."""
    for _ in range(2):
        _reset(model)
        stream.reset()
        for length in CHUNKS:
            chunk = make(length)
            assert_close(stream(chunk), to_keras(np.asarray(model(to_keras(chunk)))))


def _streamed(model: Any, tmp_path: Path, suffix: str) -> OnnxStream:
    model.save(tmp_path / f"m{suffix}")
    out = tmp_path / "m.onnx"
    converter.save(converter.convert(tmp_path / f"m{suffix}", streaming=True), out)
    return _ConvStream(out)


class _ConvStream(OnnxStream):
    """OnnxStream with states of any rank (ConvLSTM's (batch, *space, filters))."""

    def reset(self) -> None:
        self.states = {i.name: np.zeros([B, *i.shape[1:]], np.float32) for i in self.session.get_inputs()[1:]}


@pytest.mark.parametrize("stacked", [False, True], ids=["LSTMCell", "StackedRNNCells"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_rnn_lstm_cell_stateful(tmp_path: Path, rng: np.random.Generator, writer: str, stacked: bool) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    if stacked and module == "keras":
        pytest.skip("Keras 3.15's RNN.reset_states() fails on StackedRNNCells (nested state lists), so the "
                    "stateful Keras reference cannot start a second sequence; tf_keras covers it")
    model = _rnn_cell(k, stacked)
    _randomise(model, rng)
    stream = _streamed(model, tmp_path, suffix)
    _chunks_match(stream, model, lambda n: rng.normal(size=(B, n, F)).astype(np.float32))


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_conv_lstm_stateful(tmp_path: Path, rng: np.random.Generator, writer: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    model = _conv_lstm(k)
    _randomise(model, rng)
    stream = _streamed(model, tmp_path, suffix)
    _chunks_match(stream, model, lambda n: rng.normal(size=(B, n, 6, 5, 2)).astype(np.float32))


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_conv_lstm_channels_first_stateful(tmp_path: Path, rng: np.random.Generator, writer: str) -> None:
    """The channels_first file converts; its channels_last twin (same weights) is the Keras reference."""
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    model, twin = _conv_lstm(k, "channels_first"), _conv_lstm(k)
    _randomise(model, rng)
    twin.set_weights(model.get_weights())
    stream = _streamed(model, tmp_path, suffix)
    # (batch, time, C, H, W) <-> (batch, time, H, W, C): a sequence output has the same layout
    to_last = lambda a: np.transpose(a, (0, 1, 3, 4, 2))  # noqa: E731
    to_first = lambda a: np.transpose(a, (0, 1, 4, 2, 3))  # noqa: E731
    for _ in range(2):
        _reset(twin)
        stream.reset()
        for length in CHUNKS:
            chunk = rng.normal(size=(B, length, 2, 6, 5)).astype(np.float32)
            assert_close(stream(chunk), to_first(np.asarray(twin(to_last(chunk)))))


@pytest.mark.parametrize("stateful", [False, True])
def test_check_with_streaming(tmp_path: Path, rng: np.random.Generator, stateful: bool) -> None:
    """--check compares the model's own outputs with Keras (zero states in) and reports the chunked self-check;
    a stateful model declares a fixed batch and time, which --streaming frees."""
    k = pytest.importorskip("keras")
    inp = k.Input(batch_shape=(B, 8, F) if stateful else (None, None, F))
    x = k.layers.RNN(k.layers.GRUCell(4), return_sequences=True, stateful=stateful, name="rnn")(inp)
    model = k.Model(inp, k.layers.LSTM(3, stateful=stateful, name="lstm")(x))
    _randomise(model, rng)
    model.save(tmp_path / "m.keras")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.onnx"),
                                       "--streaming", "--check", "--samples", "4", "--json"])
    assert result.exit_code == 0, result.output
    names = {d["name"] for d in json.loads(result.stdout)["check"]["outputs"]}
    assert {"lstm", "lstm (2 chunks vs whole)", "rnn/h_out (2 chunks vs whole)"} <= names


@pytest.mark.parametrize("stateful", [False, True])
def test_verify_against_keras_of_a_streamed_file(tmp_path: Path, rng: np.random.Generator, stateful: bool) -> None:
    """`kconvert verify --against` feeds a streamed file's state inputs zeros and compares its own outputs with
    Keras; a perturbed bias makes it fail (exit 4)."""
    k = pytest.importorskip("keras")
    inp = k.Input(batch_shape=(B, 8, F) if stateful else (None, None, F))
    model = k.Model(inp, k.layers.LSTM(3, stateful=stateful, return_sequences=True, name="lstm")(inp))
    _randomise(model, rng)
    model.save(tmp_path / "m.keras")
    onnx_path = tmp_path / "m.onnx"
    converted = CliRunner().invoke(main, ["convert", str(tmp_path / "m.keras"), "-o", str(onnx_path), "--streaming"])
    assert converted.exit_code == 0, converted.output
    verified = CliRunner().invoke(main, ["verify", str(onnx_path), "--against", str(tmp_path / "m.keras"), "--json"])
    assert verified.exit_code == 0, verified.output
    assert {o["name"] for s in json.loads(verified.stdout)["sets"] for o in s["outputs"]} == {"lstm"}
    import onnx

    proto = onnx.load(onnx_path)
    bias = next(t for t in proto.graph.initializer if "bias" in t.name or t.name.endswith("/B"))
    array = onnx.numpy_helper.to_array(bias).copy()
    array.flat[0] += 1.0
    bias.CopyFrom(onnx.numpy_helper.from_array(array, bias.name))
    onnx.save(proto, onnx_path)
    failed = CliRunner().invoke(main, ["verify", str(onnx_path), "--against", str(tmp_path / "m.keras")])
    assert failed.exit_code == 4, failed.output
