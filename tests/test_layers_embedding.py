"""Embedding, from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError, WeightsError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _model(input_dtype: str, shape: tuple[int | None, ...], **config: object) -> dict:
    entries = [layer("InputLayer", "ids", batch_shape=[None, *shape], dtype=input_dtype),
               layer("Embedding", "embed", input_dim=10, output_dim=3, **config)]
    return {"class_name": "Sequential", "config": {"name": "s", "layers": entries}}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, dtype: str,
                   mask_zero: bool) -> None:
    table = rng.normal(size=(10, 3)).astype("float32")
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", _model(dtype, (5,), mask_zero=mask_zero), {"embed": [table]})
    model = converter.convert(path)
    ids = rng.integers(0, 10, size=(batch, 5))
    assert model.graph.input[0].type.tensor_type.elem_type == {"float32": 1, "int32": 6, "int64": 7}[dtype]
    (y,) = run_onnx(model, ids.astype(dtype))
    assert_close(y, table[ids])


def test_embedding_on_rank_3_ids_with_unknown_length(tmp_path: Path, rng: np.random.Generator) -> None:
    table = rng.normal(size=(10, 3)).astype("float32")
    path = save_keras(tmp_path / "m.keras", _model("int32", (None, 2)), {"embed": [table]})
    ids = rng.integers(0, 10, size=(2, 7, 2))
    (y,) = run_onnx(converter.convert(path), ids.astype("int32"))
    assert_close(y, table[ids])


def test_keras2_embedding_without_input_layer(tmp_path: Path, rng: np.random.Generator) -> None:
    table = rng.normal(size=(10, 3)).astype("float32")
    config = sequential([layer("Embedding", "embed", input_dim=10, output_dim=3, input_length=4,
                               batch_input_shape=[None, 4])])
    path = save_legacy_h5(tmp_path / "m.h5", config, {"embed": [table]})
    ids = rng.integers(0, 10, size=(3, 4))
    (y,) = run_onnx(converter.convert(path), ids.astype("float32"))
    assert_close(y, table[ids])


def test_embedding_table_must_fit(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save_keras(tmp_path / "m.keras", _model("int32", (5,)), {"embed": [np.zeros((9, 3), "float32")]})
    with pytest.raises(WeightsError, match=r"\(10, 3\)"):
        converter.convert(path)


def test_int4_embedding_is_refused(tmp_path: Path) -> None:
    """int8 is read (tests/test_keras_int8.py); int4's packed table is refused by its mode."""
    policy = {"module": "keras", "class_name": "QuantizedDTypePolicy", "config": {"name": "int4_from_float32"}}
    path = save_keras(tmp_path / "m.keras", _model("int32", (5,), dtype=policy), {"embed": [np.zeros((10, 3))]})
    with pytest.raises(UnsupportedLayerError, match="mode 'int4'"):
        converter.convert(path)
