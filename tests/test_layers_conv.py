"""Convolutions (plain, grouped, depthwise, separable, transposed) in both layouts, against numpy."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError, WeightsError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME: ceil(n / s) outputs, the odd padding element at the end."""
    span = (k - 1) * d + 1
    total = max((-(-n // s) - 1) * s + span - n, 0)
    return total // 2, total - total // 2


def conv_reference(x: np.ndarray, kernel: np.ndarray, strides: tuple[int, ...], dilations: tuple[int, ...],
                   pads: list[tuple[int, int]], groups: int = 1) -> np.ndarray:
    """Direct channels_last convolution; kernel (k..., in / groups, out), Keras' group order."""
    rank = kernel.ndim - 2
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    ks, outs = kernel.shape[:rank], kernel.shape[-1]
    out_len = [(xp.shape[1 + i] - (ks[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(rank)]
    per_in, per_out = kernel.shape[-2], outs // groups
    y = np.zeros((x.shape[0], *out_len, outs), dtype=np.float64)
    for pos in itertools.product(*map(range, out_len)):
        window = tuple(slice(p * s, p * s + (k - 1) * d + 1, d) for p, s, k, d in zip(pos, strides, ks, dilations))
        patch = xp[(slice(None), *window)]
        for g in range(groups):
            part = patch[..., g * per_in:(g + 1) * per_in].reshape(x.shape[0], -1)
            w = kernel[..., g * per_out:(g + 1) * per_out].reshape(-1, per_out)
            y[(slice(None), *pos, slice(g * per_out, (g + 1) * per_out))] = part @ w
    return y.astype(np.float32)


def to_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def to_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def convert_and_run(tmp_path: Path, fmt: str, layers: list[dict[str, Any]], input_shape: tuple[int, ...],
                    weights: dict[str, list[np.ndarray]], x: np.ndarray) -> np.ndarray:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential(layers, input_shape), weights)
    (y,) = run_onnx(converter.convert(path), x)
    return y


def run_layer(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
              spatial: tuple[int, ...], channels: int, weights: list[np.ndarray],
              **config: Any) -> tuple[np.ndarray, ...]:
    """Convert one layer; returns (channels_last input, channels_last ONNX output)."""
    x = rng.normal(size=(batch, *spatial, channels)).astype(np.float32)
    first = data_format == "channels_first"
    shape = (channels, *spatial) if first else (*spatial, channels)
    cfg = layer(kind, "layer", data_format=data_format, **config)
    y = convert_and_run(tmp_path, fmt, [cfg], shape, {"layer": weights}, to_first(x) if first else x)
    return x, to_last(y) if first else y


CONV_CASES = [  # kind, spatial, kernel, strides, dilation, padding, groups
    ("Conv1D", (9,), (3,), (1,), (1,), "valid", 1),
    ("Conv1D", (9,), (3,), (2,), (1,), "same", 1),
    ("Conv1D", (10,), (4,), (2,), (1,), "same", 1),
    ("Conv1D", (9,), (3,), (1,), (2,), "causal", 1),
    ("Conv1D", (9,), (3,), (1,), (2,), "same", 2),
    ("Conv2D", (7, 8), (3, 3), (2, 2), (1, 1), "same", 1),
    ("Conv2D", (7, 8), (3, 2), (1, 1), (2, 1), "same", 1),
    ("Conv2D", (7, 8), (3, 2), (2, 1), (1, 1), "valid", 2),
    ("Conv3D", (5, 6, 4), (3, 2, 2), (2, 1, 2), (1, 1, 1), "same", 1),
    ("Conv3D", (5, 6, 4), (2, 3, 2), (1, 1, 1), (1, 2, 1), "valid", 1),
]


def conv_pads(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
              dilations: tuple[int, ...], padding: str) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "causal":
        return [((kernel[0] - 1) * dilations[0], 0)]
    return [same_pads(n, k, s, d) for n, k, s, d in zip(spatial, kernel, strides, dilations)]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind, spatial, kernel, strides, dilation, padding, groups", CONV_CASES)
def test_conv(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
              spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...], dilation: tuple[int, ...],
              padding: str, groups: int) -> None:
    channels, filters = 4, 6
    w = rng.normal(size=(*kernel, channels // groups, filters)).astype(np.float32)
    bias = rng.normal(size=filters).astype(np.float32)
    x, y = run_layer(tmp_path, rng, fmt, batch, data_format, kind, spatial, channels, [w, bias], filters=filters,
                     kernel_size=list(kernel), strides=list(strides), dilation_rate=list(dilation), padding=padding,
                     groups=groups, activation="relu", use_bias=True)
    expected = conv_reference(x, w, strides, dilation, conv_pads(spatial, kernel, strides, dilation, padding), groups)
    assert_close(y, np.maximum(expected + bias, 0))


def depthwise_as_grouped(kernel: np.ndarray) -> np.ndarray:
    """(k..., C, m) -> (k..., 1, C * m): output channel c * m + j reads input channel c only."""
    return kernel.reshape(*kernel.shape[:-2], 1, -1)


DEPTHWISE_CASES = [  # kind, spatial, kernel, strides, dilation, padding
    ("DepthwiseConv1D", (9,), (3,), (2,), (1,), "same"),
    ("DepthwiseConv1D", (9,), (3,), (1,), (2,), "valid"),
    ("DepthwiseConv2D", (7, 8), (3, 3), (2, 2), (1, 1), "same"),
    ("DepthwiseConv2D", (7, 8), (3, 2), (1, 1), (2, 1), "valid"),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind, spatial, kernel, strides, dilation, padding", DEPTHWISE_CASES)
def test_depthwise(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                   spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                   dilation: tuple[int, ...], padding: str) -> None:
    channels, multiplier = 3, 2
    w = rng.normal(size=(*kernel, channels, multiplier)).astype(np.float32)
    bias = rng.normal(size=channels * multiplier).astype(np.float32)
    x, y = run_layer(tmp_path, rng, fmt, batch, data_format, kind, spatial, channels, [w, bias],
                     kernel_size=list(kernel), strides=list(strides), dilation_rate=list(dilation), padding=padding,
                     depth_multiplier=multiplier, use_bias=True)
    pads = conv_pads(spatial, kernel, strides, dilation, padding)
    assert_close(y, conv_reference(x, depthwise_as_grouped(w), strides, dilation, pads, channels) + bias)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind, spatial, kernel, strides, dilation, padding", [
    ("SeparableConv1D", (9,), (3,), (2,), (1,), "same"),
    ("SeparableConv2D", (7, 8), (3, 3), (1, 1), (2, 2), "same"),
    ("SeparableConv2D", (7, 8), (2, 3), (2, 1), (1, 1), "valid"),
])
def test_separable(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                   spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                   dilation: tuple[int, ...], padding: str) -> None:
    channels, multiplier, filters = 3, 2, 5
    dw = rng.normal(size=(*kernel, channels, multiplier)).astype(np.float32)
    pw = rng.normal(size=(*([1] * len(kernel)), channels * multiplier, filters)).astype(np.float32)
    bias = rng.normal(size=filters).astype(np.float32)
    x, y = run_layer(tmp_path, rng, fmt, batch, data_format, kind, spatial, channels, [dw, pw, bias],
                     filters=filters, kernel_size=list(kernel), strides=list(strides), dilation_rate=list(dilation),
                     padding=padding, depth_multiplier=multiplier, use_bias=True, activation="tanh")
    pads = conv_pads(spatial, kernel, strides, dilation, padding)
    mid = conv_reference(x, depthwise_as_grouped(dw), strides, dilation, pads, channels)
    ones = (1,) * len(kernel)
    assert_close(y, np.tanh(conv_reference(mid, pw, ones, ones, [(0, 0)] * len(kernel)) + bias))


def transpose_reference(x: np.ndarray, kernel: np.ndarray, strides: tuple[int, ...], dilations: tuple[int, ...],
                        padding: str, output_padding: tuple[int, ...] | None) -> np.ndarray:
    """Scatter every input position through the (k..., out, in) kernel, then take Keras' output window."""
    rank = kernel.ndim - 2
    spans = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilations)]
    full_len = [(n - 1) * s + span for n, s, span in zip(x.shape[1:-1], strides, spans)]
    full = np.zeros((x.shape[0], *full_len, kernel.shape[-2]), dtype=np.float64)
    for pos in itertools.product(*map(range, x.shape[1:-1])):
        for tap in itertools.product(*map(range, kernel.shape[:rank])):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilations))
            full[(slice(None), *at)] += x[(slice(None), *pos)] @ kernel[tap].T
    window = []
    for i, (n, s, span) in enumerate(zip(x.shape[1:-1], strides, spans)):
        op = None if output_padding is None else output_padding[i]
        if padding == "valid":
            length = (n - 1) * s + span + (max(span, s) - span if op is None else op)
        else:
            length = n * s if op is None else (n - 1) * s + span % 2 + op
        start = max(full_len[i] - length, 0) // 2 if padding == "same" else 0  # TF's SAME for the forward conv
        window.append((start, length))
    grown = np.pad(full, [(0, 0), *[(0, max(a + n - f, 0)) for (a, n), f in zip(window, full_len)], (0, 0)])
    return grown[(slice(None), *[slice(a, a + n) for a, n in window])].astype(np.float32)


TRANSPOSE_CASES = [  # kind, spatial, kernel, strides, dilation, padding, output_padding
    ("Conv1DTranspose", (5,), (3,), (2,), (1,), "valid", None),
    ("Conv1DTranspose", (5,), (2,), (3,), (1,), "valid", None),
    ("Conv1DTranspose", (5,), (3,), (2,), (1,), "same", None),
    ("Conv2DTranspose", (4, 5), (3, 4), (2, 2), (1, 1), "same", None),
    ("Conv2DTranspose", (4, 5), (2, 2), (3, 3), (1, 1), "same", None),
    ("Conv2DTranspose", (4, 5), (3, 3), (2, 2), (1, 1), "same", (1, 0)),
    ("Conv2DTranspose", (4, 5), (3, 3), (2, 3), (1, 1), "valid", (1, 2)),
    ("Conv2DTranspose", (4, 5), (3, 3), (1, 1), (2, 2), "same", None),
    ("Conv3DTranspose", (3, 4, 2), (3, 2, 3), (2, 1, 2), (1, 1, 1), "same", None),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind, spatial, kernel, strides, dilation, padding, output_padding", TRANSPOSE_CASES)
def test_conv_transpose(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                        spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                        dilation: tuple[int, ...], padding: str, output_padding: tuple[int, ...] | None) -> None:
    channels, filters = 2, 3
    w = rng.normal(size=(*kernel, filters, channels)).astype(np.float32)
    bias = rng.normal(size=filters).astype(np.float32)
    x, y = run_layer(tmp_path, rng, fmt, batch, data_format, kind, spatial, channels, [w, bias], filters=filters,
                     kernel_size=list(kernel), strides=list(strides), dilation_rate=list(dilation), padding=padding,
                     output_padding=None if output_padding is None else list(output_padding), use_bias=True)
    assert_close(y, transpose_reference(x, w, strides, dilation, padding, output_padding) + bias)


def test_channels_last_stack_pays_two_transposes(tmp_path: Path, rng: np.random.Generator) -> None:
    """Conv -> softmax-activated Conv: Keras' softmax axis is the channels, physically axis 1 in ONNX."""
    w1, w2 = rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=(1, 1, 4, 3)).astype(np.float32)
    layers = [layer("Conv2D", "c1", filters=4, kernel_size=[3, 3], padding="same", use_bias=False),
              layer("Conv2D", "c2", filters=3, kernel_size=[1, 1], activation="softmax", use_bias=False)]
    path = save_keras(tmp_path / "m.keras", sequential(layers, (5, 6, 2)), {"c1": [w1], "c2": [w2]})
    model = converter.convert(path)
    x = rng.normal(size=(2, 5, 6, 2)).astype(np.float32)
    (y,) = run_onnx(model, x)
    logits = conv_reference(conv_reference(x, w1, (1, 1), (1, 1), [(1, 1), (1, 1)]), w2, (1, 1), (1, 1),
                            [(0, 0), (0, 0)])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    assert_close(y, e / e.sum(-1, keepdims=True))
    assert [n.op_type for n in model.graph.node].count("Transpose") == 2


def test_symbolic_spatial_dims_use_same_upper(tmp_path: Path, rng: np.random.Generator) -> None:
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    cfg = layer("Conv2D", "conv", filters=3, kernel_size=[3, 3], strides=[2, 2], padding="same", use_bias=False)
    path = save_keras(tmp_path / "m.keras", sequential([cfg], (None, None, 2)), {"conv": [w]})
    x = rng.normal(size=(1, 9, 6, 2)).astype(np.float32)
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, conv_reference(x, w, (2, 2), (1, 1), [same_pads(9, 3, 2, 1), same_pads(6, 3, 2, 1)]))


def test_wrong_kernel_shape_is_a_weights_error(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = layer("Conv2D", "conv", filters=3, kernel_size=[3, 3], use_bias=True)
    weights = {"conv": [rng.normal(size=(3, 3, 5, 3)).astype(np.float32), np.zeros(3, np.float32)]}
    with pytest.raises(WeightsError, match=r"conv.*kernel.*\(3, 3, 2, 3\)"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([cfg], (6, 6, 2)), weights))


@pytest.mark.parametrize("config, message", [
    ({"padding": "causal"}, "padding='causal'"),
    ({"activation": "no_such_activation"}, "no_such_activation"),
    ({"data_format": "channels_middle"}, "channels_middle"),
])
def test_unsupported_configs_are_refused(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    cfg = layer("Conv2D", "conv", **{"filters": 3, "kernel_size": [3, 3], "use_bias": False, **config})
    path = save_keras(tmp_path / "m.keras", sequential([cfg], (6, 6, 2)), {"conv": [np.zeros((3, 3, 2, 3))]})
    with pytest.raises(UnsupportedLayerError, match=message):
        converter.convert(path)


def test_only_conv1d_reads_a_sequence() -> None:
    """Conv1D's `input_dim`/`input_length` shorthand spells (batch, steps, features): its handler says so."""
    from converter.layers.registry import LAYERS

    readers = {name for name in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "SeparableConv1D", "Conv1DTranspose")
               if LAYERS.get(name).consumes_sequence}  # type: ignore[union-attr]
    assert readers == {"Conv1D"}
