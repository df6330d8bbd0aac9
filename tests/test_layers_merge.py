"""Merge layers (elementwise, Concatenate, Dot), from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import ShapeError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}

ELEMENTWISE = {
    "Add": lambda xs: sum(xs[1:], xs[0]),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(np.broadcast_arrays(*xs), axis=0),
    "Average": lambda xs: sum(xs[1:], xs[0]) / len(xs),
    "Maximum": lambda xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
    "Minimum": lambda xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
}


def _merge_model(kind: str, shapes: list[tuple[int, ...]], **config: Any) -> dict[str, Any]:
    names = [f"in{i}" for i in range(len(shapes))]
    entries = [(input_layer(n, s), []) for n, s in zip(names, shapes)]
    entries.append((layer(kind, "merge", **config), names))
    return functional(entries, names, ["merge"])


def _run(tmp_path: Path, fmt: str, config: dict[str, Any], xs: list[np.ndarray]) -> np.ndarray:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {})
    (y,) = run_onnx(converter.convert(path), *xs)
    return y


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shapes", [[(4,), (4,)], [(2, 3), (2, 3), (2, 3)], [(2, 3, 4), (2, 1, 4)]])
def test_elementwise(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, kind: str,
                     shapes: list[tuple[int, ...]]) -> None:
    shapes = shapes[:2] if kind == "Subtract" else shapes
    xs = [rng.normal(size=(batch, *s)).astype("float32") for s in shapes]
    y = _run(tmp_path, fmt, _merge_model(kind, shapes), xs)
    assert_close(y, ELEMENTWISE[kind](xs).astype("float32"))


@pytest.mark.parametrize("kind", ["Add", "Maximum"])
def test_elementwise_aligns_lower_rank_inputs_at_axis_1(tmp_path: Path, rng: np.random.Generator, kind: str) -> None:
    # keras base_merge.py: a lower-rank input gets size-1 axes inserted at axis 1.
    xs = [rng.normal(size=(2, 3, 4, 5)).astype("float32"), rng.normal(size=(2, 5)).astype("float32")]
    y = _run(tmp_path, "keras", _merge_model(kind, [(3, 4, 5), (5,)]), xs)
    assert_close(y, ELEMENTWISE[kind]([xs[0], xs[1][:, None, None, :]]))


def test_subtract_refuses_three_inputs(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", _merge_model("Subtract", [(2,), (2,), (2,)]), {})
    with pytest.raises(UnsupportedLayerError, match="exactly 2"):
        converter.convert(path)


def test_add_rejects_shapes_that_do_not_broadcast(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", _merge_model("Add", [(3,), (4,)]), {})
    with pytest.raises(ShapeError, match="Add 'merge'"):
        converter.convert(path)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("axis, shapes", [
    (-1, [(2, 3), (2, 5)]), (1, [(2, 3), (4, 3), (1, 3)]), (-3, [(2, 3, 4), (5, 3, 4)]), (-2, [(2, 3, 4), (2, 1, 4)]),
    (2, [(2, 3, 4), (2, 1, 4)]), (1, [(3,), (4,)]),
])
def test_concatenate(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, axis: int,
                     shapes: list[tuple[int, ...]]) -> None:
    xs = [rng.normal(size=(batch, *s)).astype("float32") for s in shapes]
    y = _run(tmp_path, fmt, _merge_model("Concatenate", shapes, axis=axis), xs)
    assert_close(y, np.concatenate(xs, axis=axis))


@pytest.mark.parametrize("axis, shapes, message", [
    (0, [(2,), (2,)], "batch axis"), (-2, [(2, 3, 4), (5, 3, 4)], "differ on axis 1"),
])
def test_concatenate_rejects_bad_axes(tmp_path: Path, axis: int, shapes: list[tuple[int, ...]], message: str) -> None:
    path = save_keras(tmp_path / "m.keras", _merge_model("Concatenate", shapes, axis=axis), {})
    with pytest.raises(ShapeError, match=message):
        converter.convert(path)


def _batch_dot(x: np.ndarray, y: np.ndarray, ax: int, ay: int) -> np.ndarray:
    """keras batch_dot: x's axes but ax, then y's axes but 0 and ay; rank 1 results become (batch, 1)."""
    out = np.stack([np.tensordot(x[i], y[i], axes=(ax - 1, ay - 1)) for i in range(len(x))])
    return out.reshape(len(x), 1) if out.ndim == 1 else out


def _l2(x: np.ndarray, axis: int) -> np.ndarray:
    return x / np.sqrt(np.sum(x * x, axis=axis, keepdims=True))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("axes, shapes, pair", [
    (1, [(5,), (5,)], (1, 1)), (-1, [(5,), (5,)], (1, 1)),
    ([1, 2], [(5,), (3, 5)], (1, 2)), ([2, 1], [(3, 5), (5,)], (2, 1)),
    (2, [(3, 4), (6, 4)], (2, 2)), ([1, 2], [(3, 4), (2, 3)], (1, 2)), (-1, [(3, 4), (4,)], (2, 1)),
    ([2, 1], [(3, 4), (4, 6)], (2, 1)), ([3, 1], [(2, 3, 4), (4, 5)], (3, 1)),
])
def test_dot(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, normalize: bool, axes: Any,
             shapes: list[tuple[int, ...]], pair: tuple[int, int]) -> None:
    xs = [rng.normal(size=(batch, *s)).astype("float32") for s in shapes]
    y = _run(tmp_path, fmt, _merge_model("Dot", shapes, axes=axes, normalize=normalize), xs)
    a, b = (_l2(xs[0], pair[0]), _l2(xs[1], pair[1])) if normalize else xs
    assert_close(y, _batch_dot(a, b, *pair).astype("float32"))


def test_dot_normalize_keeps_zero_vectors_finite(tmp_path: Path) -> None:
    xs = [np.zeros((2, 3), "float32"), np.ones((2, 3), "float32")]
    y = _run(tmp_path, "keras", _merge_model("Dot", [(3,), (3,)], axes=1, normalize=True), xs)
    assert_close(y, np.zeros((2, 1), "float32"))


@pytest.mark.parametrize("axes, message", [(0, "batch axis"), ([1, 1], "has size 3")])
def test_dot_rejects_bad_axes(tmp_path: Path, axes: Any, message: str) -> None:
    path = save_keras(tmp_path / "m.keras", _merge_model("Dot", [(3,), (4,)], axes=axes), {})
    with pytest.raises(ShapeError, match=message):
        converter.convert(path)
