"""--streaming frees the batch and time axes of the inputs feeding the streamed layers (a stateful model
declares both fixed), unless a layer between needs the fixed length: then the time stays, with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close
from kmodels import layer, save_keras, save_legacy_h5
from test_layers_conv_lstm import FILTERS, C, _weights, keras_conv_lstm
from test_layers_recurrent import F, U, cell_weights, keras_rnn
from test_streaming_cells import run_chunks, zero_states

import converter
from converter.errors import KconvertWarning

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
T, B = 12, 2


def _model(batch_shape: list[int | None], layers: list[dict[str, object]], dtype: str = "float32"
           ) -> dict[str, object]:
    entries = [layer("InputLayer", "input_layer", batch_shape=batch_shape, dtype=dtype), *layers]
    return {"class_name": "Sequential", "config": {"name": "s", "layers": entries}}


def _input_dims(model: onnx.ModelProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]


def _streamed(path: Path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("error", KconvertWarning)  # freed without a word
        return converter.convert(path, streaming=True)


@pytest.mark.parametrize("fmt", SAVERS)
def test_stateful_lstm_runs_chunks_of_any_length(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    cfg = {"units": U, "return_sequences": True, "stateful": True}
    w = cell_weights(rng, "LSTM", cfg)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", _model([B, T, F], [layer("LSTM", "lstm", **cfg)]),
                       {"lstm": {"cell": w}})
    model = _streamed(path)
    assert _input_dims(model) == [None, None, F]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (B, 3):  # the batch is free too
        x = rng.normal(size=(batch, 8, F)).astype(np.float32)
        (y,), states = run_chunks(session, x, (3, 5), sequence=True)
        expected = keras_rnn("LSTM", {**cfg, "return_state": True}, w, x)
        for got, want in zip([y, *states], expected):
            assert_close(got, want.astype(np.float32))


def test_embedding_ids_are_freed(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U}
    table = rng.normal(size=(10, F)).astype(np.float32)
    config = _model([B, T], [layer("Embedding", "emb", input_dim=10, output_dim=F),
                             layer("GRU", "gru", stateful=True, **cfg)], dtype="int32")
    weights = {"emb": [table], "gru": {"cell": cell_weights(rng, "GRU", cfg)}}
    model = _streamed(save_keras(tmp_path / "m.keras", config, weights))
    assert _input_dims(model) == [None, None]


def test_conv_lstm_time_is_freed(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"filters": FILTERS, "kernel_size": 3, "padding": "same", "return_sequences": True, "stateful": True}
    w = _weights(rng, 2, cfg)
    model = _streamed(save_keras(tmp_path / "m.keras", _model([B, T, 5, 4, C], [layer("ConvLSTM2D", "cl", **cfg)]),
                                 {"cl": {"cell": w}}, keras_version="3.15.1"))
    assert _input_dims(model) == [None, None, 5, 4, C]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(1, 8, 5, 4, C)).astype(np.float32)
    (y,), states = run_chunks(session, x, (5, 3), sequence=True)
    for got, want in zip([y, *states], keras_conv_lstm({**cfg, "return_state": True}, 2, w, x)):
        assert_close(got, want.astype(np.float32))
    assert zero_states(session, 1)["cl/h_in"].shape == (1, 5, 4, FILTERS)


def test_a_layer_needing_the_length_keeps_it(tmp_path: Path, rng: np.random.Generator) -> None:
    """LSTM sequences -> Flatten -> Dense: the Dense weights fix the length; the batch is still freed."""
    cfg = {"units": U, "return_sequences": True}
    layers = [layer("Dense", "pre", units=F), layer("LSTM", "lstm", **cfg), layer("Flatten", "flat"),
              layer("Dense", "out", units=2)]
    weights = {"pre": [rng.normal(size=(F, F)).astype(np.float32), np.zeros(F, np.float32)],
               "lstm": {"cell": cell_weights(rng, "LSTM", cfg)},
               "out": [rng.normal(size=(T * U, 2)).astype(np.float32), np.zeros(2, np.float32)]}
    path = save_keras(tmp_path / "m.keras", _model([B, T, F], layers), weights)
    with pytest.warns(KconvertWarning, match=r"time length of 'input_layer' \(12 steps\) stays fixed.*Flatten 'flat'"):
        model = converter.convert(path, streaming=True)
    assert _input_dims(model) == [None, T, F]
