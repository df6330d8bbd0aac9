"""CategoryEncoding, Discretization, IntegerLookup, AutoContrast and the image identities, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _one_hot(ids: np.ndarray, depth: int) -> np.ndarray:
    return (ids[..., None] == np.arange(depth)).astype("float32")


def _encode(ids: np.ndarray, mode: str, depth: int) -> np.ndarray:
    hot = _one_hot(ids, depth)
    return {"one_hot": hot, "multi_hot": hot.max(axis=1), "count": hot.sum(axis=1)}[mode]


def _convert(tmp_path: Path, fmt: str, cfg: dict[str, Any], shape: tuple[int, ...], dtype: str) -> Any:
    config = sequential([cfg], None)
    config["config"]["layers"].insert(0, layer("InputLayer", "in", batch_shape=[None, *shape], dtype=dtype))
    return converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, {}))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("mode, shape", [("multi_hot", (4,)), ("count", (4,)), ("one_hot", (1,)), ("one_hot", ()),
                                         ("one_hot", (3,))])
@pytest.mark.parametrize("batch", [1, 3])
def test_category_encoding(tmp_path: Path, rng: np.random.Generator, fmt: str, mode: str, shape: tuple[int, ...],
                           batch: int) -> None:
    model = _convert(tmp_path, fmt, layer("CategoryEncoding", "enc", num_tokens=6, output_mode=mode), shape, "int64")
    ids = rng.integers(0, 8, size=(batch, *shape)).astype("int64")  # 6 and 7 are outside: ignored
    (y,) = run_onnx(model, ids)
    squeezed = ids[..., 0] if shape == (1,) else ids
    assert_close(y, _encode(squeezed, mode, 6))


def test_category_encoding_refuses_rank_1_counts(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLayerError, match="rank-1 input"):
        _convert(tmp_path, "keras", layer("CategoryEncoding", "enc", num_tokens=6, output_mode="count"), (), "int64")


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("mode, dtype", [("int", "int32"), ("int", "int64"), ("one_hot", None), ("count", None)])
@pytest.mark.parametrize("batch", [1, 3])
def test_discretization(tmp_path: Path, rng: np.random.Generator, fmt: str, mode: str, dtype: Any,
                        batch: int) -> None:
    bounds = [-1.0, 0.0, 0.5]
    cfg = layer("Discretization", "disc", bin_boundaries=bounds, output_mode=mode, dtype=dtype)
    model = _convert(tmp_path, fmt, cfg, (5,), "float32")
    x = np.concatenate([rng.normal(size=(batch, 3)), np.tile([[0.0, 0.5]], (batch, 1))], axis=1).astype("float32")
    (y,) = run_onnx(model, x)
    index = np.searchsorted(np.asarray(bounds, "float32"), x, side="right")
    if mode == "int":
        assert y.dtype == np.dtype(dtype) and np.array_equal(y, index)
    else:
        assert_close(y, _encode(index, mode, 4))


def _lookup(x: np.ndarray, vocab: list[int], mask: Any, oov: int, mode: str) -> np.ndarray:
    oov_start = 1 if mask is not None and mode == "int" else 0
    table = {t: oov_start + oov + i for i, t in enumerate(vocab)}
    out = np.vectorize(lambda v: table.get(v, oov_start + (v % oov)))(x)
    if mask is not None:
        out = np.where(x == mask, 0 if mode == "int" else -1, out)
    return out


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("mask, oov, mode", [(None, 1, "int"), (0, 2, "int"), (0, 1, "multi_hot"), (None, 3, "count"),
                                             (None, 1, "one_hot")])
@pytest.mark.parametrize("batch", [1, 3])
def test_integer_lookup(tmp_path: Path, rng: np.random.Generator, fmt: str, mask: Any, oov: int, mode: str,
                        batch: int) -> None:
    vocab = [7, 3, 12, 5]
    stored = ([] if mask is None else [mask]) * (mode == "int") + [-1] * oov + vocab  # special tokens are stripped
    cfg = layer("IntegerLookup", "lookup", vocabulary=stored if oov == 2 else vocab, mask_token=mask,
                num_oov_indices=oov, output_mode=mode, oov_token=-1, vocabulary_dtype="int64")
    shape = (1,) if mode == "one_hot" else (6,)
    model = _convert(tmp_path, fmt, cfg, shape, "int64")
    x = rng.choice([0, 7, 3, 12, 5, 4, 9, -3], size=(batch, *shape)).astype("int64")
    (y,) = run_onnx(model, x)
    index = _lookup(x, vocab, mask, oov, mode)
    depth = len(vocab) + oov + (1 if mask is not None and mode == "int" else 0)
    if mode == "int":
        assert np.array_equal(y, index)
    else:
        assert_close(y.astype("float32"), _encode(index[..., 0] if mode == "one_hot" else index, mode, depth))


def test_integer_lookup_vocabulary_in_assets_is_refused(tmp_path: Path) -> None:
    cfg = layer("IntegerLookup", "lookup", vocabulary=None, vocabulary_size=5)
    with pytest.raises(UnsupportedLayerError, match="assets"):
        _convert(tmp_path, "keras", cfg, (3,), "int64")


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("value_range", [[0, 255], [-1, 1]])
@pytest.mark.parametrize("batch", [1, 3])
def test_auto_contrast(tmp_path: Path, rng: np.random.Generator, fmt: str, value_range: list[int],
                       batch: int) -> None:
    model = _convert(tmp_path, fmt, layer("AutoContrast", "ac", value_range=value_range), (4, 5, 3), "float32")
    lo, hi = value_range
    x = rng.uniform(lo, hi, size=(batch, 4, 5, 3)).astype("float32")
    x[0, :, :, 1] = 0.25  # a constant channel: Keras keeps the input there (NaN from 0/0)
    (y,) = run_onnx(model, x)
    unit = (x - lo) / (hi - lo) * 255.0
    low, high = unit.min(axis=(1, 2), keepdims=True), unit.max(axis=(1, 2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 255.0 / (high - low)
        stretched = np.clip(unit * scale - low * scale, 0, 255) / 255.0 * (hi - lo) + lo
    assert_close(y, np.where(np.isnan(stretched), x, stretched).astype("float32"))


@pytest.mark.parametrize("kind", ["Equalization", "Solarization", "MaxNumBoundingBoxes"])
def test_image_identities(tmp_path: Path, rng: np.random.Generator, kind: str) -> None:
    model = _convert(tmp_path, "keras", layer(kind, "img"), (4, 5, 3), "float32")
    x = rng.uniform(0, 255, size=(2, 4, 5, 3)).astype("float32")
    (y,) = run_onnx(model, x)
    assert_close(y, x)
    assert len(model.graph.node) <= 1  # at most the output's Identity
