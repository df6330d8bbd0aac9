"""--float16: fp16 weights and compute; inputs/outputs float32 unless asked; matches at a looser tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.export.onnx import FLOAT16_ATOL, FLOAT16_RTOL, export, save_graph

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _model(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    conv = layer("Conv2D", "conv", filters=4, kernel_size=[3, 3], strides=[1, 1], padding="same",
                 data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu", use_bias=True)
    config = sequential([conv, layer("Flatten", "flat"),
                         layer("Dense", "dense", units=3, activation="tanh", use_bias=True)], (5, 5, 2))
    weights = {"conv": [rng.normal(size=(3, 3, 2, 4)).astype("float32") * 0.3, rng.normal(size=4).astype("float32")],
               "dense": [rng.normal(size=(100, 3)).astype("float32") * 0.1, rng.normal(size=3).astype("float32")]}
    return config, weights


def _reference(x: np.ndarray, weights: dict[str, Any]) -> np.ndarray:
    kernel, bias = weights["conv"]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = sum(padded[:, i:i + 5, j:j + 5, :] @ kernel[i, j] for i in range(3) for j in range(3)) + bias
    flat = np.maximum(conv, 0).reshape(len(x), -1)
    return np.tanh(flat @ weights["dense"][0] + weights["dense"][1])


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_float16_model_matches_at_the_documented_tolerance(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                           batch: int) -> None:
    config, weights = _model(rng)
    loaded = converter.load(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights))
    model = export(loaded.graph, float16=True)
    loaded.artifact.close()
    assert {t.data_type for t in model.graph.initializer if t.data_type in (FLOAT, FLOAT16)} == {FLOAT16}
    assert [i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]] == [FLOAT, FLOAT]
    x = rng.normal(size=(batch, 5, 5, 2)).astype("float32")
    got = run_onnx(model, x)[0]
    assert got.dtype == np.float32
    assert_close(got, _reference(x, weights).astype("float32"), rtol=FLOAT16_RTOL, atol=FLOAT16_ATOL)


def test_float16_io_makes_inputs_and_outputs_float16(tmp_path: Path, rng: np.random.Generator) -> None:
    config, weights = _model(rng)
    loaded = converter.load(save_keras(tmp_path / "m.keras", config, weights))
    model = export(loaded.graph, float16=True, float16_io=True)
    loaded.artifact.close()
    assert [i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]] == [FLOAT16, FLOAT16]
    x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    got = run_onnx(model, x.astype("float16"))[0]
    assert got.dtype == np.float16
    assert_close(got.astype("float32"), _reference(x, weights).astype("float32"), rtol=FLOAT16_RTOL, atol=FLOAT16_ATOL)


def test_float16_clips_constants_to_the_float16_range(tmp_path: Path) -> None:
    """A weight past 65504 would become inf in fp16; it is clipped to the largest finite value."""
    config = sequential([layer("Dense", "dense", units=2, activation="linear", use_bias=True)], (2,))
    weights = {"dense": [np.eye(2, dtype="float32"), np.asarray([1e9, -1e9], dtype="float32")]}
    loaded = converter.load(save_keras(tmp_path / "m.keras", config, weights))
    got = run_onnx(export(loaded.graph, float16=True), np.zeros((1, 2), "float32"))[0]
    loaded.artifact.close()
    assert np.all(np.isfinite(got)) and got[0, 0] == 65504 and got[0, 1] == -65504


def test_written_float16_file_equals_the_in_memory_model(tmp_path: Path, rng: np.random.Generator) -> None:
    config, weights = _model(rng)
    loaded = converter.load(save_keras(tmp_path / "m.keras", config, weights))
    path = save_graph(loaded.graph, tmp_path / "m.onnx", float16=True)
    in_memory = export(loaded.graph, float16=True)
    loaded.artifact.close()
    x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    assert_close(run_onnx(onnx.load(str(path)), x)[0], run_onnx(in_memory, x)[0], rtol=0, atol=0)
