"""Flatten, Reshape, Permute, RepeatVector, from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _run(tmp_path: Path, fmt: str, layers: list[dict], input_shape: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential(layers, input_shape), {})
    (y,) = run_onnx(converter.convert(path), x)
    return y


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("data_format, shape", [
    ("channels_last", (2, 3, 4)), ("channels_first", (2, 3, 4)), ("channels_first", (5, 3)),
    ("channels_last", (6,)), ("channels_first", (2, 1, 3, 2)),
])
def test_flatten(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, data_format: str,
                 shape: tuple[int, ...]) -> None:
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = _run(tmp_path, fmt, [layer("Flatten", "flat", data_format=data_format)], shape, x)
    # keras/src/layers/reshaping/flatten.py: channels_first moves the channel axis last first.
    moved = x.transpose(0, *range(2, x.ndim), 1) if data_format == "channels_first" else x
    assert_close(y, moved.reshape(batch, -1))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("target", [(6, 4), (-1, 4), (2, -1, 3), (24,), (4, 3, 2, 1)])
def test_reshape(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, target: tuple[int, ...]) -> None:
    x = rng.normal(size=(batch, 2, 3, 4)).astype("float32")
    y = _run(tmp_path, fmt, [layer("Reshape", "reshape", target_shape=list(target))], (2, 3, 4), x)
    assert_close(y, x.reshape(batch, *target))


def test_reshape_keeps_the_batch_dynamic(tmp_path: Path) -> None:
    model = converter.convert(save_keras(tmp_path / "m.keras", sequential(
        [layer("Reshape", "reshape", target_shape=[-1, 2])], (4,)), {}))
    (shape_const,) = [t for t in model.graph.initializer if "reshape" in t.name]
    assert list(np.frombuffer(shape_const.raw_data, dtype=np.int64)) == [0, -1, 2]
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 2


@pytest.mark.parametrize("target", [(5, 5), (7, -1)])
def test_reshape_rejects_sizes_that_do_not_fit(tmp_path: Path, target: tuple[int, ...]) -> None:
    config = sequential([layer("Reshape", "bad", target_shape=list(target))], (4, 6))
    path = save_keras(tmp_path / "m.keras", config, {})
    with pytest.raises(ShapeError, match="Reshape 'bad'"):
        converter.convert(path)


def test_reshape_rejects_two_unknown_dims(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("Reshape", "bad", target_shape=[-1, -1])], (4, 6)), {})
    with pytest.raises(UnsupportedLayerError, match="at most one -1"):
        converter.convert(path)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dims", [(2, 1), (1, 2, 3), (3, 1, 2), (2, 3, 1)])
def test_permute(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, dims: tuple[int, ...]) -> None:
    shape = (2, 3, 4)[:len(dims)]
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = _run(tmp_path, fmt, [layer("Permute", "permute", dims=list(dims))], shape, x)
    assert_close(y, x.transpose(0, *dims))


def test_permute_rejects_a_non_permutation(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("Permute", "perm", dims=[1, 1])], (2, 3)), {})
    with pytest.raises(ShapeError, match="not a permutation"):
        converter.convert(path)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_repeat_vector(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    x = rng.normal(size=(batch, 5)).astype("float32")
    y = _run(tmp_path, fmt, [layer("RepeatVector", "repeat", n=4)], (5,), x)
    assert_close(y, np.repeat(x[:, None, :], 4, axis=1))


def test_repeat_vector_needs_rank_2(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("RepeatVector", "rep", n=2)], (3, 5)), {})
    with pytest.raises(ShapeError, match="expects a 2-D input"):
        converter.convert(path)
