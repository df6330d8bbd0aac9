"""AdaptiveAverage/MaxPooling1D/2D/3D from both writers, against a numpy reference of Keras' bin edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _reference(x: np.ndarray, sizes: tuple[int, ...], reduce: Any) -> np.ndarray:
    """Cell i of an axis of length n pooled to m cells covers [floor(i*n/m), ceil((i+1)*n/m)); x is NC..."""
    for axis, cells in enumerate(sizes, start=2):
        n = x.shape[axis]
        parts = [reduce(np.take(x, range(i * n // cells, -(-(i + 1) * n // cells)), axis=axis), axis=axis,
                        keepdims=True) for i in range(cells)]
        x = np.concatenate(parts, axis=axis)
    return x


CASES = [
    ("1D", (10, 3), 4), ("1D", (5, 2), 7), ("1D", (6, 2), 3),
    ("2D", (9, 7, 3), [4, 3]), ("2D", (5, 8, 2), 5),
    ("3D", (5, 6, 7, 2), [2, 4, 3]),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("kind, shape, output_size", CASES)
@pytest.mark.parametrize("op", ["Average", "Max"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("batch", [1, 3])
def test_adaptive_pooling(tmp_path: Path, rng: np.random.Generator, fmt: str, kind: str, shape: tuple[int, ...],
                          output_size: Any, op: str, data_format: str, batch: int) -> None:
    rank = len(shape) - 1
    sizes = tuple([output_size] * rank if isinstance(output_size, int) else output_size)
    cfg = layer(f"Adaptive{op}Pooling{kind}", "pool", output_size=output_size, data_format=data_format)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([cfg], shape), {})
    x = rng.normal(size=(batch, *shape)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    reduce = np.mean if op == "Average" else np.max
    if data_format == "channels_first":
        expected = _reference(x, sizes, reduce)
    else:
        expected = np.moveaxis(_reference(np.moveaxis(x, -1, 1), sizes, reduce), 1, -1)
    assert_close(y, expected.astype("float32"))


def test_adaptive_pooling_needs_static_sizes(tmp_path: Path) -> None:
    config = sequential([layer("AdaptiveAveragePooling2D", "pool", output_size=2)], (None, 6, 3))
    with pytest.raises(ShapeError, match="static spatial sizes"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))
