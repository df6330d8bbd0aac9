"""SimpleRNN / GRU / LSTM / Bidirectional / masks, from both writers, against a numpy Keras reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
T, F, U = 6, 4, 5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


ACTS = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0), "linear": lambda x: x,
        "softsign": lambda x: x / (1 + np.abs(x)), "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
        "hard_sigmoid_k2": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
        "hard_sigmoid_k3": lambda x: np.clip(x / 6 + 0.5, 0, 1)}


def _step(kind: str, cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray,
          states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One Keras cell step (keras/src/layers/rnn/*.py)."""
    act, rec = ACTS[cfg.get("activation", "tanh")], ACTS[cfg.get("recurrent_activation", "sigmoid")]
    kernel, recurrent = w[0], w[1]
    bias = w[2] if len(w) > 2 else np.zeros((2, kernel.shape[1]) if cfg.get("reset_after") else kernel.shape[1])
    h = states[0]
    if kind == "SimpleRNN":
        h = act(x @ kernel + bias + h @ recurrent)
        return h, [h]
    if kind == "LSTM":
        i, f, c, o = np.split(x @ kernel + h @ recurrent + bias, 4, axis=-1)
        c_new = rec(f) * states[1] + rec(i) * act(c)
        h = rec(o) * act(c_new)
        return h, [h, c_new]
    if cfg.get("reset_after"):
        xz, xr, xh = np.split(x @ kernel + bias[0], 3, axis=-1)
        hz, hr, hh = np.split(h @ recurrent + bias[1], 3, axis=-1)
        z, r = rec(xz + hz), rec(xr + hr)
        cand = act(xh + r * hh)
    else:
        xz, xr, xh = np.split(x @ kernel + bias, 3, axis=-1)
        rz, rr, rh = np.split(recurrent, 3, axis=-1)
        z, r = rec(xz + h @ rz), rec(xr + h @ rr)
        cand = act(xh + (r * h) @ rh)
    h = z * h + (1 - z) * cand
    return h, [h]


def keras_rnn(kind: str, cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray,
              mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Keras' backend.rnn: masked steps carry states and repeat the previous output (or give zeros)."""
    batch = x.shape[0]
    states = [np.zeros((batch, U), np.float32) for _ in range(2 if kind == "LSTM" else 1)]
    mask = np.ones(x.shape[:2], bool) if mask is None else mask
    if cfg.get("go_backwards"):
        x, mask = x[:, ::-1], mask[:, ::-1]
    prev, outputs = np.zeros((batch, U), np.float32), []
    for t in range(x.shape[1]):
        out, new = _step(kind, cfg, w, x[:, t], states)
        m = mask[:, t:t + 1]
        states = [np.where(m, n, s) for n, s in zip(new, states)]
        prev = np.where(m, out, 0 if cfg.get("zero_output_for_mask") else prev)
        outputs.append(prev)
    y = np.stack(outputs, axis=1) if cfg.get("return_sequences") else outputs[-1]
    return [y, *states] if cfg.get("return_state") else [y]


def cell_weights(rng: np.random.Generator, kind: str, cfg: dict[str, Any], features: int = F) -> list[np.ndarray]:
    width = GATES[kind] * U
    arrays = [rng.normal(size=(features, width)), rng.normal(size=(U, width))]
    if cfg.get("use_bias", True):
        arrays.append(rng.normal(size=(2, width) if cfg.get("reset_after") else (width,)))
    return [(0.5 * a).astype(np.float32) for a in arrays]


def convert_run(tmp_path: Path, fmt: str, config: dict[str, Any], weights: dict[str, Any], *xs: np.ndarray,
                keras_version: str | None = None) -> list[np.ndarray]:
    kwargs = {} if keras_version is None else {"keras_version": keras_version}
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights, **kwargs)
    return run_onnx(converter.convert(path), *xs)


OPTIONS = [
    {},
    {"return_sequences": True},
    {"go_backwards": True},
    {"go_backwards": True, "return_sequences": True},
    {"return_sequences": True, "return_state": True, "use_bias": False},
    {"activation": "relu", "recurrent_activation": "softsign", "return_sequences": True},
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_recurrent_layer(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, kind: str,
                         options: dict[str, Any]) -> None:
    cfg = {"units": U, **options, **({"reset_after": True} if kind == "GRU" else {})}
    w = cell_weights(rng, kind, cfg)
    x = rng.normal(size=(batch, T, F)).astype(np.float32)
    got = convert_run(tmp_path, fmt, sequential([layer(kind, "rnn", **cfg)], (T, F)), {"rnn": {"cell": w}}, x)
    expected = keras_rnn(kind, cfg, w, x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("fmt", SAVERS)
def test_gru_reset_after(tmp_path: Path, rng: np.random.Generator, reset_after: bool, fmt: str) -> None:
    cfg = {"units": U, "reset_after": reset_after, "return_sequences": True}
    w = cell_weights(rng, "GRU", cfg)
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    (y,) = convert_run(tmp_path, fmt, sequential([layer("GRU", "gru", **cfg)], (T, F)), {"gru": {"cell": w}}, x)
    assert_close(y, keras_rnn("GRU", cfg, w, x)[0].astype(np.float32))


@pytest.mark.parametrize("keras_version, expected", [("2.15.0", "hard_sigmoid_k2"), ("3.15.1", "hard_sigmoid_k3")])
def test_hard_sigmoid_gates_follow_keras_version(tmp_path: Path, rng: np.random.Generator, keras_version: str,
                                                 expected: str) -> None:
    cfg = {"units": U, "recurrent_activation": "hard_sigmoid"}
    w = cell_weights(rng, "LSTM", cfg)
    x = 3 * rng.normal(size=(2, T, F)).astype(np.float32)
    config = sequential([layer("LSTM", "lstm", **cfg)], (T, F))
    (y,) = convert_run(tmp_path, "h5", config, {"lstm": w}, x, keras_version=keras_version)
    assert_close(y, keras_rnn("LSTM", {**cfg, "recurrent_activation": expected}, w, x)[0].astype(np.float32))


def test_unsupported_activation_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U, "activation": "swish"}
    path = save_keras(tmp_path / "m.keras", sequential([layer("LSTM", "lstm", **cfg)], (T, F)),
                      {"lstm": {"cell": cell_weights(rng, "LSTM", cfg)}})
    with pytest.raises(UnsupportedLayerError, match="activation='swish'.*cannot express"):
        converter.convert(path)


def test_rank4_input_gets_keras_worded_error(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": 10}
    path = save_keras(tmp_path / "m.keras", sequential([layer("LSTM", "lstm", **cfg)], (1, 3, 1)),
                      {"lstm": {"cell": cell_weights(rng, "LSTM", cfg, features=1)}})
    hint = r"input_shape excludes the batch dimension.*did you mean input_shape=\(3, 1\)"
    with pytest.raises(ShapeError, match=hint):
        converter.convert(path)


def test_stateful_converts_with_zero_initial_states(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"units": U, "stateful": True, "return_sequences": True}
    w = cell_weights(rng, "LSTM", cfg)
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    (y,) = convert_run(tmp_path, "keras", sequential([layer("LSTM", "lstm", **cfg)], (T, F)), {"lstm": {"cell": w}}, x)
    assert_close(y, keras_rnn("LSTM", cfg, w, x)[0].astype(np.float32))


def _mask_ids(rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(1, 9, size=(4, T))
    ids[0, 4:] = 0  # post-padding
    ids[1, :3] = 0  # pre-padding
    ids[2, [1, 4]] = 0  # holes
    ids[3, :] = 0  # nothing valid
    return ids.astype(np.int64)


MASK_OPTIONS = [{}, {"return_sequences": True}, {"go_backwards": True, "return_sequences": True},
                {"return_sequences": True, "zero_output_for_mask": True}, {"go_backwards": True}]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("options", MASK_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_embedding_mask_zero(tmp_path: Path, rng: np.random.Generator, fmt: str, kind: str,
                             options: dict[str, Any]) -> None:
    cfg = {"units": U, **options, **({"reset_after": True} if kind == "GRU" else {})}
    table = rng.normal(size=(10, F)).astype(np.float32)
    w = cell_weights(rng, kind, cfg)
    ids = _mask_ids(rng)
    config = sequential([input_layer("ids", (T,), "int64"), layer("Embedding", "emb", input_dim=10, output_dim=F,
                                                                  mask_zero=True),
                         layer("Dropout", "drop", rate=0.5), layer(kind, "rnn", **cfg)])
    (y,) = convert_run(tmp_path, fmt, config, {"emb": [table], "rnn": {"cell": w}}, ids)
    assert_close(y, keras_rnn(kind, cfg, w, table[ids], ids != 0)[0].astype(np.float32))


@pytest.mark.parametrize("fmt", SAVERS)
def test_masking_layer_feeds_stacked_rnns(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    first, second = {"units": U, "return_sequences": True}, {"units": U, "reset_after": True}
    w1 = cell_weights(rng, "LSTM", first, features=3)
    w2 = cell_weights(rng, "GRU", second, features=U)
    x = rng.normal(size=(4, T, 3)).astype(np.float32)
    x[0, 4:], x[1, :2], x[2, 3] = -1.0, -1.0, -1.0
    config = sequential([layer("Masking", "masking", mask_value=-1.0), layer("LSTM", "lstm", **first),
                         layer("GRU", "gru", **second)], (T, 3))
    (y,) = convert_run(tmp_path, fmt, config, {"lstm": {"cell": w1}, "gru": {"cell": w2}}, x)
    mask = (x != -1.0).any(-1)
    hidden = keras_rnn("LSTM", first, w1, np.where(mask[..., None], x, 0), mask)[0]
    assert_close(y, keras_rnn("GRU", second, w2, hidden, mask)[0].astype(np.float32))


def test_masking_layer_alone_zeroes_masked_steps(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, T, 3)).astype(np.float32)
    x[0, 2], x[1, 5, 0] = 0.0, 0.0
    (y,) = convert_run(tmp_path, "keras", sequential([layer("Masking", "masking", mask_value=0.0)], (T, 3)), {}, x)
    assert_close(y, np.where((x != 0).any(-1, keepdims=True), x, 0))


def _keras_bidirectional(kind: str, cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray,
                         mask: np.ndarray | None, merge: str | None) -> list[np.ndarray]:
    sequences = cfg.get("return_sequences", False)
    zero = {"zero_output_for_mask": sequences}
    fwd = keras_rnn(kind, {**cfg, **zero}, w[:len(w) // 2], x, mask)
    bwd = keras_rnn(kind, {**cfg, **zero, "go_backwards": True}, w[len(w) // 2:], x, mask)
    y, y_rev = fwd[0], bwd[0][:, ::-1] if sequences else bwd[0]
    merged = {"concat": lambda: [np.concatenate([y, y_rev], -1)], "sum": lambda: [y + y_rev],
              "ave": lambda: [(y + y_rev) / 2], "mul": lambda: [y * y_rev], None: lambda: [y, y_rev]}[merge]()
    return merged + fwd[1:] + bwd[1:]


def _bidirectional_config(kind: str, cfg: dict[str, Any], merge: str | None) -> dict[str, Any]:
    return layer("Bidirectional", "bi", merge_mode=merge, layer=layer(kind, "inner", **cfg))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("merge", ["concat", "sum", "ave", "mul", None])
@pytest.mark.parametrize("sequences", [True, False])
def test_bidirectional(tmp_path: Path, rng: np.random.Generator, fmt: str, kind: str, merge: str | None,
                       sequences: bool) -> None:
    cfg = {"units": U, "return_sequences": sequences, "return_state": merge is None,
           **({"reset_after": False} if kind == "GRU" else {})}
    fw, bw = cell_weights(rng, kind, cfg), cell_weights(rng, kind, cfg)
    x = rng.normal(size=(3, T, F)).astype(np.float32)
    weights = {"bi": {"forward_layer": {"cell": fw}, "backward_layer": {"cell": bw}}}
    got = convert_run(tmp_path, fmt, sequential([_bidirectional_config(kind, cfg, merge)], (T, F)), weights, x)
    expected = _keras_bidirectional(kind, cfg, fw + bw, x, None, merge)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


@pytest.mark.parametrize("sequences", [True, False])
def test_bidirectional_masked(tmp_path: Path, rng: np.random.Generator, sequences: bool) -> None:
    cfg = {"units": U, "return_sequences": sequences}
    fw, bw = cell_weights(rng, "LSTM", cfg), cell_weights(rng, "LSTM", cfg)
    table = rng.normal(size=(10, F)).astype(np.float32)
    ids = _mask_ids(rng)
    config = sequential([input_layer("ids", (T,), "int64"),
                         layer("Embedding", "emb", input_dim=10, output_dim=F, mask_zero=True),
                         _bidirectional_config("LSTM", cfg, "concat")])
    weights = {"emb": [table], "bi": {"forward_layer": {"cell": fw}, "backward_layer": {"cell": bw}}}
    (y,) = convert_run(tmp_path, "keras", config, weights, ids)
    assert_close(y, _keras_bidirectional("LSTM", cfg, fw + bw, table[ids], ids != 0, "concat")[0].astype(np.float32))


def test_initial_state_tensor_kwargs(tmp_path: Path, rng: np.random.Generator) -> None:
    """Keras 3 functional: lstm(x, initial_state=[h, c]) arrives as tensor kwargs."""
    cfg = {"units": U, "return_sequences": True, "return_state": True}
    w = cell_weights(rng, "LSTM", cfg)
    lstm = layer("LSTM", "lstm", **cfg)
    lstm["inbound_nodes"] = [{"args": [keras_tensor("x")],
                              "kwargs": {"initial_state": [keras_tensor("h0"), keras_tensor("c0")]}}]
    inputs = [input_layer("x", (T, F)), input_layer("h0", (U,)), input_layer("c0", (U,))]
    for entry in inputs:
        entry["inbound_nodes"] = []
    config = {"class_name": "Functional", "config": {
        "name": "f", "layers": [*inputs, lstm], "input_layers": [["x", 0, 0], ["h0", 0, 0], ["c0", 0, 0]],
        "output_layers": [["lstm", 0, 0], ["lstm", 0, 1], ["lstm", 0, 2]]}}
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    h0, c0 = rng.normal(size=(2, 2, U)).astype(np.float32)
    got = convert_run(tmp_path, "keras", config, {"lstm": {"cell": w}}, x, h0, c0)
    expected = _with_initial(cfg, w, x, h0, c0)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


def _with_initial(cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray, h: np.ndarray,
                  c: np.ndarray) -> list[np.ndarray]:
    states, outputs = [h, c], []
    for t in range(x.shape[1]):
        out, states = _step("LSTM", cfg, w, x[:, t], states)
        outputs.append(out)
    return [np.stack(outputs, axis=1), *states]


def initial_state_model(rnn: dict[str, Any]) -> dict[str, Any]:
    """A Functional model calling the recurrent layer entry `rnn` on input x with initial_state=[input h0]."""
    rnn["inbound_nodes"] = [{"args": [keras_tensor("x")], "kwargs": {"initial_state": [keras_tensor("h0")]}}]
    inputs = [input_layer("x", (T, F)), input_layer("h0", (U,))]
    for entry in inputs:
        entry["inbound_nodes"] = []
    return {"class_name": "Functional", "config": {
        "name": "f", "layers": [*inputs, rnn], "input_layers": [["x", 0, 0], ["h0", 0, 0]],
        "output_layers": [[rnn["config"]["name"], 0, 0]]}}


def test_too_few_initial_state_tensors_is_a_clean_error(tmp_path: Path, rng: np.random.Generator) -> None:
    """An LSTM takes [h, c]: a file that passes only h is refused naming the layer, not an IndexError."""
    cfg = {"units": U, "return_sequences": True}
    config = initial_state_model(layer("LSTM", "lstm", **cfg))
    x = rng.normal(size=(2, T, F)).astype(np.float32)
    h0 = rng.normal(size=(2, U)).astype(np.float32)
    with pytest.raises(ShapeError, match="1 initial state tensors") as err:
        convert_run(tmp_path, "keras", config, {"lstm": {"cell": cell_weights(rng, "LSTM", cfg)}}, x, h0)
    assert err.value.layer == "lstm" and err.value.hint
