"""--streaming: recurrent states as graph inputs/outputs; chunked runs equal the whole-sequence run (no TF)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import assert_close
from kmodels import input_layer, layer, save_keras, sequential
from test_layers_recurrent import F, U, cell_weights, initial_state_model, keras_rnn

import converter
from application.cli import main
from converter.errors import KconvertWarning, UnsupportedLayerError
from converter.value_map import KERAS_VALUES_KEY

T = 12
CHUNKS = (5, 4, 3)  # uneven on purpose: the state, not the chunk length, carries the sequence
KINDS = [("LSTM", {}), ("GRU", {"reset_after": True}), ("GRU", {"reset_after": False}), ("SimpleRNN", {})]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _zero_states(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    return {i.name: np.zeros((x.shape[0], i.shape[1]), np.float32) for i in session.get_inputs()[1:]}


def _whole(session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    first = session.get_inputs()[0].name
    return list(session.run(None, {first: x, **_zero_states(session, x)}))


def _chunked(session: ort.InferenceSession, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Feed x chunk by chunk, each chunk's *_out states as the next chunk's *_in; returns the main outputs
    of every chunk and the final states."""
    first = session.get_inputs()[0].name
    states = _zero_states(session, x)
    out_names = [o.name for o in session.get_outputs()]
    mains, start = [], 0
    for length in CHUNKS:
        got = dict(zip(out_names, session.run(None, {first: x[:, start:start + length], **states})))
        states = {name: got[name.removesuffix("_in") + "_out"] for name in states}
        mains.append([v for k, v in got.items() if not k.endswith(("/h_out", "/c_out"))])
        start += length
    # A sequence output is the chunks' outputs joined in time; a last output is the last chunk's.
    joined = [np.concatenate(per_chunk, axis=1) if per_chunk[0].ndim == 3 else per_chunk[-1]
              for per_chunk in zip(*mains)]
    return joined, list(states.values())


def _convert(tmp_path: Path, config: dict[str, Any], weights: dict[str, Any]) -> onnx.ModelProto:
    return converter.convert(save_keras(tmp_path / "m.keras", config, weights), streaming=True)


@pytest.mark.parametrize(("kind", "extra"), KINDS, ids=lambda v: str(v))
@pytest.mark.parametrize("sequences", [True, False])
def test_chunked_equals_whole(tmp_path: Path, rng: np.random.Generator, kind: str, extra: dict[str, Any],
                              sequences: bool) -> None:
    cfg = {"units": U, "return_sequences": sequences, **extra}
    w = cell_weights(rng, kind, cfg)
    model = _convert(tmp_path, sequential([layer(kind, "rnn", **cfg)], (None, F)), {"rnn": {"cell": w}})
    slots = ("h", "c") if kind == "LSTM" else ("h",)
    assert [i.name for i in model.graph.input][1:] == [f"rnn/{s}_in" for s in slots]
    assert [o.name for o in model.graph.output] == ["rnn", *(f"rnn/{s}_out" for s in slots)]
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    session = _session(model)
    whole = _whole(session, x)
    expected = keras_rnn(kind, {**cfg, "return_state": True}, w, x)
    for got, want in zip(whole, expected):  # the whole run from zero states is Keras' (numpy reference)
        assert_close(got, want.astype(np.float32))
    mains, states = _chunked(session, x)
    if sequences:
        assert_close(mains[0], whole[0])
    else:
        assert_close(mains[0], whole[0])  # the last chunk's last output
    for got, want in zip(states, whole[1:]):
        assert_close(got, want)


def test_stacked_and_stateful(tmp_path: Path, rng: np.random.Generator) -> None:
    """Two stacked layers (the first stateful=True) each export their states; chunked == whole."""
    lstm_cfg = {"units": U, "return_sequences": True, "stateful": True}
    gru_cfg = {"units": U, "reset_after": True}
    config = sequential([layer("LSTM", "lstm", **lstm_cfg), layer("GRU", "gru", **gru_cfg)], (None, F))
    weights = {"lstm": {"cell": cell_weights(rng, "LSTM", lstm_cfg)},
               "gru": {"cell": cell_weights(rng, "GRU", gru_cfg, features=U)}}
    model = _convert(tmp_path, config, weights)
    assert [i.name for i in model.graph.input][1:] == ["lstm/h_in", "lstm/c_in", "gru/h_in"]
    x = rng.normal(size=(3, T, F)).astype(np.float32)
    session = _session(model)
    whole = _whole(session, x)
    mains, states = _chunked(session, x)
    assert_close(mains[0], whole[0])
    names = [o.name for o in session.get_outputs()]
    for name, got in zip(names[1:], states):
        assert_close(got, whole[names.index(name)])


def test_masked_state_is_the_last_unmasked_steps(tmp_path: Path, rng: np.random.Generator) -> None:
    """With mask_zero the states skip masked steps; a chunk with no valid step passes its states on."""
    cfg = {"units": U, "return_sequences": True}
    w = cell_weights(rng, "LSTM", cfg)
    table = rng.normal(size=(10, F)).astype(np.float32)
    config = sequential([input_layer("ids", (None,), "int64"),
                         layer("Embedding", "emb", input_dim=10, output_dim=F, mask_zero=True),
                         layer("LSTM", "lstm", **cfg)])
    model = _convert(tmp_path, config, {"emb": [table], "lstm": {"cell": w}})
    ids = rng.integers(1, 9, size=(2, T))
    ids[0, 5:9] = 0  # the whole second chunk masked
    ids[1, [0, 6, 11]] = 0  # holes
    session = _session(model)
    _, states = _chunked(session, ids)
    expected = keras_rnn("LSTM", {**cfg, "return_state": True}, w, table[ids], ids != 0)
    for got, want in zip(states, expected[1:]):
        assert_close(got, want.astype(np.float32))


def test_state_io_in_the_layer_map(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U}
    model = _convert(tmp_path, sequential([layer("GRU", "gru", **cfg)], (None, F)),
                     {"gru": {"cell": cell_weights(rng, "GRU", cfg)}})
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == KERAS_VALUES_KEY))
    assert meta["inputs"]["gru/h_in"] is None and meta["outputs"]["gru/h_out"] is None
    assert [entry["layer"] for entry in meta["layers"]] == ["gru"]


def test_bidirectional_is_refused_by_name(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U}
    config = sequential([layer("Bidirectional", "bi", layer=layer("LSTM", "inner", **cfg))], (T, F))
    weights = {"bi": {"forward_layer": {"cell": cell_weights(rng, "LSTM", cfg)},
                      "backward_layer": {"cell": cell_weights(rng, "LSTM", cfg)}}}
    with pytest.raises(UnsupportedLayerError, match="Bidirectional 'bi' cannot export its states.*backward"):
        _convert(tmp_path, config, weights)
    converter.convert(tmp_path / "m.keras")  # without --streaming it converts


def test_initial_state_from_the_model_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U}
    config = initial_state_model(layer("SimpleRNN", "rnn", **cfg))
    with pytest.raises(UnsupportedLayerError, match="SimpleRNN 'rnn' takes its initial states from other tensors"):
        _convert(tmp_path, config, {"rnn": {"cell": cell_weights(rng, "SimpleRNN", cfg)}})


def test_stateful_without_streaming_warns(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U, "stateful": True}
    path = save_keras(tmp_path / "m.keras", sequential([layer("LSTM", "lstm", **cfg)], (T, F)),
                      {"lstm": {"cell": cell_weights(rng, "LSTM", cfg)}})
    with pytest.warns(KconvertWarning, match="LSTM 'lstm' is stateful.*--streaming"):
        model = converter.convert(path)
    assert len(model.graph.input) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", KconvertWarning)
        assert len(converter.convert(path, streaming=True).graph.input) == 3


def test_cli_streaming(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U}
    path = save_keras(tmp_path / "m.keras", sequential([layer("LSTM", "lstm", **cfg)], (None, F)),
                      {"lstm": {"cell": cell_weights(rng, "LSTM", cfg)}})
    out = tmp_path / "s.onnx"
    result = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "--streaming", "--json"])
    assert result.exit_code == 0, result.output
    assert [i.name for i in onnx.load(out).graph.input][1:] == ["lstm/h_in", "lstm/c_in"]
