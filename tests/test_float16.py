"""--float16: fp16 weights and compute; inputs/outputs float32 unless asked; matches at a looser tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import assert_close
from kmodels import input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

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


T, F, U = 6, 4, 5
GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _cell(rng: np.random.Generator, kind: str, features: int = F) -> list[np.ndarray]:
    width = GATES[kind] * U
    return [(0.5 * rng.normal(size=shape)).astype("float32") for shape in ((features, width), (U, width), (width,))]


def _masked_rnn(rng: np.random.Generator, kind: str, source: str) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """(config, weights, input) of a masked recurrent model: Embedding(mask_zero) or Masking in front."""
    inner = kind.split(":")[-1]
    rnn = layer(inner, "rnn", units=U, return_sequences=True, **({"reset_after": False} if inner == "GRU" else {}))
    weights: dict[str, Any] = {"rnn": {"cell": _cell(rng, inner)}}
    if kind.startswith("Bidirectional"):
        rnn = layer("Bidirectional", "rnn", merge_mode="concat", layer=rnn)
        weights = {"rnn": {"forward_layer": {"cell": _cell(rng, inner)}, "backward_layer": {"cell": _cell(rng, inner)}}}
    if source == "embedding":
        ids = rng.integers(1, 9, size=(3, T))
        ids[0, 4:], ids[1, :2], ids[2, [1, 3]] = 0, 0, 0
        front = [input_layer("ids", (T,), "int64"), layer("Embedding", "emb", input_dim=10, output_dim=F,
                                                          mask_zero=True)]
        weights["emb"] = [rng.normal(size=(10, F)).astype("float32")]
        return sequential([*front, rnn]), weights, ids.astype("int64")
    x = rng.normal(size=(3, T, F)).astype("float32")
    x[0, 4:], x[1, :2], x[2, 3] = -1.0, -1.0, -1.0
    return sequential([layer("Masking", "masking", mask_value=-1.0), rnn], (T, F)), weights, x


@pytest.mark.parametrize("source", ["embedding", "masking"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "Bidirectional:LSTM", "Bidirectional:GRU"])
def test_float16_masked_rnns_run_and_keep_index_arithmetic_float32(tmp_path: Path, rng: np.random.Generator,
                                                                   source: str, kind: str) -> None:
    """Masked RNNs sort time steps by `mask * T - range(T)`: in float16 `Range` is invalid ONNX (the file
    was written and onnxruntime refused it), and integers past 2048 would be inexact."""
    config, weights, x = _masked_rnn(rng, kind, source)
    path = save_keras(tmp_path / "m.keras", config, weights)
    full, half = converter.convert(path), converter.convert(path, float16=True)
    inferred = onnx.shape_inference.infer_shapes(half, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    index_inputs = [n.input[0] for n in half.graph.node if n.op_type in ("Range", "TopK")]
    assert index_inputs and {types[name] for name in index_inputs} == {FLOAT}
    assert_close(run_onnx(half, x)[0], run_onnx(full, x)[0], rtol=FLOAT16_RTOL, atol=FLOAT16_ATOL)


def test_float16_mask_meets_float16_activations_through_a_cast(tmp_path: Path, rng: np.random.Generator) -> None:
    """A masked average multiplies float16 activations by the mask, computed in float32 from integer ids:
    a Cast to float16 bridges them, and the model is valid ONNX that answers like Keras."""
    config = sequential([input_layer("ids", (T,), "int64"),
                         layer("Embedding", "emb", input_dim=10, output_dim=F, mask_zero=True),
                         layer("GlobalAveragePooling1D", "pool", data_format="channels_last")])
    table = rng.normal(size=(10, F)).astype("float32")
    path = save_keras(tmp_path / "m.keras", config, {"emb": [table]})
    ids = rng.integers(0, 10, size=(4, T)).astype("int64")
    ids[:, 0] = 1
    half = converter.convert(path, float16=True)
    onnx.shape_inference.infer_shapes(half, strict_mode=True)  # raises on a float32 x float16 Mul
    casts = [a.i for n in half.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert FLOAT16 in casts
    expected = np.stack([table[row[row != 0]].mean(0) for row in ids])
    assert_close(run_onnx(half, ids)[0], expected, rtol=FLOAT16_RTOL, atol=FLOAT16_ATOL)


def test_float16_keeps_float_token_ids_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    """A Keras 2 Embedding takes float32 ids; cast to float16 first, id 4097 became 4096 (a 10000-word
    sentiment model from the corpus answered 14 away from its float32 conversion)."""
    config = sequential([layer("Embedding", "emb", input_dim=5000, output_dim=2)], (3,))
    config["config"]["layers"][0]["config"]["dtype"] = "float32"
    table = rng.normal(size=(5000, 2)).astype("float32")
    path = save_legacy_h5(tmp_path / "m.h5", config, {"emb": [table]})
    ids = np.asarray([[4097, 2049, 4999]], dtype="float32")
    got = run_onnx(converter.convert(path, float16=True), ids)[0]
    assert_close(got, table[ids.astype(int)], rtol=FLOAT16_RTOL, atol=1e-3)
    half = converter.convert(path, float16=True)
    assert [n.op_type for n in half.graph.node].count("Cast") == 2  # ids to int64, output back to float32
