"""Reading details of the Keras file formats, with files written in the test (no TensorFlow).

HDF5 attribute encodings, every Sequential / Functional config spelling, shared and nested layers,
separate weights files, and the ways a model can state its input shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import pytest
from conftest import assert_close
from kmodels import (
    input_layer,
    keras_tensor,
    layer,
    run_onnx,
    save_keras,
    save_keras3_weights,
    save_legacy_h5,
    save_legacy_weights,
    sequential,
)

import converter
from converter.errors import WeightsError
from converter.keras.weights import decode

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
Weights = dict[str, list[np.ndarray]]


def _dense_pair(rng: np.random.Generator) -> tuple[list[dict[str, Any]], Weights]:
    """Dense(4, relu) on 5 features -> Dense(3); the reference is `_dense_pair_ref`."""
    layers = [layer("Dense", "dense_1", units=4, activation="relu"), layer("Dense", "dense_2", units=3)]
    weights = {"dense_1": [rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=4).astype("float32")],
               "dense_2": [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]}
    return layers, weights


def _dense_pair_ref(x: np.ndarray, weights: Weights) -> np.ndarray:
    (k1, b1), (k2, b2) = weights["dense_1"], weights["dense_2"]
    return np.maximum(x @ k1 + b1, 0) @ k2 + b2


def _check_dense_pair(model: onnx.ModelProto, weights: Weights, rng: np.random.Generator) -> None:
    for batch in (1, 3):
        x = rng.normal(size=(batch, 5)).astype("float32")
        (y,) = run_onnx(model, x)
        assert_close(y, _dense_pair_ref(x, weights))


def _with_input(layers: list[dict[str, Any]], **spec: Any) -> list[dict[str, Any]]:
    first = {**layers[0], "config": {**layers[0]["config"], **spec}}
    return [first, *layers[1:]]


# ---- HDF5 attributes --------------------------------------------------------------------------------


def _rechunk(group: h5py.Group, name: str, chunks: int) -> None:
    """Spread an attribute over name0, name1, ... as Keras does when it exceeds the HDF5 header limit."""
    values = [decode(v) for v in group.attrs[name]]
    del group.attrs[name]
    for i, part in enumerate(np.array_split(np.arange(len(values)), chunks)):
        group.attrs[f"{name}{i}"] = [values[j].encode() for j in part]


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_chunked_layer_and_weight_names(tmp_path: Path, rng: np.random.Generator, chunks: int) -> None:
    layers, weights = _dense_pair(rng)
    path = save_legacy_h5(tmp_path / "m.h5", sequential(layers, (5,)), weights)
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights"]
        _rechunk(group, "layer_names", chunks)
        for name in ("dense_1", "dense_2"):
            _rechunk(group[name], "weight_names", min(chunks, 2))
        assert "layer_names" not in group.attrs and "layer_names0" in group.attrs
    _check_dense_pair(converter.convert(path), weights, rng)


def _str_attr(values: list[str], as_bytes: bool) -> Any:
    return [v.encode() for v in values] if as_bytes else np.array(values, dtype=h5py.string_dtype())


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "str"])
def test_attribute_values_as_bytes_or_str(tmp_path: Path, rng: np.random.Generator, as_bytes: bool) -> None:
    layers, weights = _dense_pair(rng)
    path = save_legacy_h5(tmp_path / "m.h5", sequential(layers, (5,)), weights)
    with h5py.File(path, "r+") as handle:
        config = decode(handle.attrs["model_config"])
        handle.attrs["model_config"] = np.bytes_(config.encode()) if as_bytes else config
        handle.attrs["keras_version"] = np.bytes_(b"2.4.0") if as_bytes else "2.4.0"
        group = handle["model_weights"]
        group.attrs["layer_names"] = _str_attr([decode(v) for v in group.attrs["layer_names"]], as_bytes)
        for name in ("dense_1", "dense_2"):
            sub = group[name]
            sub.attrs["weight_names"] = _str_attr([decode(v) for v in sub.attrs["weight_names"]], as_bytes)
    _check_dense_pair(converter.convert(path), weights, rng)


# ---- Sequential spellings -----------------------------------------------------------------------------


def _sequential_spelling(spelling: str, layers: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """(config, keras_version) for one of the ways Keras versions wrote a Sequential model."""
    shaped = _with_input(layers, batch_input_shape=[None, 5])
    if spelling == "keras1_bare_list":  # Keras 1: the config is the layer list, Dense says output_dim
        old = [{**e, "config": {k: v for k, v in e["config"].items() if k != "units"} | {
            "output_dim": e["config"]["units"]}} for e in shaped]
        return {"class_name": "Sequential", "config": old}, "1.2.2"
    if spelling == "keras2.0_bare_list":
        return {"class_name": "Sequential", "config": shaped}, "2.1.6"
    if spelling == "layers_with_input_layer":
        return sequential(layers, (5,)), "2.15.0"
    if spelling == "layers_without_input_layer":
        return {"class_name": "Sequential", "config": {"name": "sequential", "layers": shaped}}, "2.2.4"
    # Keras 3, built with model.build((None, 5)): no InputLayer, the shape only in build_input_shape.
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers,
                                                   "build_input_shape": [None, 5]}}, "3.15.1"


SEQUENTIAL_SPELLINGS = ["keras1_bare_list", "keras2.0_bare_list", "layers_with_input_layer",
                        "layers_without_input_layer", "build_input_shape"]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("spelling", SEQUENTIAL_SPELLINGS)
def test_sequential_spellings(tmp_path: Path, rng: np.random.Generator, spelling: str, fmt: str) -> None:
    layers, weights = _dense_pair(rng)
    config, version = _sequential_spelling(spelling, layers)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights, keras_version=version)
    _check_dense_pair(converter.convert(path), weights, rng)


# ---- Functional spellings -------------------------------------------------------------------------------

Call = list[tuple[str, int, int]]


def _inbound(spelling: str, calls: list[Call]) -> list[Any]:
    """`inbound_nodes` as Keras 1 (triples), Keras 2 (triples + kwargs) or Keras 3 (args/kwargs dicts)."""
    if spelling == "keras1":
        return [[[n, k, i] for n, k, i in call] for call in calls]
    if spelling == "keras2":
        return [[[n, k, i, {}] for n, k, i in call] for call in calls]
    out = []
    for call in calls:
        tensors = [keras_tensor(n, k, i) for n, k, i in call]
        out.append({"args": [tensors] if len(tensors) > 1 else tensors, "kwargs": {}})
    return out


def _functional(spelling: str, layers: list[tuple[dict[str, Any], list[Call]]], inputs: list[str],
                outputs: list[tuple[str, int, int]], name: str = "model") -> dict[str, Any]:
    entries = [{**cfg, "inbound_nodes": _inbound(spelling, calls)} for cfg, calls in layers]
    return {"class_name": "Functional" if spelling == "keras3" else "Model", "config": {
        "name": name, "layers": entries, "input_layers": [[n, 0, 0] for n in inputs],
        "output_layers": [list(ref) for ref in outputs]}}


def _input(spelling: str, name: str, features: int) -> dict[str, Any]:
    if spelling == "keras3":
        return input_layer(name, (features,))
    return layer("InputLayer", name, batch_input_shape=[None, features], dtype="float32")


def _two_branch(spelling: str, rng: np.random.Generator) -> tuple[dict[str, Any], Weights]:
    """a -> dense_a, b -> dense_b, add -> out."""
    weights = {n: [rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=4).astype("float32")]
               for n in ("dense_a", "dense_b")}
    config = _functional(spelling, [
        (_input(spelling, "a", 5), []), (_input(spelling, "b", 5), []),
        (layer("Dense", "dense_a", units=4), [[("a", 0, 0)]]),
        (layer("Dense", "dense_b", units=4), [[("b", 0, 0)]]),
        (layer("Add", "add"), [[("dense_a", 0, 0), ("dense_b", 0, 0)]]),
    ], ["a", "b"], [("add", 0, 0)])
    return config, weights


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("spelling", ["keras1", "keras2", "keras3"])
def test_inbound_nodes_spellings(tmp_path: Path, rng: np.random.Generator, spelling: str, fmt: str) -> None:
    config, weights = _two_branch(spelling, rng)
    _check_two_branch(converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)), weights, rng)


def _check_two_branch(model: onnx.ModelProto, weights: Weights, rng: np.random.Generator) -> None:
    assert [i.name for i in model.graph.input] == ["a", "b"]
    (ka, ba), (kb, bb) = weights["dense_a"], weights["dense_b"]
    for batch in (1, 3):
        a, b = (rng.normal(size=(batch, 5)).astype("float32") for _ in range(2))
        (y,) = run_onnx(model, a, b)
        assert_close(y, a @ ka + ba + b @ kb + bb)


@pytest.mark.parametrize("kind", ["Sequential", "Functional"])
def test_get_config_output_as_model_json(tmp_path: Path, rng: np.random.Generator, kind: str) -> None:
    """`json.dumps(model.get_config())` has no class_name at the top: the keys tell the model class."""
    if kind == "Sequential":
        layers, weights = _dense_pair(rng)
        full = sequential(layers, (5,))
    else:
        full, weights = _two_branch("keras3", rng)
    (tmp_path / "model.json").write_text(json.dumps(full["config"]))
    save_keras3_weights(tmp_path / "w.weights.h5", full, weights)
    model = converter.convert(tmp_path / "model.json", weights=tmp_path / "w.weights.h5")
    if kind == "Sequential":
        _check_dense_pair(model, weights, rng)
    else:
        _check_two_branch(model, weights, rng)


# ---- shared and nested layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("spelling", ["keras2", "keras3"])
def test_layer_shared_by_two_calls(tmp_path: Path, rng: np.random.Generator, spelling: str, fmt: str) -> None:
    kernel, bias = rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    config = _functional(spelling, [
        (_input(spelling, "a", 5), []), (_input(spelling, "b", 5), []),
        (layer("Dense", "shared", units=4, activation="tanh"), [[("a", 0, 0)], [("b", 0, 0)]]),
        (layer("Add", "add"), [[("shared", 0, 0), ("shared", 1, 0)]]),
    ], ["a", "b"], [("shared", 0, 0), ("shared", 1, 0), ("add", 0, 0)])
    model = converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"shared": [kernel, bias]}))
    assert len(model.graph.initializer) == 2, "the shared layer's weights are stored once"
    a, b = (rng.normal(size=(3, 5)).astype("float32") for _ in range(2))
    ya, yb, total = run_onnx(model, a, b)
    assert_close(ya, np.tanh(a @ kernel + bias))
    assert_close(yb, np.tanh(b @ kernel + bias))
    assert_close(total, ya + yb)


def _inner_model(spelling: str, kind: str) -> dict[str, Any]:
    """inner: Dense(8, tanh) -> Dense(4), on 6 features, as a Sequential or a Functional model."""
    in1, in2 = layer("Dense", "in1", units=8, activation="tanh"), layer("Dense", "in2", units=4)
    if kind == "Sequential":
        entry = {"class_name": "Sequential", "config": {"name": "inner", "layers": [
            _input(spelling, "inner_input", 6), in1, in2]}}
    else:
        entry = _functional(spelling, [(_input(spelling, "inner_input", 6), []), (in1, [[("inner_input", 0, 0)]]),
                                       (in2, [[("in1", 0, 0)]])], ["inner_input"], [("in2", 0, 0)], name="inner")
    return {**entry, "name": "inner"}


def _nested(spelling: str, kind: str, rng: np.random.Generator) -> tuple[dict[str, Any], Weights]:
    # Keras 2 numbers a nested model's calls from 1: node 0 is the nested model's own Input -> output.
    call = 1 if spelling == "keras2" else 0
    config = _functional(spelling, [
        (_input(spelling, "x", 5), []),
        (layer("Dense", "pre", units=6, activation="relu"), [[("x", 0, 0)]]),
        (_inner_model(spelling, kind), [[("pre", 0, 0)]]),
        (layer("Dense", "post", units=3), [[("inner", call, 0)]]),
    ], ["x"], [("post", 0, 0)])
    shapes = {"pre": (5, 6), "in1": (6, 8), "in2": (8, 4), "post": (4, 3)}
    weights = {n: [rng.normal(size=s).astype("float32"), rng.normal(size=s[1]).astype("float32")]
               for n, s in shapes.items()}
    return config, weights


def _prefix_nested_weight_names(path: Path, model_name: str) -> None:
    """Keras 3's legacy .h5 names a nested model's weights `<model>/<layer>/<weight>`."""
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights"][model_name]
        names = [decode(n) for n in group.attrs["weight_names"]]
        for name in names:
            group.move(name, f"{model_name}/{name}")
        group.attrs["weight_names"] = [f"{model_name}/{n}".encode() for n in names]


@pytest.mark.parametrize("kind", ["Sequential", "Functional"])
@pytest.mark.parametrize("layout", ["keras3_zip", "legacy_keras2", "legacy_keras3"])
def test_model_nested_as_layer(tmp_path: Path, rng: np.random.Generator, layout: str, kind: str) -> None:
    """Keras 3 weights path `layers/<snake class>/layers/...`; legacy `model_weights/<nested>/...`."""
    config, weights = _nested("keras2" if layout == "legacy_keras2" else "keras3", kind, rng)
    if layout == "keras3_zip":
        path = save_keras(tmp_path / "m.keras", config, weights)
    else:
        path = save_legacy_h5(tmp_path / "m.h5", config, weights)
    if layout == "legacy_keras3":
        _prefix_nested_weight_names(path, "inner")
    model = converter.convert(path)
    for batch in (1, 3):
        x = rng.normal(size=(batch, 5)).astype("float32")
        h = np.maximum(x @ weights["pre"][0] + weights["pre"][1], 0)
        h = np.tanh(h @ weights["in1"][0] + weights["in1"][1]) @ weights["in2"][0] + weights["in2"][1]
        (y,) = run_onnx(model, x)
        assert_close(y, h @ weights["post"][0] + weights["post"][1])


# ---- architecture and weights in separate files ------------------------------------------------------------

WEIGHT_WRITERS = {
    "legacy_save_weights": lambda p, c, w: save_legacy_weights(p / "weights.h5", c, w),
    "keras3_save_weights": lambda p, c, w: save_keras3_weights(p / "model.weights.h5", c, w),
    "keras_zip": lambda p, c, w: save_keras(p / "model.keras", c, w),
}


@pytest.mark.parametrize("layout", WEIGHT_WRITERS)
def test_model_json_with_weights_file(tmp_path: Path, rng: np.random.Generator, layout: str) -> None:
    layers, weights = _dense_pair(rng)
    config = sequential(layers, (5,))
    (tmp_path / "model.json").write_text(json.dumps({**config, "keras_version": "2.15.0", "backend": "tensorflow"}))
    weights_path = WEIGHT_WRITERS[layout](tmp_path, config, weights)
    _check_dense_pair(converter.convert(tmp_path / "model.json", weights=weights_path), weights, rng)


def test_model_json_without_weights_asks_for_them(tmp_path: Path, rng: np.random.Generator) -> None:
    layers, _ = _dense_pair(rng)
    (tmp_path / "model.json").write_text(json.dumps(sequential(layers, (5,))))
    with pytest.raises(WeightsError) as err:
        converter.convert(tmp_path / "model.json")
    assert "--weights" in str(err.value)
    assert "dense_1" in str(err.value)


# ---- the ways to state the input shape --------------------------------------------------------------------
# (spec keys, on an InputLayer?) -> every spelling gives the ONNX input (batch, 5); batch_size fixes the batch.

DENSE_INPUT_SPELLINGS: dict[str, tuple[dict[str, Any], bool, int | str]] = {
    "input_shape": ({"input_shape": [5]}, False, "batch"),
    "input_dim": ({"input_dim": 5}, False, "batch"),
    "batch_input_shape": ({"batch_input_shape": [None, 5]}, False, "batch"),
    "batch_shape": ({"batch_shape": [None, 5]}, False, "batch"),
    "batch_size": ({"input_shape": [5], "batch_size": 2}, False, 2),
    "batch_input_shape_fixed": ({"batch_input_shape": [2, 5]}, False, 2),
    "Input_keras3": ({"batch_shape": [None, 5]}, True, "batch"),
    "Input_keras2": ({"batch_input_shape": [None, 5]}, True, "batch"),
    "Input_shape_key": ({"shape": [5]}, True, "batch"),
    "Input_batch_size": ({"shape": [5], "batch_size": 2}, True, 2),
}


def _onnx_dims(model: onnx.ModelProto, index: int = 0) -> list[int | str]:
    dims = model.graph.input[index].type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]


def _spelled(layers: list[dict[str, Any]], spec: dict[str, Any], on_input: bool) -> dict[str, Any]:
    entries = [layer("InputLayer", "x", dtype="float32", **spec), *layers] if on_input else _with_input(layers, **spec)
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": entries}}


@pytest.mark.parametrize("spelling", DENSE_INPUT_SPELLINGS)
def test_input_shape_spellings_dense(tmp_path: Path, rng: np.random.Generator, spelling: str) -> None:
    spec, on_input, batch = DENSE_INPUT_SPELLINGS[spelling]
    layers, weights = _dense_pair(rng)
    model = converter.convert(save_legacy_h5(tmp_path / "m.h5", _spelled(layers, spec, on_input), weights))
    assert _onnx_dims(model) == [batch, 5]
    x = rng.normal(size=(2, 5)).astype("float32")
    (y,) = run_onnx(model, x)
    assert_close(y, _dense_pair_ref(x, weights))


# A 1x1 Conv1D is `x @ kernel[0] + bias` per timestep: a sequence consumer with a one-line reference.
SEQUENCE_INPUT_SPELLINGS: dict[str, tuple[dict[str, Any], bool, list[int | str | None]]] = {
    "input_shape": ({"input_shape": [10, 5]}, False, ["batch", 10, 5]),
    "input_dim+input_length": ({"input_dim": 5, "input_length": 10}, False, ["batch", 10, 5]),
    "batch_input_shape": ({"batch_input_shape": [None, 10, 5]}, False, ["batch", 10, 5]),
    "batch_shape": ({"batch_shape": [None, 10, 5]}, False, ["batch", 10, 5]),
    "batch_size": ({"input_shape": [10, 5], "batch_size": 2}, False, [2, 10, 5]),
    "Input": ({"batch_shape": [None, 10, 5]}, True, ["batch", 10, 5]),
    # symbolic timesteps: None stays a named dim, never a fixed size
    "input_dim_only": ({"input_dim": 5}, False, ["batch", None, 5]),
    "input_shape_none": ({"input_shape": [None, 5]}, False, ["batch", None, 5]),
    "Input_none": ({"batch_shape": [None, None, 5]}, True, ["batch", None, 5]),
}


@pytest.mark.parametrize("spelling", SEQUENCE_INPUT_SPELLINGS)
def test_input_shape_spellings_sequence(tmp_path: Path, rng: np.random.Generator, spelling: str) -> None:
    spec, on_input, want = SEQUENCE_INPUT_SPELLINGS[spelling]
    kernel, bias = rng.normal(size=(1, 5, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    conv = layer("Conv1D", "conv", filters=4, kernel_size=[1], strides=[1], padding="valid",
                 data_format="channels_last", dilation_rate=[1], activation="linear", use_bias=True)
    model = converter.convert(save_legacy_h5(tmp_path / "m.h5", _spelled([conv], spec, on_input),
                                             {"conv": [kernel, bias]}))
    dims = _onnx_dims(model)
    assert dims[0] == want[0] and dims[2] == want[2]
    if want[1] is None:
        assert isinstance(dims[1], str) and dims[1] not in ("", "batch"), f"timesteps should stay symbolic: {dims}"
    else:
        assert dims[1] == want[1]
    for steps in ([10] if want[1] is not None else [4, 7]):
        x = rng.normal(size=(2, steps, 5)).astype("float32")
        (y,) = run_onnx(model, x)
        assert_close(y, x @ kernel[0] + bias)


@pytest.mark.parametrize(("spec", "on_input", "want"), [
    ({"input_length": 10}, False, ["batch", 10]),
    ({"batch_input_shape": [None, 10]}, False, ["batch", 10]),
    ({"batch_shape": [None, 10]}, True, ["batch", 10]),
    ({}, False, ["batch", None]),
], ids=["input_length", "batch_input_shape", "Input", "no_length"])
def test_embedding_input_dim_is_the_vocabulary(tmp_path: Path, rng: np.random.Generator, spec: dict[str, Any],
                                               on_input: bool, want: list[int | str | None]) -> None:
    """For Embedding, input_dim is the vocabulary size, never a shape: the input is (batch, input_length)."""
    table = rng.normal(size=(30, 4)).astype("float32")
    emb = layer("Embedding", "emb", input_dim=30, output_dim=4)
    config = _spelled([emb], spec, on_input) if spec else _spelled([emb], {"input_dim": 30}, False)
    model = converter.convert(save_legacy_h5(tmp_path / "m.h5", config, {"emb": [table]}))
    dims = _onnx_dims(model)
    assert dims[0] == "batch" and len(dims) == 2
    if want[1] is None:
        assert isinstance(dims[1], str) and dims[1] != "batch", f"the length should stay symbolic: {dims}"
    else:
        assert dims[1] == want[1]
    ids = rng.integers(0, 30, size=(3, 10))
    elem = model.graph.input[0].type.tensor_type.elem_type
    (y,) = run_onnx(model, ids.astype(onnx.helper.tensor_dtype_to_np_dtype(elem)))
    assert_close(y, table[ids])
