"""RNN(cell) / RNN(StackedRNNCells) and Keras 2's CuDNNLSTM / CuDNNGRU, against numpy references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential
from test_layers_recurrent import F, T, U, _mask_ids, _sigmoid, cell_weights, keras_rnn

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
CELLS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
SAVED = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}


def _cell(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": CELLS[kind], "config": {"name": SAVED[kind], "units": U, **cfg}}


def _rnn_weights(kinds: list[str], arrays: list[list[np.ndarray]]) -> dict[str, Any]:
    """Keras 3 paths (`cell/vars`, or `cell/cells/<saved name>/vars`); legacy files use the order given."""
    if len(kinds) == 1:
        return {"cell": arrays[0]}
    seen: dict[str, int] = {}
    paths = {}
    for kind, w in zip(kinds, arrays):
        seen[kind] = seen.get(kind, -1) + 1
        paths[f"cell/cells/{SAVED[kind]}" + (f"_{seen[kind]}" if seen[kind] else "")] = w
    return paths


def stacked_reference(kinds: list[str], cfgs: list[dict[str, Any]], weights: list[list[np.ndarray]],
                      flags: dict[str, Any], x: np.ndarray, mask: np.ndarray | None) -> list[np.ndarray]:
    """Stacked cells step together = a chain of sequence-returning layers (see rnn_wrapper.py)."""
    states: list[np.ndarray] = []
    for k, (kind, cfg, w) in enumerate(zip(kinds, cfgs, weights)):
        last = k == len(kinds) - 1
        own = {**cfg, **flags, "return_sequences": flags.get("return_sequences") if last else True,
               "return_state": True, "go_backwards": flags.get("go_backwards") if k == 0 else False}
        if k == 1 and flags.get("go_backwards") and mask is not None:
            mask = mask[:, ::-1]
        y, *own_states = keras_rnn(kind, own, w, x, mask)
        x, states = y, [*states, *own_states]
    return [x, *states] if flags.get("return_state") else [x]


def rnn_of_cells(rng: np.random.Generator, kinds: list[str], flags: dict[str, Any], steps: int | None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[list[np.ndarray]]]:
    """A Sequential model of one RNN layer over `kinds` cells (GRUs reset_after, stacked when several), with
    random cell weights: (config, the cells' configs, their weights)."""
    cfgs = [{"reset_after": True} if kind == "GRU" else {} for kind in kinds]
    weights = [cell_weights(rng, kind, cfg, features=F if k == 0 else U)
               for k, (kind, cfg) in enumerate(zip(kinds, cfgs))]
    cells = [_cell(kind, cfg) for kind, cfg in zip(kinds, cfgs)]
    cell = cells[0] if len(cells) == 1 else {"class_name": "StackedRNNCells", "config": {"cells": cells}}
    return sequential([layer("RNN", "rnn", cell=cell, **flags)], (steps, F)), cfgs, weights


STACKS = [
    (["LSTM"], {"return_sequences": True}),
    (["GRU"], {"go_backwards": True, "return_state": True}),
    (["SimpleRNN"], {"return_sequences": True, "go_backwards": True}),
    (["SimpleRNN", "LSTM", "GRU"], {"return_sequences": True, "return_state": True}),
    (["LSTM", "LSTM"], {"go_backwards": True}),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kinds, flags", STACKS, ids=["-".join(k) + "-" + "-".join(f) for k, f in STACKS])
def test_rnn_of_cells(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, kinds: list[str],
                      flags: dict[str, Any]) -> None:
    config, cfgs, weights = rnn_of_cells(rng, kinds, flags, T)
    x = rng.normal(size=(batch, T, F)).astype(np.float32)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"rnn": _rnn_weights(kinds, weights)})
    got = run_onnx(converter.convert(path), x)
    expected = stacked_reference(kinds, cfgs, weights, flags, x, None)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("flags", [{"return_sequences": True}, {"go_backwards": True, "return_sequences": True}])
def test_stacked_cells_under_a_mask(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                    flags: dict[str, Any]) -> None:
    kinds, cfgs = ["GRU", "LSTM"], [{"reset_after": False}, {}]
    weights = [cell_weights(rng, kind, cfg, features=F if k == 0 else U) for k, (kind, cfg) in
               enumerate(zip(kinds, cfgs))]
    cell = {"class_name": "StackedRNNCells", "config": {"cells": [_cell(k, c) for k, c in zip(kinds, cfgs)]}}
    table = rng.normal(size=(10, F)).astype(np.float32)
    config = sequential([input_layer("ids", (T,), "int64"),
                         layer("Embedding", "emb", input_dim=10, output_dim=F, mask_zero=True),
                         layer("RNN", "rnn", cell=cell, **flags)])
    ids = _mask_ids(rng)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"emb": [table], "rnn": _rnn_weights(kinds, weights)})
    (y,) = run_onnx(converter.convert(path), ids)
    (expected,) = stacked_reference(kinds, cfgs, weights, flags, table[ids], ids != 0)
    assert_close(y, expected.astype(np.float32))


def test_unknown_cell_is_refused(tmp_path: Path) -> None:
    cell = {"class_name": "PeepholeLSTMCell", "config": {"units": U}}
    path = save_keras(tmp_path / "m.keras", sequential([layer("RNN", "rnn", cell=cell)], (T, F)), {"rnn": []})
    with pytest.raises(UnsupportedLayerError, match="wraps a PeepholeLSTMCell"):
        converter.convert(path)


# --- CuDNNLSTM / CuDNNGRU -------------------------------------------------------------------------

def _cudnn_blocks(kernel: np.ndarray, gates: int) -> list[np.ndarray]:
    """cuDNN reads each gate's stored block as a row-major (units, rows) matrix W of `W @ v`."""
    return [block.reshape(block.shape[1], block.shape[0]) for block in np.hsplit(kernel, gates)]


def cudnn_reference(kind: str, w: list[np.ndarray], x: np.ndarray, flags: dict[str, Any]) -> list[np.ndarray]:
    """cuDNN's LSTM / GRU equations on the flat parameter buffer the CuDNN layers build."""
    gates = 4 if kind == "LSTM" else 3
    wx, wh = _cudnn_blocks(w[0], gates), _cudnn_blocks(w[1], gates)
    bx, bh = np.split(w[2].reshape(2, gates, U), 2)
    h = c = np.zeros((x.shape[0], U))
    steps = range(T - 1, -1, -1) if flags.get("go_backwards") else range(T)
    outputs = []
    for t in steps:
        a = [x[:, t] @ wx[g].T + bx[0, g] for g in range(gates)]
        r = [h @ wh[g].T + bh[0, g] for g in range(gates)]
        if kind == "LSTM":  # gates i, f, c, o
            i, f, o = (_sigmoid(a[g] + r[g]) for g in (0, 1, 3))
            c = f * c + i * np.tanh(a[2] + r[2])
            h = o * np.tanh(c)
        else:  # stored in Keras' z, r, h order; the new gate sees r * (R h + b)
            z, reset = _sigmoid(a[0] + r[0]), _sigmoid(a[1] + r[1])
            h = z * h + (1 - z) * np.tanh(a[2] + reset * r[2])
        outputs.append(h)
    y = np.stack(outputs, axis=1) if flags.get("return_sequences") else h
    states = [h, c] if kind == "LSTM" else [h]
    return [y, *states] if flags.get("return_state") else [y]


def _cudnn_weights(rng: np.random.Generator, kind: str) -> list[np.ndarray]:
    gates = 4 if kind == "LSTM" else 3
    arrays = [rng.normal(size=(F, gates * U)), rng.normal(size=(U, gates * U)), rng.normal(size=(2 * gates * U,))]
    return [(0.5 * a).astype(np.float32) for a in arrays]


CUDNN_FLAGS = [{}, {"return_sequences": True}, {"go_backwards": True, "return_state": True}]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("flags", CUDNN_FLAGS, ids=lambda f: "-".join(f) or "plain")
def test_cudnn_layer(tmp_path: Path, rng: np.random.Generator, batch: int, kind: str, flags: dict[str, Any]) -> None:
    w = _cudnn_weights(rng, kind)
    config = sequential([layer(f"CuDNN{kind}", "cudnn", units=U, **flags)], (T, F))
    path = save_legacy_h5(tmp_path / "m.h5", config, {"cudnn": w}, keras_version="2.2.4")
    x = rng.normal(size=(batch, T, F)).astype(np.float32)
    got = run_onnx(converter.convert(path), x)
    expected = cudnn_reference(kind, w, x, flags)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_bidirectional_cudnn(tmp_path: Path, rng: np.random.Generator, kind: str) -> None:
    forward, backward = _cudnn_weights(rng, kind), _cudnn_weights(rng, kind)
    inner = layer(f"CuDNN{kind}", "cudnn", units=U, return_sequences=True)
    config = sequential([layer("Bidirectional", "bi", layer=inner, merge_mode="concat")], (T, F))
    path = save_legacy_h5(tmp_path / "m.h5", config, {"bi": forward + backward}, keras_version="2.2.4")
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    (y,) = run_onnx(converter.convert(path), x)
    fwd = cudnn_reference(kind, forward, x, {"return_sequences": True})[0]
    bwd = cudnn_reference(kind, backward, x, {"return_sequences": True, "go_backwards": True})[0][:, ::-1]
    assert_close(y, np.concatenate([fwd, bwd], axis=-1).astype(np.float32))
