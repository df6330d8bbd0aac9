"""Live cross-checks: Keras 3 models quantized with `model.quantize("int8")`, saved, converted, and matched
against Keras' own quantized `predict` (the int8 kernels are read, never re-quantized)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import assert_close
from kmodels import run_onnx

import converter
from application.cli import main

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

RTOL = ATOL = 1e-4  # the brief's bound; the largest error seen is printed by the test (-s)


def _keras() -> Any:
    return pytest.importorskip("keras")


def _dense_stack(keras: Any) -> tuple[Any, Callable[[np.random.Generator, int], np.ndarray]]:
    L = keras.layers
    x = keras.Input((7, 48))
    y = L.Dense(64, activation="relu")(x)
    y = L.Dense(32, activation="gelu", use_bias=False)(y)
    y = L.Dense(5)(L.Flatten()(y))
    return keras.Model(x, y), lambda rng, n: rng.normal(size=(n, 7, 48)).astype("float32")


def _einsum(keras: Any) -> tuple[Any, Callable[[np.random.Generator, int], np.ndarray]]:
    L = keras.layers
    x = keras.Input((6, 96))
    a = L.EinsumDense("abc,cde->abde", output_shape=(None, 8, 32), bias_axes="de")(x)
    b = L.EinsumDense("abc,cd->abd", output_shape=(None, 64), activation="tanh")(x)
    # Not "...b,bc->...c": Keras 3.15's quantize() itself fails on "..." equations (_analyze_quantization_info
    # takes len() of the input's rank); tests/test_keras_int8.py covers them against Keras' formula.
    c = L.EinsumDense("abc,cd->adb", output_shape=(48, 6), bias_axes="d")(x)  # ONNX Einsum, not MatMul
    d = L.EinsumDense("abc,bcd->ad", output_shape=32, bias_axes="d")(x)
    e = L.EinsumDense("abcd,cde->abe", output_shape=(None, 24), bias_axes="e")(a)
    outputs = [a, b, c, d, e]
    return keras.Model(x, outputs), lambda rng, n: rng.normal(size=(n, 6, 96)).astype("float32")


def _embedding(keras: Any) -> tuple[Any, Callable[[np.random.Generator, int], np.ndarray]]:
    L = keras.layers
    ids = keras.Input((9,), dtype="int32")
    y = L.Embedding(400, 24)(ids)
    y = L.EinsumDense("abc,cd->abd", output_shape=(None, 16), bias_axes="d", activation="relu")(y)
    y = L.Dense(3)(L.GlobalAveragePooling1D()(y))
    return keras.Model(ids, y), lambda rng, n: rng.integers(0, 400, size=(n, 9)).astype("int32")


MODELS = {"dense": _dense_stack, "einsum_dense": _einsum, "embedding": _embedding}


def _quantized(keras: Any, build: Callable[[Any], Any], tmp_path: Path, rng: np.random.Generator) -> tuple[Any, Any]:
    model, inputs = build(keras)
    for lay in model.layers:  # larger-than-init weights spread the int8 codes
        lay.set_weights([rng.normal(size=w.shape).astype(w.dtype) * 0.5 for w in lay.get_weights()])
    model.save(tmp_path / "float.keras")
    model.quantize("int8")
    return model, inputs


def _compare(model: Any, onnx_model: onnx.ModelProto, inputs: Any, rng: np.random.Generator) -> float:
    worst = 0.0
    for batch in (1, 4):
        x = inputs(rng, batch)
        expected = model.predict(x, verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        got = run_onnx(onnx_model, x)
        for actual, want in zip(got, expected, strict=True):
            assert_close(actual, want, rtol=RTOL, atol=ATOL)
            worst = max(worst, float(np.max(np.abs(actual - want))))
    return worst


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("name", MODELS)
def test_quantized_model_matches_keras(tmp_path: Path, rng: np.random.Generator, name: str, fmt: str) -> None:
    """A .keras archive, and Keras 3's legacy .h5 (which lists a quantized layer's bias first)."""
    keras = _keras()
    model, inputs = _quantized(keras, MODELS[name], tmp_path, rng)
    model.save(tmp_path / f"int8.{fmt}")
    onnx_model = converter.convert(tmp_path / f"int8.{fmt}")
    worst = _compare(model, onnx_model, inputs, rng)
    sizes = {"float": converter.convert(tmp_path / "float.keras").ByteSize(), "int8": onnx_model.ByteSize()}
    print(f"\n{name} .{fmt}: largest |onnx - keras| {worst:.2e}; onnx bytes {sizes}")
    assert sizes["int8"] < 0.45 * sizes["float"]  # int8 kernels: a quarter, plus the float scales and biases


def test_config_and_weights_h5_match_keras(tmp_path: Path, rng: np.random.Generator) -> None:
    """model.to_json() + save_weights("x.weights.h5"): the Keras 3 weights layout without the archive."""
    keras = _keras()
    model, inputs = _quantized(keras, _dense_stack, tmp_path, rng)
    (tmp_path / "model.json").write_text(json.dumps(json.loads(model.to_json())))
    model.save_weights(tmp_path / "int8.weights.h5")
    onnx_model = converter.convert(tmp_path / "model.json", weights=tmp_path / "int8.weights.h5")
    _compare(model, onnx_model, inputs, rng)


def test_cli_check_passes_with_default_tolerances(tmp_path: Path, rng: np.random.Generator) -> None:
    """--check compares with Keras' own quantized outputs: the float32 tolerances hold."""
    keras = _keras()
    model, _ = _quantized(keras, _embedding, tmp_path, rng)
    model.save(tmp_path / "int8.keras")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "int8.keras"), "-o", str(tmp_path / "m.onnx"),
                                       "--check"])
    assert result.exit_code == 0, result.output
    assert "matches Keras" in result.output
