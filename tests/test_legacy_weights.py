"""Keras 1 weight layouts (per-gate RNN arrays, running_std, 'th' kernels, Theano flipping) against
numpy references written from Keras 1.2's own formulas; no installed Keras can load these files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from k1models import k1layer, k1sequential, save_keras1_h5
from kmodels import run_onnx

import converter
from converter.ir import Node
from converter.keras.legacy_weights import (
    CONV_KINDS,
    WeightOrigin,
    flip_spatial,
    kernel_rank,
    merge_gates,
    upgrade_weights,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(0.2 * x + 0.5, 0, 1)  # Keras 1's slope


def _gate_arrays(rng: np.random.Generator, gates: str, features: int, units: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for g in gates:
        out += [(f"W_{g}", rng.normal(size=(features, units)).astype("float32") * 0.5),
                (f"U_{g}", rng.normal(size=(units, units)).astype("float32") * 0.5),
                (f"b_{g}", rng.normal(size=units).astype("float32") * 0.1)]
    return out


def _keras1_lstm(x: np.ndarray, w: dict[str, np.ndarray], units: int) -> np.ndarray:
    """Keras 1.2 LSTM.step with inner_activation='hard_sigmoid', activation='tanh'."""
    h = np.zeros((x.shape[0], units), "float32")
    c = np.zeros_like(h)
    for t in range(x.shape[1]):
        xt = x[:, t]
        i = _hard_sigmoid(xt @ w["W_i"] + h @ w["U_i"] + w["b_i"])
        f = _hard_sigmoid(xt @ w["W_f"] + h @ w["U_f"] + w["b_f"])
        c = f * c + i * np.tanh(xt @ w["W_c"] + h @ w["U_c"] + w["b_c"])
        o = _hard_sigmoid(xt @ w["W_o"] + h @ w["U_o"] + w["b_o"])
        h = o * np.tanh(c)
    return h


def _keras1_gru(x: np.ndarray, w: dict[str, np.ndarray], units: int) -> np.ndarray:
    """Keras 1.2 GRU.step: the reset gate multiplies h before U_h (Keras 2's reset_after=False)."""
    h = np.zeros((x.shape[0], units), "float32")
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = _sigmoid(xt @ w["W_z"] + h @ w["U_z"] + w["b_z"])
        r = _sigmoid(xt @ w["W_r"] + h @ w["U_r"] + w["b_r"])
        hh = np.tanh(xt @ w["W_h"] + (r * h) @ w["U_h"] + w["b_h"])
        h = z * h + (1 - z) * hh
    return h


@pytest.mark.parametrize("batch", [1, 3])
def test_keras1_lstm_per_gate_weights(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    arrays = _gate_arrays(rng, "icfo", 3, 4)  # Keras 1 stores the gates as i, c, f, o
    lstm = k1layer("LSTM", "lstm_1", output_dim=4, inner_activation="hard_sigmoid", activation="tanh",
                   consume_less="cpu", input_dim=3, input_length=5, batch_input_shape=[None, 5, 3],
                   return_sequences=False, go_backwards=False, stateful=False, unroll=False,
                   dropout_W=0.0, dropout_U=0.0, init="glorot_uniform", inner_init="orthogonal",
                   forget_bias_init="one")
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([lstm]), {"lstm_1": arrays})
    x = rng.normal(size=(batch, 5, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, _keras1_lstm(x, dict(arrays), 4))


@pytest.mark.parametrize("batch", [1, 3])
def test_keras1_gru_per_gate_weights(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    arrays = _gate_arrays(rng, "zrh", 3, 4)
    gru = k1layer("GRU", "gru_1", output_dim=4, inner_activation="sigmoid", activation="tanh",
                  consume_less="gpu", input_dim=3, input_length=6, return_sequences=False)
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([gru]), {"gru_1": arrays})
    x = rng.normal(size=(batch, 6, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, _keras1_gru(x, dict(arrays), 4))


@pytest.mark.parametrize("keras_version, stored", [("1.2.2", "variance"), ("1.0.4", "std")])
def test_keras1_batchnorm_running_std(tmp_path: Path, rng: np.random.Generator, keras_version: str,
                                      stored: str) -> None:
    gamma, beta = rng.normal(size=4).astype("float32"), rng.normal(size=4).astype("float32")
    mean, slot = rng.normal(size=4).astype("float32"), rng.uniform(0.5, 2.0, size=4).astype("float32")
    bn = k1layer("BatchNormalization", "bn_1", mode=0, axis=-1, epsilon=1e-3, momentum=0.99,
                 batch_input_shape=[None, 4])
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([bn]),
                          {"bn_1": [("gamma", gamma), ("beta", beta), ("running_mean", mean), ("running_std", slot)]},
                          keras_version=keras_version)
    x = rng.normal(size=(3, 4)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    # 1.1+: the slot holds the variance, y = g (x - m) / sqrt(var + eps) + b (K.batch_normalization);
    # 1.0.0-1.0.5: it holds the std and Keras divided by (std + eps).
    denominator = np.sqrt(slot + 1e-3) if stored == "variance" else slot + 1e-3
    assert_close(y, gamma * (x - mean) / denominator + beta)


@pytest.mark.parametrize("mode", [1])  # mode=2 converts: tests/test_keras1_batchnorm_mode2.py
def test_keras1_batchnorm_batch_statistics_modes_are_refused(tmp_path: Path, mode: int) -> None:
    bn = k1layer("BatchNormalization", "bn_1", mode=mode, axis=-1, epsilon=1e-3, batch_input_shape=[None, 4])
    ones = np.ones(4, "float32")
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([bn]),
                          {"bn_1": [("gamma", ones), ("beta", ones), ("running_mean", ones), ("running_std", ones)]})
    with pytest.raises(converter.errors.UnsupportedLayerError, match=rf"'bn_1'.*mode={mode}"):
        converter.convert(path)


def _correlate2d_nchw(x: np.ndarray, kernel_hwio: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """TensorFlow-style cross-correlation, 'valid' padding, stride 1, NCHW in and out."""
    kh, kw, _, filters = kernel_hwio.shape
    n, _, h, w = x.shape
    out = np.zeros((n, filters, h - kh + 1, w - kw + 1), "float32")
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            out[:, :, i, j] = np.einsum("nchw,hwcf->nf", x[:, :, i:i + kh, j:j + kw], kernel_hwio)
    return out + bias[None, :, None, None]


@pytest.mark.parametrize("backend", [None, "theano"])
@pytest.mark.parametrize("batch", [1, 3])
def test_keras1_th_conv2d_kernel(tmp_path: Path, rng: np.random.Generator, backend: str | None, batch: int) -> None:
    """'th' kernels are stored (filters, in, rows, cols); a Theano file holds them flipped (true convolution)."""
    kernel_oihw = rng.normal(size=(4, 2, 3, 2)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    conv = k1layer("Convolution2D", "convolution2d_1", nb_filter=4, nb_row=3, nb_col=2, border_mode="valid",
                   subsample=[1, 1], dim_ordering="th", activation="linear", bias=True, init="glorot_uniform",
                   batch_input_shape=[None, 2, 6, 5])
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([conv]),
                          {"convolution2d_1": [("W", kernel_oihw), ("b", bias)]})
    x = rng.normal(size=(batch, 2, 6, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(path, backend=backend), x)
    hwio = np.transpose(kernel_oihw, (2, 3, 1, 0))
    if backend == "theano":
        hwio = hwio[::-1, ::-1]  # Theano convolved: correlating with the flipped kernel is the same
    assert_close(y, _correlate2d_nchw(x, hwio, bias))


@pytest.mark.parametrize("layout", ["keras1.2", "keras1.1"])
def test_keras1_conv1d_4d_kernel(tmp_path: Path, rng: np.random.Generator, layout: str) -> None:
    kernel = rng.normal(size=(3, 2, 4)).astype("float32")  # (length, in, filters)
    stored = kernel[:, None] if layout == "keras1.2" else np.transpose(kernel[:, None], (3, 2, 0, 1))
    bias = rng.normal(size=4).astype("float32")
    conv = k1layer("Convolution1D", "convolution1d_1", nb_filter=4, filter_length=3, border_mode="valid",
                   subsample_length=1, activation="relu", bias=True, input_dim=2, input_length=7)
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([conv]), {"convolution1d_1": [("W", stored), ("b", bias)]})
    x = rng.normal(size=(2, 7, 2)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    expected = np.stack([np.einsum("nkc,kcf->nf", x[:, t:t + 3], kernel) for t in range(5)], axis=1) + bias
    assert_close(y, np.maximum(expected, 0))


def test_merge_gates_orders_lstm_as_ifco() -> None:
    arrays = [np.full((1, 1), 10 * gate + part, "float32") for gate in range(4) for part in range(3)]
    kernel, recurrent, bias = merge_gates(arrays, (0, 2, 1, 3))
    assert kernel.ravel().tolist() == [0, 20, 10, 30]  # stored i, c, f, o -> i, f, c, o
    assert recurrent.ravel().tolist() == [1, 21, 11, 31]
    assert bias.ravel().tolist() == [2, 22, 12, 32]


def test_bidirectional_forward_backward_arrays_are_upgraded_separately(rng: np.random.Generator) -> None:
    forward = [a for _, a in _gate_arrays(rng, "icfo", 2, 3)]
    backward = [a for _, a in _gate_arrays(rng, "icfo", 2, 3)]
    node = Node("Bidirectional", "bidirectional_1", children=[Node("LSTM", "lstm_1")])
    out = upgrade_weights(node, forward + backward, WeightOrigin("1.2.2", keras1=True))
    assert len(out) == 6
    np.testing.assert_array_equal(out[0], np.concatenate([forward[0], forward[6], forward[3], forward[9]], -1))
    np.testing.assert_array_equal(out[5], np.concatenate([backward[2], backward[8], backward[5], backward[11]], -1))


def test_time_distributed_inner_layer_arrays(rng: np.random.Generator) -> None:
    arrays = [a for _, a in _gate_arrays(rng, "zrh", 2, 3)]
    node = Node("TimeDistributed", "td", children=[Node("GRU", "gru")])
    out = upgrade_weights(node, arrays, WeightOrigin("1.2.2", keras1=True))
    np.testing.assert_array_equal(out[1], np.concatenate([arrays[1], arrays[4], arrays[7]], -1))


def test_flip_spatial_reverses_only_spatial_axes() -> None:
    kernel = np.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2)
    np.testing.assert_array_equal(flip_spatial(kernel), kernel[::-1, ::-1, :, :])


def test_legacy_kernel_ranks_are_the_handlers_traits() -> None:
    kinds = ("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "ConvLSTM2D")
    assert [kernel_rank(k) for k in kinds] == [3, 4, 5, 4, 4]
    assert kernel_rank("Conv1DTranspose") is None and kernel_rank("ConvLSTM1D") is None and kernel_rank("Dense") is None
    assert "Conv2DTranspose" in CONV_KINDS and "DepthwiseConv2D" not in CONV_KINDS

