"""Bidirectional(ConvLSTM1D / 2D / 3D): two Scans merged on the last axis, against a numpy Keras reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5, sequential
from test_layers_conv_lstm import ACTS, FILTERS, C, T, _weights, conv_nd, keras_conv_lstm

import converter
from converter.errors import KconvertError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
MERGES: dict[str | None, Any] = {
    "concat": lambda y, r: [np.concatenate([y, r], axis=-1)], "sum": lambda y, r: [y + r],
    "ave": lambda y, r: [(y + r) / 2], "mul": lambda y, r: [y * r], None: lambda y, r: [y, r],
}


def _to_first(y: np.ndarray, sequence: bool) -> np.ndarray:
    return np.moveaxis(y, -1, 2 if sequence else 1)


def keras_bidirectional(cfg: dict[str, Any], rank: int, fw: list[np.ndarray], bw: list[np.ndarray], x: np.ndarray,
                        merge: str | None) -> list[np.ndarray]:
    """Keras' Bidirectional.call on a channels_last x; channels_first results are moved BEFORE the merge,
    since Keras joins the directions on the last axis of whatever layout the layer has."""
    sequences, first = bool(cfg.get("return_sequences")), cfg.get("data_format") == "channels_first"
    fwd = keras_conv_lstm(cfg, rank, fw, x)
    bwd = keras_conv_lstm({**cfg, "go_backwards": True}, rank, bw, x)
    if first:
        fwd = [_to_first(a, sequences and i == 0) for i, a in enumerate(fwd)]
        bwd = [_to_first(a, sequences and i == 0) for i, a in enumerate(bwd)]
    y, y_rev = fwd[0], bwd[0][:, ::-1] if sequences else bwd[0]
    return [*MERGES[merge](y, y_rev), *fwd[1:], *bwd[1:]]


def _bidirectional(kind: str, cfg: dict[str, Any], merge: str | None, with_backward: bool) -> dict[str, Any]:
    extra = {"backward_layer": layer(kind, "backward", **cfg, go_backwards=True)} if with_backward else {}
    return layer("Bidirectional", "bi", merge_mode=merge, layer=layer(kind, "forward", **cfg), **extra)


def _keras3_weights(fw: list[np.ndarray], bw: list[np.ndarray]) -> dict[str, Any]:
    return {"bi": {"forward_layer": {"cell": fw}, "backward_layer": {"cell": bw}}}


CASES = [
    ("ConvLSTM1D", (9,), {"kernel_size": 3, "dilation_rate": 2}),
    ("ConvLSTM2D", (6, 5), {"kernel_size": 3, "padding": "same"}),
    ("ConvLSTM2D", (7, 6), {"kernel_size": [3, 2], "strides": 2, "data_format": "channels_first", "use_bias": False}),
    ("ConvLSTM3D", (4, 5, 3), {"kernel_size": 2, "padding": "same", "strides": [1, 2, 1]}),
    ("ConvLSTM1D", (8,), {"kernel_size": 2, "data_format": "channels_first", "activation": "relu"}),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("merge", list(MERGES))
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("kind, space, options", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bidirectional_conv_lstm(tmp_path: Path, rng: np.random.Generator, fmt: str, merge: str | None,
                                 sequences: bool, kind: str, space: tuple[int, ...], options: dict[str, Any]) -> None:
    rank = len(space)
    cfg = {"filters": FILTERS, **options, "return_sequences": sequences, "return_state": merge is None}
    fw, bw = _weights(rng, rank, cfg), _weights(rng, rank, cfg)
    x = rng.normal(size=(3, T, *space, C)).astype(np.float32)
    x_in = np.moveaxis(x, -1, 2) if cfg.get("data_format") == "channels_first" else x
    config = sequential([_bidirectional(kind, cfg, merge, with_backward=fmt == "keras")], x_in.shape[1:])
    weights = _keras3_weights(fw, bw) if fmt == "keras" else {"bi": fw + bw}
    got = run_onnx(converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)), x_in)
    expected = keras_bidirectional(cfg, rank, fw, bw, x, merge)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


def test_channels_first_concat_doubles_the_last_spatial_axis(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"filters": FILTERS, "kernel_size": 3, "data_format": "channels_first", "return_sequences": True}
    config = sequential([_bidirectional("ConvLSTM2D", cfg, "concat", True)], (T, C, 6, 5))
    path = save_keras(tmp_path / "m.keras", config, _keras3_weights(_weights(rng, 2, cfg), _weights(rng, 2, cfg)))
    dims = converter.convert(path).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [T, FILTERS, 4, 6]


def test_initial_states_are_split_forward_then_backward(tmp_path: Path, rng: np.random.Generator) -> None:
    """bi(x, initial_state=[h_f, c_f, h_b, c_b]), with return_state: outputs y, h_f, c_f, h_b, c_b."""
    cfg = {"filters": FILTERS, "kernel_size": 3, "padding": "same", "return_sequences": True, "return_state": True}
    fw, bw = _weights(rng, 2, cfg), _weights(rng, 2, cfg)
    bi = _bidirectional("ConvLSTM2D", cfg, "sum", True)
    names = ["hf", "cf", "hb", "cb"]
    bi["inbound_nodes"] = [{"args": [keras_tensor("x")], "kwargs": {"initial_state": [keras_tensor(n) for n in names]}}]
    entries = [input_layer("x", (T, 5, 4, C)), *(input_layer(n, (5, 4, FILTERS)) for n in names)]
    for entry in entries:
        entry["inbound_nodes"] = []
    config = {"class_name": "Functional", "config": {
        "name": "f", "layers": [*entries, bi], "input_layers": [[n, 0, 0] for n in ["x", *names]],
        "output_layers": [["bi", 0, k] for k in range(5)]}}
    x = rng.normal(size=(2, T, 5, 4, C)).astype(np.float32)
    states = [rng.normal(size=(2, 5, 4, FILTERS)).astype(np.float32) for _ in names]
    got = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, _keras3_weights(fw, bw))), x, *states)
    fwd, bwd = _run_from(cfg, fw, x, states[:2], False), _run_from(cfg, bw, x, states[2:], True)
    expected = [fwd[0] + bwd[0][:, ::-1], *fwd[1:], *bwd[1:]]
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


def _run_from(cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray, states: list[np.ndarray],
              backwards: bool) -> list[np.ndarray]:
    """Keras' ConvLSTM2D(padding="same", default activations) from given initial states (h, c)."""
    h, c = states
    outputs = []
    for t in (range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])):
        z = conv_nd(x[:, t], w[0], (1, 1), (1, 1), "same") + w[2] + conv_nd(h, w[1], (1, 1), (1, 1), "same")
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        c = ACTS["sigmoid"](zf) * c + ACTS["sigmoid"](zi) * np.tanh(zc)
        h = ACTS["sigmoid"](zo) * np.tanh(c)
        outputs.append(h)
    return [np.stack(outputs, axis=1), h, c]


def _convert_refused(tmp_path: Path, bi: dict[str, Any], space: tuple[int, ...],
                     weights: dict[str, Any] | None = None) -> KconvertError:
    path = save_keras(tmp_path / "m.keras", sequential([bi], (T, *space, C)), weights or {})
    with pytest.raises(KconvertError) as caught:
        converter.convert(path)
    return caught.value


def test_conv_lstm_paired_with_lstm_is_refused(tmp_path: Path) -> None:
    bi = layer("Bidirectional", "bi", layer=layer("ConvLSTM1D", "f", filters=2, kernel_size=2),
               backward_layer=layer("LSTM", "b", units=2, go_backwards=True))
    err = _convert_refused(tmp_path, bi, (6,))
    assert isinstance(err, UnsupportedLayerError) and "pairs a ConvLSTM1D with a LSTM" in str(err)


def test_directions_that_differ_in_return_sequences_are_refused(tmp_path: Path) -> None:
    bi = layer("Bidirectional", "bi", layer=layer("ConvLSTM1D", "f", filters=2, kernel_size=2),
               backward_layer=layer("ConvLSTM1D", "b", filters=2, kernel_size=2, go_backwards=True,
                                    return_sequences=True))
    err = _convert_refused(tmp_path, bi, (6,))
    assert "differ in return_sequences" in str(err) and err.layer == "bi"


def test_unmergeable_geometries_are_refused(tmp_path: Path) -> None:
    bi = layer("Bidirectional", "bi", merge_mode="sum", layer=layer("ConvLSTM1D", "f", filters=2, kernel_size=2),
               backward_layer=layer("ConvLSTM1D", "b", filters=2, kernel_size=3, go_backwards=True))
    arrays = [[np.zeros((k, C, 8), np.float32), np.zeros((k, 2, 8), np.float32), np.zeros(8, np.float32)]
              for k in (2, 3)]
    err = _convert_refused(tmp_path, bi, (6,), _keras3_weights(*arrays))
    assert "cannot merge (sum)" in str(err) and err.layer == "bi"
