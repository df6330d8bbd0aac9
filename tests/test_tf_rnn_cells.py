"""Live cross-checks: RNN(cell) / StackedRNNCells against Keras 3 and tf_keras; CuDNNLSTM / CuDNNGRU files
against tf_keras' own loading of their weights into an LSTM / GRU (no TensorFlow runs CuDNN on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_legacy_h5, sequential
from test_tf_conv_lstm import WRITERS, compare_live

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
T, F = 6, 3


def _lstm_cell(k: Any) -> Any:
    inp = k.Input((T, F))
    return k.Model(inp, k.layers.RNN(k.layers.LSTMCell(4), return_sequences=True)(inp))


def _gru_cell_backwards(k: Any) -> Any:
    inp = k.Input((T, F))
    return k.Model(inp, k.layers.RNN(k.layers.GRUCell(4), go_backwards=True, return_state=True)(inp))


def _simple_cell(k: Any) -> Any:
    inp = k.Input((T, F))
    cell = k.layers.SimpleRNNCell(4, activation="relu")
    return k.Model(inp, k.layers.RNN(cell, return_sequences=True, go_backwards=True)(inp))


def _stacked(k: Any) -> Any:
    inp = k.Input((T, F))
    cells = k.layers.StackedRNNCells([k.layers.SimpleRNNCell(3), k.layers.LSTMCell(4), k.layers.GRUCell(2)])
    return k.Model(inp, k.layers.RNN(cells, return_state=True, return_sequences=True)(inp))


def _masked_stacked(k: Any) -> Any:
    inp = k.Input((T,), dtype="int32")
    x = k.layers.Embedding(9, F, mask_zero=True)(inp)
    cells = k.layers.StackedRNNCells([k.layers.LSTMCell(4), k.layers.LSTMCell(3)])
    return k.Model(inp, k.layers.RNN(cells, go_backwards=True, return_sequences=True)(x))


MODELS = {"lstm_cell": _lstm_cell, "gru_cell_backwards": _gru_cell_backwards, "simple_cell": _simple_cell,
          "stacked": _stacked}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_rnn_cell_matches_keras(tmp_path: Path, rng: np.random.Generator, writer: str, model_name: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    compare_live(k, MODELS[model_name], [(T, F)], tmp_path / f"m{suffix}", rng)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_masked_stacked_cells_match_keras(tmp_path: Path, rng: np.random.Generator, writer: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    model = _masked_stacked(k)
    for w in model.weights:
        w.assign((0.5 * rng.normal(size=w.shape)).astype(np.float32))
    path = tmp_path / f"m{suffix}"
    model.save(path)
    ids = rng.integers(1, 9, size=(3, T))
    ids[0, 4:], ids[1, :2], ids[2, 3] = 0, 0, 0  # post-padding, pre-padding, a hole
    ids = ids.astype(np.int32)
    (got,) = run_onnx(converter.convert(path), ids)
    assert_close(got, np.asarray(model.predict(ids, verbose=0)))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("flags", [{"return_sequences": True}, {"go_backwards": True, "return_state": True}],
                         ids=["sequences", "backwards-states"])
def test_cudnn_file_matches_tf_keras_loading(tmp_path: Path, rng: np.random.Generator, kind: str,
                                             flags: dict[str, Any]) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    units, gates = 5, 4 if kind == "LSTM" else 3
    weights = [(0.5 * rng.normal(size=shape)).astype(np.float32)
               for shape in ((F, gates * units), (units, gates * units), (2 * gates * units,))]
    path = save_legacy_h5(tmp_path / "cudnn.h5", sequential([layer(f"CuDNN{kind}", "cudnn", units=units, **flags)],
                                                              (T, F)), {"cudnn": weights}, keras_version="2.2.4")
    # tf_keras loads CuDNN weights into the equivalent layer through _convert_rnn_weights.
    extra = {"reset_after": True} if kind == "GRU" else {}
    twin = getattr(tf_keras.layers, kind)(units, recurrent_activation="sigmoid", name="cudnn", **flags, **extra)
    inp = tf_keras.Input((T, F))
    model = tf_keras.Model(inp, twin(inp))
    model.load_weights(path)
    x = rng.normal(size=(3, T, F)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = run_onnx(converter.convert(path), x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, np.asarray(e))


def _bidirectional_cell(k: Any) -> Any:
    inp = k.Input((T, F))
    rnn = k.layers.RNN(k.layers.GRUCell(4), return_sequences=True, return_state=True)
    return k.Model(inp, k.layers.Bidirectional(rnn, merge_mode="ave")(inp))


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_bidirectional_rnn_cell_matches_keras(tmp_path: Path, rng: np.random.Generator, writer: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    compare_live(k, _bidirectional_cell, [(T, F)], tmp_path / f"m{suffix}", rng)
