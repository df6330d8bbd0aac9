"""Max/Average pooling (valid and same) and global pooling, both layouts, against numpy."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def pool_reference(x: np.ndarray, size: tuple[int, ...], strides: tuple[int, ...], padding: str,
                   reduce: Any) -> np.ndarray:
    """Channels_last pooling; 'same' pads with NaN so the window reduces over real elements only."""
    spatial = x.shape[1:-1]
    if padding == "same":
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        totals = [max((o - 1) * s + k - n, 0) for o, s, k, n in zip(out, strides, size, spatial)]
        x = np.pad(x, [(0, 0), *[(t // 2, t - t // 2) for t in totals], (0, 0)], constant_values=np.nan)
    else:
        out = [(n - k) // s + 1 for n, k, s in zip(spatial, size, strides)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]), dtype=np.float32)
    axes = tuple(range(1, len(size) + 1))
    for pos in itertools.product(*map(range, out)):
        window = x[(slice(None), *[slice(p * s, p * s + k) for p, s, k in zip(pos, strides, size)])]
        y[(slice(None), *pos)] = reduce(window, axis=axes)
    return y


def run_layer(tmp_path: Path, fmt: str, x: np.ndarray, data_format: str, kind: str, **config: Any) -> np.ndarray:
    """Convert one layer given channels_last data; returns the channels_last result."""
    first = data_format == "channels_first"
    feed = np.moveaxis(x, -1, 1) if first else x
    cfg = layer(kind, "pool", data_format=data_format, **config)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([cfg], feed.shape[1:]), {})
    (y,) = run_onnx(converter.convert(path), feed)
    return np.moveaxis(y, 1, -1) if first and y.ndim > 2 else y


POOL_CASES = [  # kind, spatial, pool_size, strides, padding
    ("MaxPooling1D", (9,), (3,), (2,), "same"),
    ("MaxPooling1D", (9,), (2,), None, "valid"),
    ("AveragePooling1D", (9,), (3,), (2,), "same"),
    ("AveragePooling1D", (10,), (4,), (3,), "valid"),
    ("MaxPooling2D", (7, 8), (3, 3), (2, 2), "same"),
    ("MaxPooling2D", (7, 8), (2, 2), None, "valid"),
    ("AveragePooling2D", (7, 8), (3, 2), (2, 2), "same"),
    ("AveragePooling2D", (7, 8), (2, 3), (1, 2), "valid"),
    ("MaxPooling3D", (5, 4, 6), (2, 2, 3), (2, 1, 2), "same"),
    ("AveragePooling3D", (5, 4, 6), (3, 3, 2), (2, 2, 2), "same"),
    ("AveragePooling3D", (5, 4, 6), (2, 2, 2), None, "valid"),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind, spatial, size, strides, padding", POOL_CASES)
def test_pooling(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str, kind: str,
                 spatial: tuple[int, ...], size: tuple[int, ...], strides: tuple[int, ...] | None,
                 padding: str) -> None:
    x = rng.normal(size=(batch, *spatial, 3)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, kind, pool_size=list(size),
                  strides=None if strides is None else list(strides), padding=padding)
    reduce = np.nanmax if kind.startswith("Max") else np.nanmean
    assert_close(y, pool_reference(x, size, size if strides is None else strides, padding, reduce))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("kind, spatial", [
    ("GlobalMaxPooling1D", (7,)), ("GlobalAveragePooling1D", (7,)),
    ("GlobalMaxPooling2D", (5, 6)), ("GlobalAveragePooling2D", (5, 6)),
    ("GlobalMaxPooling3D", (3, 4, 2)), ("GlobalAveragePooling3D", (3, 4, 2)),
])
def test_global_pooling(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str,
                        keepdims: bool, kind: str, spatial: tuple[int, ...]) -> None:
    x = rng.normal(size=(batch, *spatial, 4)).astype(np.float32)
    y = run_layer(tmp_path, fmt, x, data_format, kind, keepdims=keepdims)
    axes = tuple(range(1, len(spatial) + 1))
    expected = (np.max if "Max" in kind else np.mean)(x, axis=axes, keepdims=keepdims)
    assert_close(y, expected)


def test_conv_then_global_pool_needs_one_transpose(tmp_path: Path, rng: np.random.Generator) -> None:
    """Conv2D -> GlobalAveragePooling2D stays channels-first: one Transpose at the input, none after."""
    w = rng.normal(size=(1, 1, 3, 4)).astype(np.float32)
    layers = [layer("Conv2D", "conv", filters=4, kernel_size=[1, 1], use_bias=False),
              layer("GlobalAveragePooling2D", "gap")]
    model = converter.convert(save_keras(tmp_path / "m.keras", sequential(layers, (5, 6, 3)), {"conv": [w]}))
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    (y,) = run_onnx(model, x)
    assert_close(y, (x @ w[0, 0]).mean(axis=(1, 2)))
    assert [n.op_type for n in model.graph.node].count("Transpose") == 1


def test_global_average_pooling1d_with_mask(tmp_path: Path, rng: np.random.Generator) -> None:
    """GlobalAveragePooling1D(x, mask=m) averages over the kept steps only (a Keras 3 call kwarg)."""
    config = functional([
        (input_layer("x", (6, 3)), []), (input_layer("m", (6,), dtype="bool"), []),
        (layer("GlobalAveragePooling1D", "gap"), ["x"]),
    ], inputs=["x", "m"], outputs=["gap"])
    gap = config["config"]["layers"][2]
    gap["inbound_nodes"][0]["kwargs"] = {"mask": {"class_name": "__keras_tensor__", "config": {
        "shape": [None, 6], "dtype": "bool", "keras_history": ["m", 0, 0]}}}
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]], dtype=bool)
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x, mask)
    assert_close(y, (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))


@pytest.mark.parametrize("config, message", [
    ({"padding": "causal"}, "padding='causal'"),
    ({"pool_size": [2, 2, 2]}, "pool_size"),
])
def test_unsupported_pooling_configs(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    cfg = layer("MaxPooling2D", "pool", **config)
    with pytest.raises(UnsupportedLayerError, match=message):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([cfg], (6, 6, 2)), {}))


@pytest.mark.parametrize("fmt", SAVERS)
def test_embedding_mask_is_averaged_over(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    """Embedding(mask_zero=True) -> GlobalAveragePooling1D: Keras' implicit mask drops the padding steps."""
    table = rng.normal(size=(6, 3)).astype(np.float32)
    layers = [layer("Embedding", "emb", input_dim=6, output_dim=3, mask_zero=True),
              layer("GlobalAveragePooling1D", "gap")]
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential(layers, (5,)), {"emb": [table]})
    ids = np.array([[1, 2, 0, 0, 3], [4, 0, 0, 0, 0]], dtype=np.float32)
    (y,) = run_onnx(converter.convert(path), ids)
    kept = ids != 0
    assert_close(y, (table[ids.astype(int)] * kept[..., None]).sum(1) / kept.sum(1, keepdims=True))
