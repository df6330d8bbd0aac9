"""--streaming for RNN(cell) (one cell and StackedRNNCells) and ConvLSTM1D/2D/3D: the states are graph inputs
and outputs in Keras' layout, the whole run from zero states is Keras' (numpy references), and a run
chunk by chunk with the states fed back equals the whole run (no TF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close
from kmodels import layer, save_keras, save_legacy_h5, sequential
from test_layers_conv_lstm import FILTERS, C, _to_first, _weights, keras_conv_lstm
from test_layers_recurrent import F
from test_layers_rnn_cells import _rnn_weights, rnn_of_cells, stacked_reference

import converter

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
T = 9
CHUNKS = (4, 2, 3)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def zero_states(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Zeros for every state input: its declared shape with the (symbolic) batch dim filled in."""
    return {i.name: np.zeros([d if isinstance(d, int) else batch for d in i.shape], np.float32)
            for i in session.get_inputs()[1:]}


def run_chunks(session: ort.InferenceSession, x: np.ndarray, chunks: tuple[int, ...], sequence: bool
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The main output of each chunk joined in time (or the last chunk's, when it has no time axis) and
    the final states, each chunk fed the states the one before returned."""
    first, names = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    states = zero_states(session, x.shape[0])
    mains, start = [], 0
    for length in chunks:
        got = dict(zip(names, session.run(None, {first: x[:, start:start + length], **states})))
        states = {name: got[name.removesuffix("_in") + "_out"] for name in states}
        mains.append(got[names[0]])
        start += length
    main = np.concatenate(mains, axis=1) if sequence else mains[-1]
    return [main], list(states.values())


def _check_streams(model: onnx.ModelProto, x: np.ndarray, expected: list[np.ndarray], sequence: bool) -> None:
    """`expected`: the model's outputs then the final states (numpy reference, whole sequence)."""
    session = _session(model)
    whole = session.run(None, {session.get_inputs()[0].name: x, **zero_states(session, x.shape[0])})
    assert len(whole) == len(expected)
    for got, want in zip(whole, expected):
        assert_close(got, want.astype(np.float32))
    mains, states = run_chunks(session, x, CHUNKS, sequence)
    assert_close(mains[0], whole[0])
    for got, want in zip(states, whole[len(whole) - len(states):]):
        assert_close(got, want)


STACKS = [(["LSTM"], {"return_sequences": True}), (["GRU"], {}),
          (["SimpleRNN", "LSTM", "GRU"], {"return_sequences": True}), (["LSTM", "LSTM"], {"return_state": True})]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("kinds, flags", STACKS, ids=["-".join(k) + "-" + "-".join(f) for k, f in STACKS])
def test_rnn_of_cells_streams(tmp_path: Path, rng: np.random.Generator, fmt: str, kinds: list[str],
                              flags: dict[str, Any]) -> None:
    config, cfgs, weights = rnn_of_cells(rng, kinds, flags, None)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"rnn": _rnn_weights(kinds, weights)})
    model = converter.convert(path, streaming=True)
    names = [f"rnn/{'' if len(kinds) == 1 else f'cell{k}/'}{slot}" for k, kind in enumerate(kinds)
             for slot in (("h", "c") if kind == "LSTM" else ("h",))]
    assert [i.name for i in model.graph.input][1:] == [f"{n}_in" for n in names]
    assert [o.name for o in model.graph.output][-len(names):] == [f"{n}_out" for n in names]
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    y, *states = stacked_reference(kinds, cfgs, weights, {**flags, "return_state": True}, x, None)
    # A layer that returns its states already has them as model outputs; the stream adds them once more.
    _check_streams(model, x, [y, *(states if flags.get("return_state") else []), *states],
                   bool(flags.get("return_sequences")))


CONV_CASES = [
    ("ConvLSTM1D", (7,), {"kernel_size": 3, "padding": "same", "return_sequences": True}),
    ("ConvLSTM2D", (6, 5), {"kernel_size": 3, "strides": 2}),
    ("ConvLSTM2D", (6, 5), {"kernel_size": 3, "padding": "same", "data_format": "channels_first",
                            "return_sequences": True, "stateful": True}),
    ("ConvLSTM3D", (4, 5, 3), {"kernel_size": 2, "padding": "same", "return_state": True}),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("kind, space, options", CONV_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV_CASES)])
def test_conv_lstm_streams(tmp_path: Path, rng: np.random.Generator, fmt: str, kind: str, space: tuple[int, ...],
                           options: dict[str, Any]) -> None:
    rank, cfg = len(space), {"filters": FILTERS, **options}
    w = _weights(rng, rank, cfg)
    first = cfg.get("data_format") == "channels_first"
    sample = (None, C, *space) if first else (None, *space, C)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer(kind, "cl", **cfg)], sample), {"cl": {"cell": w}},
                       keras_version="3.15.1")
    model = converter.convert(path, streaming=True)
    assert [i.name for i in model.graph.input][1:] == ["cl/h_in", "cl/c_in"]
    assert [o.name for o in model.graph.output][-2:] == ["cl/h_out", "cl/c_out"]
    x = rng.normal(size=(2, T, *space, C)).astype(np.float32)
    expected = keras_conv_lstm({**cfg, "return_state": True}, rank, w, x)
    if first:
        expected = [_to_first(e, i == 0 and bool(cfg.get("return_sequences"))) for i, e in enumerate(expected)]
    if cfg.get("return_state"):
        expected = [*expected, *expected[1:]]
    _check_streams(model, np.moveaxis(x, -1, 2) if first else x, expected, bool(cfg.get("return_sequences")))
