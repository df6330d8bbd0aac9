"""ConvLSTM1D / 2D / 3D (an ONNX Scan), from both writers, against a numpy Keras reference."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
T, C, FILTERS = 4, 2, 3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


ACTS = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0),
        "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1)}  # Keras 3's


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    return (value,) * rank if isinstance(value, int) else tuple(value)


def conv_nd(x: np.ndarray, w: np.ndarray, strides: tuple[int, ...], dilations: tuple[int, ...],
            padding: str) -> np.ndarray:
    """TensorFlow's channels_last convolution: x (batch, *space, in), w (*k, in, out)."""
    kernel = w.shape[:-2]
    pads = [(0, 0)]
    for n, k, s, d in zip(x.shape[1:-1], kernel, strides, dilations):
        span = (k - 1) * d + 1
        total = max((-(-n // s) - 1) * s + span - n, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [*pads, (0, 0)])
    out = [(n - ((k - 1) * d + 1)) // s + 1 for n, k, s, d in zip(xp.shape[1:-1], kernel, strides, dilations)]
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(o * d, o * d + (m - 1) * s + 1, s) for o, d, m, s in zip(offset, dilations, out, strides))
        y += xp[(slice(None), *window)] @ w[offset]
    return y


def keras_conv_lstm(cfg: dict[str, Any], rank: int, w: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """Keras' ConvLSTMCell over time (channels_last x: (batch, time, *space, channels))."""
    kernel, recurrent = w[0], w[1]
    bias = w[2] if len(w) > 2 else np.zeros(4 * FILTERS)
    strides, dilations = _tuple(cfg.get("strides", 1), rank), _tuple(cfg.get("dilation_rate", 1), rank)
    act, rec = ACTS[cfg.get("activation", "tanh")], ACTS[cfg.get("recurrent_activation", "sigmoid")]
    steps = range(x.shape[1] - 1, -1, -1) if cfg.get("go_backwards") else range(x.shape[1])
    h = c = None
    outputs = []
    for t in steps:
        z = conv_nd(x[:, t], kernel, strides, dilations, cfg.get("padding", "valid")) + bias
        if h is None:
            h = c = np.zeros(z.shape[:-1] + (FILTERS,))
        z = z + conv_nd(h, recurrent, (1,) * rank, (1,) * rank, "same")
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        c = rec(zf) * c + rec(zi) * act(zc)
        h = rec(zo) * act(c)
        outputs.append(h)
    y = np.stack(outputs, axis=1) if cfg.get("return_sequences") else h
    return [y, h, c] if cfg.get("return_state") else [y]


CASES = [
    ("ConvLSTM2D", (6, 5), {"kernel_size": 3, "padding": "same", "return_sequences": True}),
    ("ConvLSTM2D", (7, 6), {"kernel_size": [3, 2], "strides": 2, "go_backwards": True, "return_sequences": True,
                            "return_state": True}),
    ("ConvLSTM1D", (9,), {"kernel_size": 3, "dilation_rate": 2, "return_state": True}),
    ("ConvLSTM2D", (6, 5), {"kernel_size": 3, "data_format": "channels_first", "use_bias": False,
                            "activation": "relu", "recurrent_activation": "hard_sigmoid", "return_state": True}),
    ("ConvLSTM3D", (4, 5, 3), {"kernel_size": 2, "padding": "same", "strides": [1, 2, 1], "return_sequences": True}),
]


def _weights(rng: np.random.Generator, rank: int, cfg: dict[str, Any]) -> list[np.ndarray]:
    kernel = _tuple(cfg["kernel_size"], rank)
    arrays = [rng.normal(size=(*kernel, C, 4 * FILTERS)), rng.normal(size=(*kernel, FILTERS, 4 * FILTERS))]
    if cfg.get("use_bias", True):
        arrays.append(rng.normal(size=(4 * FILTERS,)))
    return [(0.4 * a).astype(np.float32) for a in arrays]


def _to_first(y: np.ndarray, sequence: bool) -> np.ndarray:
    """channels_last reference output -> channels_first (time stays at axis 1)."""
    lead = 2 if sequence else 1
    return np.moveaxis(y, -1, lead)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind, space, options", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_conv_lstm(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, kind: str,
                   space: tuple[int, ...], options: dict[str, Any]) -> None:
    rank = len(space)
    cfg = {"filters": FILTERS, **options}
    w = _weights(rng, rank, cfg)
    x = rng.normal(size=(batch, T, *space, C)).astype(np.float32)
    first = cfg.get("data_format") == "channels_first"
    x_in = np.moveaxis(x, -1, 2) if first else x
    sample = x_in.shape[1:]
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer(kind, "cl", **cfg)], sample),
                       {"cl": {"cell": w}}, keras_version="3.15.1")
    got = run_onnx(converter.convert(path), x_in)
    expected = keras_conv_lstm(cfg, rank, w, x)
    if first:
        expected = [_to_first(e, i == 0 and bool(cfg.get("return_sequences"))) for i, e in enumerate(expected)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_close(g, e.astype(np.float32))


def test_keras2_hard_sigmoid_and_initial_state(tmp_path: Path, rng: np.random.Generator) -> None:
    """Keras 2's hard_sigmoid is clip(0.2 x + 0.5); initial h, c come in as (batch, *space, filters)."""
    cfg = {"filters": FILTERS, "kernel_size": 3, "padding": "same", "recurrent_activation": "hard_sigmoid",
           "return_sequences": True}
    w = _weights(rng, 2, cfg)
    x = rng.normal(size=(3, T, 5, 4, C)).astype(np.float32)
    h0, c0 = (rng.normal(size=(3, 5, 4, FILTERS)).astype(np.float32) for _ in range(2))
    cl = layer("ConvLSTM2D", "cl", **cfg)
    cl["inbound_nodes"] = [{"args": [keras_tensor("x")], "kwargs": {"initial_state": [keras_tensor("h0"),
                                                                                        keras_tensor("c0")]}}]
    config = {"class_name": "Functional", "config": {
        "name": "f", "layers": [{**input_layer("x", (T, 5, 4, C)), "inbound_nodes": []},
                                {**input_layer("h0", (5, 4, FILTERS)), "inbound_nodes": []},
                                {**input_layer("c0", (5, 4, FILTERS)), "inbound_nodes": []}, cl],
        "input_layers": [["x", 0, 0], ["h0", 0, 0], ["c0", 0, 0]], "output_layers": [["cl", 0, 0]]}}
    path = save_keras(tmp_path / "m.keras", config, {"cl": {"cell": w}}, keras_version="2.15.0")
    (y,) = run_onnx(converter.convert(path), x, h0, c0)
    assert_close(y, _reference_from(cfg, w, x, h0, c0))


def _reference_from(cfg: dict[str, Any], w: list[np.ndarray], x: np.ndarray, h: np.ndarray,
                    c: np.ndarray) -> np.ndarray:
    hard = lambda v: np.clip(0.2 * v + 0.5, 0, 1)  # noqa: E731
    outputs = []
    for t in range(x.shape[1]):
        z = conv_nd(x[:, t], w[0], (1, 1), (1, 1), "same") + w[2] + conv_nd(h, w[1], (1, 1), (1, 1), "same")
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        c = hard(zf) * c + hard(zi) * np.tanh(zc)
        h = hard(zo) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1).astype(np.float32)


@pytest.mark.parametrize("opset", [13, 16])
def test_scan_at_other_opsets(tmp_path: Path, rng: np.random.Generator, opset: int) -> None:
    cfg = {"filters": FILTERS, "kernel_size": 2, "return_sequences": True}
    w = _weights(rng, 1, cfg)
    x = rng.normal(size=(2, T, 6, C)).astype(np.float32)
    path = save_keras(tmp_path / "m.keras", sequential([layer("ConvLSTM1D", "cl", **cfg)], (T, 6, C)),
                      {"cl": {"cell": w}})
    model = converter.convert(path, opset=opset)
    assert [n.op_type for n in model.graph.node].count("Scan") == 1
    (y,) = run_onnx(model, x)
    assert_close(y, keras_conv_lstm(cfg, 1, w, x)[0].astype(np.float32))


def test_axis_activation_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"filters": FILTERS, "kernel_size": 2, "activation": "softmax"}
    path = save_keras(tmp_path / "m.keras", sequential([layer("ConvLSTM1D", "cl", **cfg)], (T, 6, C)),
                      {"cl": {"cell": _weights(rng, 1, cfg)}})
    with pytest.raises(UnsupportedLayerError, match="activation='softmax'"):
        converter.convert(path)
