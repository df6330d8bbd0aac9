"""Malformed model-config structures end in a KconvertError naming the layer and the field, with a hint.

Each row damages one place of a small valid model (a Keras 3 functional `.keras`, a Keras 2 functional
`.h5` or a Keras 2 Sequential `.h5`) the way the mutation fuzzer of issue 9 did, and names the error
class and the words the message must hold. Also: the shapes of valid-but-odd spellings, the Keras 2.0-2.2
Sequential whose first layer is a nested model, and the Keras 3 `ops.transpose` op node.
"""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import assert_close
from k1models import k1layer, k1sequential, save_keras1_h5
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import FormatError, KconvertError, ShapeError, UnsupportedLayerError
from converter.ir import Graph, Node, Tensor
from converter.keras.structure import MAX_MODEL_DEPTH

Mutation = Callable[[dict[str, Any]], None]
W1 = np.arange(9, dtype="float32").reshape(3, 3) / 10 - 0.4
W2 = np.arange(6, dtype="float32").reshape(3, 2) / 10 - 0.2
WEIGHTS = {"d1": [W1, np.full(3, 0.1, "float32")], "d2": [W2, np.full(2, -0.1, "float32")]}


def _dense(name: str, units: int, activation: str = "linear", **extra: Any) -> dict[str, Any]:
    return layer("Dense", name, units=units, activation=activation, use_bias=True, **extra)


def _keras3() -> dict[str, Any]:
    """inp (3,) -> d1 -> d2, Keras 3 spelling."""
    return functional([(input_layer("inp", (3,)), []), (_dense("d1", 3), ["inp"]), (_dense("d2", 2), ["d1"])],
                      ["inp"], ["d2"])


def _keras2() -> dict[str, Any]:
    """The same model as tf.keras 2 writes it (`inbound_nodes` as nested lists)."""
    inp = layer("InputLayer", "inp", batch_input_shape=[None, 3], dtype="float32")
    entries = [dict(inp, inbound_nodes=[]), dict(_dense("d1", 3), inbound_nodes=[[["inp", 0, 0, {}]]]),
               dict(_dense("d2", 2), inbound_nodes=[[["d1", 0, 0, {}]]])]
    return {"class_name": "Functional", "config": {"name": "model", "layers": entries,
                                                   "input_layers": [["inp", 0, 0]], "output_layers": [["d2", 0, 0]]}}


def _sequential2() -> dict[str, Any]:
    """A Keras 2 Sequential without an InputLayer: the first layer states the input."""
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        _dense("d1", 3, batch_input_shape=[None, 3], dtype="float32"), _dense("d2", 2)]}}


def _save(tmp_path: Path, base: Callable[[], dict[str, Any]], mutate: Mutation) -> Path:
    """The base model's file with the damaged config in place of its own (weights stay those of the base)."""
    config = base()
    mutate(config)
    if base is _keras3:
        path = save_keras(tmp_path / "m.keras", base(), WEIGHTS)
        with zipfile.ZipFile(path) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
        entries["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        return path
    path = save_legacy_h5(tmp_path / "m.h5", base(), WEIGHTS)
    with h5py.File(path, "a") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    return path


def _entry(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in config["config"]["layers"] if e["config"]["name"] == name)


def _set_history(name: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        _entry(config, name)["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = value
    return mutate


def _layer(name: str, key: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        _entry(config, name)[key] = copy.deepcopy(value)
    return mutate


def _layer_config(name: str, key: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        _entry(config, name)["config"][key] = copy.deepcopy(value)
    return mutate


def _model(key: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        config["config"][key] = copy.deepcopy(value)
    return mutate


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _rename(old: str, new: str) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        entry = _entry(config, old)
        entry["name"] = entry["config"]["name"] = new
    return mutate


def _call(name: str, call: Any) -> Mutation:
    return _layer(name, "inbound_nodes", [call])


K3, K2, SEQ = _keras3, _keras2, _sequential2
INF, NAN = float("inf"), float("nan")

STRUCTURE_ROWS: list[tuple[str, Callable[[], dict[str, Any]], Mutation, type[KconvertError], list[str]]] = [
    ("model class_name not a string", K3, lambda c: c.update(class_name=["Functional"]), FormatError, ["class_name"]),
    ("model class unknown", K3, lambda c: c.update(class_name="Dense"), FormatError, ["model class", "Dense"]),
    ("model config a number", K3, lambda c: c.update(config=7), FormatError, ["config"]),
    ("layers not a list", K3, _model("layers", {"a": 1}), FormatError, ["layers", "model"]),
    ("layers empty", K3, _model("layers", []), FormatError, ["no layers"]),
    ("layer entry not an object", K3, lambda c: c["config"]["layers"].__setitem__(1, ["d1"]), FormatError,
     ["layer 1 of model"]),
    ("layer class_name missing", K3, lambda c: _entry(c, "d1").pop("class_name"), FormatError,
     ["layer 1 of model", "class_name"]),
    ("layer config a string", K3, _layer("d1", "config", "x"), FormatError, ["layer 1 of model", "config"]),
    ("layer name a number", K3, _layer("d1", "name", 5), FormatError, ["Dense", "name"]),
    ("duplicate layer names", K3, _rename("d2", "d1"), FormatError, ["two layers named 'd1'", "layer 1", "layer 2"]),
    ("class_name an object inside a layer config", K3,
     _layer_config("d1", "kernel_initializer", {"class_name": {"x": 1}, "config": {}}), FormatError,
     ["class_name", "d1"]),
    ("lone surrogate in a layer name", K3, _rename("d2", "d\ud800"), FormatError,
     [r"'d\ud800'", "not valid Unicode"]),
    ("lone surrogate in the model name", K2, _model("name", "\udfff"), FormatError, ["not valid Unicode"]),
    ("config nested absurdly deep", K3, _layer_config("d1", "extra", _deep(400)), FormatError, ["nests deeper"]),
    ("file names an internal node kind", K3, _layer("d1", "class_name", "kconvert:Transpose"), UnsupportedLayerError,
     ["'d1'", "kconvert:Transpose"]),
    ("file names the internal mask kind", K3, _layer("d1", "class_name", "kconvert:TimestepMask"),
     UnsupportedLayerError, ["'d1'", "kconvert:TimestepMask"]),
    ("class name with a colon", K3, _layer("d1", "class_name", "a:Dense"), UnsupportedLayerError, ["'d1'", "a:Dense"]),
]

WIRING_ROWS: list[tuple[str, Callable[[], dict[str, Any]], Mutation, type[KconvertError], list[str]]] = [
    ("inbound_nodes an object", K3, _layer("d1", "inbound_nodes", {"args": []}), FormatError,
     ["inbound_nodes of layer 'd1'"]),
    ("call args a number", K3, _call("d1", {"args": 5, "kwargs": {}}), FormatError, ["layer 'd1'", "args"]),
    ("call without tensors", K3, _call("d1", {"args": [1.0], "kwargs": {}}), FormatError,
     ["layer 'd1'", "without input tensors"]),
    ("keras_history missing", K3, lambda c: _entry(c, "d1")["inbound_nodes"][0]["args"][0]["config"].pop(
        "keras_history"), FormatError, ["layer 'd1'", "keras_history"]),
    ("keras_history too short", K3, _set_history("d1", ["inp", 0]), FormatError, ["layer 'd1'", "reference"]),
    ("negative call index", K3, _set_history("d1", ["inp", -1, 0]), FormatError, ["layer 'd1'", "call index -1"]),
    ("huge call index", K3, _set_history("d1", ["inp", 2**40, 0]), FormatError, ["layer 'd1'", "outside"]),
    ("fractional output index", K3, _set_history("d1", ["inp", 0, 0.5]), FormatError,
     ["layer 'd1'", "output index 0.5"]),
    ("NaN call index", K3, _set_history("d1", ["inp", NAN, 0]), FormatError, ["layer 'd1'", "call index nan"]),
    ("bool call index", K3, _set_history("d1", ["inp", True, 0]), FormatError, ["layer 'd1'", "call index True"]),
    ("reference names a number", K3, _set_history("d1", [5, 0, 0]), FormatError, ["layer 'd1'", "reference"]),
    ("dangling layer", K3, _set_history("d1", ["nope", 0, 0]), FormatError, ["layer 'd1'", "reads layer 'nope'"]),
    ("call index past the calls", K3, _set_history("d1", ["inp", 3, 0]), FormatError,
     ["layer 'd1'", "call 3 of layer 'inp'"]),
    ("output index past the outputs", K3, _set_history("d1", ["inp", 0, 4]), FormatError,
     ["output 4 of layer 'inp'"]),
    ("layer reads itself", K3, _set_history("d1", ["d1", 0, 0]), FormatError, ["cycle", "d1 -> d1"]),
    ("two layers read each other", K3, _set_history("d1", ["d2", 0, 0]), FormatError,
     ["cycle", "d1 -> d2 -> d1"]),
    ("input_layers names a missing layer", K3, _model("input_layers", [["nope", 0, 0]]), FormatError,
     ["input_layers", "'nope'"]),
    ("input_layers entry too short", K3, _model("input_layers", [["inp", 0]]), FormatError,
     ["input_layers", "triple"]),
    ("input_layers a number", K3, _model("input_layers", 5), FormatError, ["input_layers", "5"]),
    ("input_layers empty", K3, _model("input_layers", []), FormatError, ["no inputs", "input_layers"]),
    ("input listed twice", K3, _model("input_layers", [["inp", 0, 0], ["inp", 0, 0]]), FormatError,
     ["input_layers", "'inp' twice"]),
    ("model input also called", K3, lambda c: _entry(c, "inp").update(inbound_nodes=_entry(c, "d2")["inbound_nodes"]),
     FormatError, ["'inp'", "model input", "inbound_nodes"]),
    ("output_layers empty", K3, _model("output_layers", []), FormatError, ["no outputs", "output_layers"]),
    ("output_layers names a missing layer", K3, _model("output_layers", [["nope", 0, 0]]), FormatError,
     ["output_layers", "'nope'"]),
    ("legacy index a string", K2, _layer("d1", "inbound_nodes", [[["inp", "0", 0, {}]]]), FormatError,
     ["layer 'd1'", "call index '0'"]),
    ("legacy 4th entry not kwargs", K2, _layer("d1", "inbound_nodes", [[["inp", 0, 0, 7]]]), FormatError,
     ["layer 'd1'", "kwargs"]),
    ("legacy reference too long", K2, _layer("d1", "inbound_nodes", [[["inp", 0, 0, {}, 1]]]), FormatError,
     ["layer 'd1'", "kwargs"]),
    ("legacy call a number", K2, _layer("d1", "inbound_nodes", [5]), FormatError, ["layer 'd1'", "call 5"]),
    ("legacy dangling layer", K2, _layer("d1", "inbound_nodes", [[["gone", 0, 0, {}]]]), FormatError,
     ["layer 'd1'", "'gone'"]),
]

SPEC_ROWS: list[tuple[str, Callable[[], dict[str, Any]], Mutation, type[KconvertError], list[str]]] = [
    ("dim a string", K3, _layer_config("inp", "batch_shape", [None, "3"]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim NaN", K3, _layer_config("inp", "batch_shape", [None, NAN]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim infinite", K3, _layer_config("inp", "batch_shape", [None, INF]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim negative", K3, _layer_config("inp", "batch_shape", [None, -3]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim zero", K3, _layer_config("inp", "batch_shape", [None, 0]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim fractional", K3, _layer_config("inp", "batch_shape", [None, 3.5]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim a bool", K3, _layer_config("inp", "batch_shape", [None, True]), ShapeError, ["'inp'", "batch_shape"]),
    ("dim past int32", K3, _layer_config("inp", "batch_shape", [None, 2**31]), ShapeError, ["'inp'", "batch_shape"]),
    ("too many elements", K3, _layer_config("inp", "batch_shape", [None, 65536, 65536, 3]), ShapeError,
     ["'inp'", "elements"]),
    ("rank absurd", K3, _layer_config("inp", "batch_shape", [None] + [1] * 20), ShapeError, ["'inp'", "rank 21"]),
    ("shape a string", K3, _layer_config("inp", "batch_shape", "abc"), ShapeError, ["'inp'", "batch_shape"]),
    ("shape an object", K3, _layer_config("inp", "batch_shape", {"a": 1}), ShapeError, ["'inp'", "batch_shape"]),
    ("shape without the batch", K3, _layer_config("inp", "batch_shape", []), ShapeError, ["'inp'", "batch_shape"]),
    ("dtype unknown", K3, _layer_config("inp", "dtype", "float33"), ShapeError, ["'inp'", "dtype", "float33"]),
    ("dtype a number", K3, _layer_config("inp", "dtype", 7), ShapeError, ["'inp'", "dtype"]),
    ("dtype Keras has but ONNX export lacks", K3, _layer_config("inp", "dtype", "int16"), UnsupportedLayerError,
     ["'inp'", "int16"]),
    ("input_dim negative", SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        batch_input_shape=None, input_dim=-5), ShapeError, ["input_dim"]),
    ("input_dim a string", SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        batch_input_shape=None, input_dim="3"), ShapeError, ["input_dim"]),
    ("batch_size zero", SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        batch_input_shape=None, input_shape=[3], batch_size=0), ShapeError, ["batch_size"]),
    ("input_length negative", SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        batch_input_shape=None, input_dim=3, input_length=-1), ShapeError, ["input_length"]),
]


@pytest.mark.parametrize(("base", "mutate", "error", "words"),
                         [pytest.param(*row[1:], id=row[0]) for row in STRUCTURE_ROWS + WIRING_ROWS + SPEC_ROWS])
def test_malformed_config_is_a_clean_error(tmp_path: Path, base: Callable[[], dict[str, Any]], mutate: Mutation,
                                           error: type[KconvertError], words: list[str]) -> None:
    path = _save(tmp_path, base, mutate)
    with pytest.raises(KconvertError) as caught:
        converter.convert(path)
    assert type(caught.value) is error, caught.value
    message = str(caught.value)
    assert all(w in message for w in words), message
    assert caught.value.hint


def _reference(x: np.ndarray) -> np.ndarray:
    return (x @ WEIGHTS["d1"][0] + WEIGHTS["d1"][1]) @ WEIGHTS["d2"][0] + WEIGHTS["d2"][1]


@pytest.mark.parametrize(("base", "mutate"), [
    pytest.param(K3, _set_history("d1", ["inp", 0.0, 0.0]), id="integral float indices"),
    pytest.param(K2, _layer("d1", "inbound_nodes", [[["inp", 0.0, 0, {}]]]), id="legacy integral float index"),
    pytest.param(K3, _layer_config("inp", "batch_shape", [None, 3.0]), id="integral float dim"),
    pytest.param(K3, _layer_config("inp", "batch_shape", {"class_name": "__tuple__", "config": {"value": [None, 3]}}),
                 id="Keras 3 tuple"),
    pytest.param(SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        dtype={"class_name": "DTypePolicy", "config": {"name": "float32"}}), id="dtype policy"),
    pytest.param(SEQ, lambda c: c["config"]["layers"][0]["config"].update(
        dtype={"class_name": "Policy", "config": {"name": "mixed_float16"}}), id="mixed precision policy"),
    pytest.param(K3, _layer_config("inp", "dtype", "float64"), id="float64 input autocast"),
    pytest.param(K2, _layer_config("inp", "dtype", "float16"), id="float16 input autocast"),
    pytest.param(SEQ, lambda c: c["config"]["layers"][0]["config"].update(dtype="bfloat16"), id="bfloat16 first layer"),
    pytest.param(K2, lambda c: c["config"]["layers"].reverse(), id="layers listed in reverse"),
])
def test_odd_but_valid_spellings_convert(tmp_path: Path, rng: np.random.Generator,
                                         base: Callable[[], dict[str, Any]], mutate: Mutation) -> None:
    model = converter.convert(_save(tmp_path, base, mutate))
    assert model.graph.input[0].type.tensor_type.elem_type == 1  # float32
    x = rng.normal(size=(2, 3)).astype("float32")
    assert_close(run_onnx(model, x)[0], _reference(x))


def _nested_relu(depth: int) -> dict[str, Any]:
    """A Sequential of `depth` Sequentials, one inside the other, the innermost holding a ReLU."""
    model: dict[str, Any] = {"class_name": "Sequential", "config": {"name": "s0", "layers": [
        layer("Activation", "relu", activation="relu")]}}
    for i in range(1, depth):
        model = {"class_name": "Sequential", "config": {"name": f"s{i}", "layers": [model]}}
    return sequential([model], (4,))


def test_models_nested_to_the_limit_convert(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save_keras(tmp_path / "m.keras", _nested_relu(MAX_MODEL_DEPTH - 1), {})
    x = rng.normal(size=(2, 4)).astype("float32")
    assert_close(run_onnx(converter.convert(path), x)[0], np.maximum(x, 0))


def test_models_nested_past_the_limit_are_refused(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", _nested_relu(MAX_MODEL_DEPTH + 1), {})
    with pytest.raises(FormatError, match="nested more than 64 models deep") as caught:
        converter.convert(path)
    assert caught.value.hint


def _first_model(kind: str) -> dict[str, Any]:
    """The nested model a Keras 2.0-2.2 Sequential starts with: a functional `Model` (no entry-level name),
    or a Sequential in the 2.2 {"name", "layers"} form whose first layer states the input."""
    if kind == "Sequential":
        return {"class_name": "Sequential", "config": {"name": "inner", "layers": [
            _dense("d1", 3, "relu", batch_input_shape=[None, 3], dtype="float32")]}}
    inp = {"name": "input_1", "class_name": "InputLayer", "inbound_nodes": [],
           "config": {"batch_input_shape": [None, 3], "dtype": "float32", "sparse": False, "name": "input_1"}}
    d1 = dict(_dense("d1", 3, "relu"), inbound_nodes=[[["input_1", 0, 0, {}]]])
    return {"class_name": "Model", "config": {"name": "inner", "layers": [inp, d1],
                                              "input_layers": [["input_1", 0, 0]], "output_layers": [["d1", 0, 0]]}}


@pytest.mark.parametrize("form", ["list", "dict"])
@pytest.mark.parametrize("first", ["Model", "Sequential"])
def test_sequential_starting_with_a_nested_model(tmp_path: Path, rng: np.random.Generator, form: str,
                                                 first: str) -> None:
    """Keras 2.0-2.2 `Sequential([inner_model, Dense])` with no InputLayer in front: the config lists the
    nested model first (in a bare list in 2.0/2.1, in {"name", "layers"} in 2.2); its input is the
    Sequential's input, `<inner>_input`, as Keras 2 names it."""
    layers = [_first_model(first), _dense("d2", 2)]
    config = {"class_name": "Sequential", "config": layers if form == "list" else {"name": "seq", "layers": layers}}
    model = converter.convert(save_legacy_h5(tmp_path / "m.h5", config, WEIGHTS, keras_version="2.1.6"))
    assert [i.name for i in model.graph.input] == ["inner_input"]
    x = rng.normal(size=(3, 3)).astype("float32")
    expected = np.maximum(x @ WEIGHTS["d1"][0] + WEIGHTS["d1"][1], 0) @ WEIGHTS["d2"][0] + WEIGHTS["d2"][1]
    assert_close(run_onnx(model, x)[0], expected)


def test_keras1_merge_branch_that_is_not_a_model(tmp_path: Path) -> None:
    branch = k1layer("Dense", "dense_1", output_dim=4, batch_input_shape=[None, 3])
    merge = k1layer("Merge", "merge_1", mode="concat", concat_axis=-1, layers=[branch])
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([merge]), {})
    with pytest.raises(FormatError, match="branch 0 of Merge 'merge_1' is a Dense") as caught:
        converter.convert(path)
    assert caught.value.hint


def test_keras1_convolution_with_half_a_kernel_size(tmp_path: Path) -> None:
    conv = k1layer("Convolution2D", "conv_1", nb_filter=2, nb_row=3, batch_input_shape=[None, 3, 8, 8])
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([conv]), {})
    with pytest.raises(FormatError, match="Convolution2D 'conv_1' gives nb_row but not nb_col") as caught:
        converter.convert(path)
    assert caught.value.hint


def test_nested_model_called_on_too_few_tensors(tmp_path: Path) -> None:
    inner = functional([(input_layer("a", (3,)), []), (input_layer("b", (3,)), []),
                        (layer("Add", "add"), ["a", "b"])], ["a", "b"], ["add"], name="inner")
    inner["name"] = "inner"
    outer = functional([(input_layer("inp", (3,)), []), (inner, ["inp"])], ["inp"], ["inner"], name="outer")
    with pytest.raises(FormatError, match="model 'inner' has 2 inputs but is called on 1") as caught:
        converter.convert(save_keras(tmp_path / "m.keras", outer, {}))
    assert caught.value.hint


def test_graph_validate_names_the_layer() -> None:
    stray = Tensor("stray")
    node = Node(kind="Dense", name="d", inputs=[stray], outputs=[Tensor("d")], layer_name="outer/d")
    with pytest.raises(FormatError, match="layer 'outer/d' reads tensor 'stray'") as caught:
        Graph(name="g", nodes=[node], outputs=node.outputs).validate()
    assert caught.value.hint


def _transpose_model(axes: Any) -> dict[str, Any]:
    """Keras 3 `ops.transpose(x, axes)` as `model.save` writes it: an op node of class Transpose."""
    config = functional([(input_layer("inp", (2, 3, 4)), []), (layer("Transpose", "transpose", axes=axes),
                                                                   ["inp"])], ["inp"], ["transpose"])
    _entry(config, "transpose")["module"] = "keras.src.ops.numpy"
    return config


@pytest.mark.parametrize("axes", [[0, 2, 1, 3], [0, 3, 1, 2], [0, -1, -3, -2], [1, 0, 2, 3], None],
                         ids=["swap", "channels_first", "negative", "batch_moves", "reverse_all"])
def test_keras3_transpose_op_node(tmp_path: Path, rng: np.random.Generator, axes: list[int] | None) -> None:
    model = converter.convert(save_keras(tmp_path / "m.keras", _transpose_model(axes), {}))
    x = rng.normal(size=(2, 2, 3, 4)).astype("float32")
    assert_close(run_onnx(model, x)[0], np.transpose(x, axes))


@pytest.mark.parametrize(("axes", "error", "words"), [
    ([0, 2, 1], ShapeError, "rank 4"),
    ([0, 0, 1, 2], ShapeError, "permutation"),
    ([0, 1, 2, 9], ShapeError, "permutation"),
    ("abc", FormatError, "axes"),
    ([0, 1.5, 2, 3], FormatError, "axes"),
])
def test_keras3_transpose_op_node_with_bad_axes(tmp_path: Path, axes: Any, error: type[KconvertError],
                                                words: str) -> None:
    with pytest.raises(KconvertError) as caught:
        converter.convert(save_keras(tmp_path / "m.keras", _transpose_model(axes), {}))
    assert type(caught.value) is error and words in str(caught.value) and "'transpose'" in str(caught.value)
    assert caught.value.hint


def test_internal_kinds_are_not_public_classes() -> None:
    from converter.layers.registry import LAYERS

    assert "Transpose" in LAYERS.public_names()
    assert not [n for n in LAYERS.public_names() if ":" in n]


def _conv(name: str, filters: int) -> dict[str, Any]:
    return layer("Conv2D", name, filters=filters, kernel_size=[1, 1], strides=[1, 1], padding="valid",
                 data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear", use_bias=True)


def _every_fold_model(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """conv -> BN -> relu -> pad -> maxpool -> dropout -> concat(concat(conv, conv), conv) -> GAP -> reshape
    -> conv -> flatten -> dense: every fold of every pass has something to do."""
    entries: list[tuple[dict[str, Any], list[str]]] = [
        (input_layer("inp", (6, 6, 3)), []), (_conv("c0", 4), ["inp"]),
        (layer("BatchNormalization", "bn", axis=-1, epsilon=1e-3, center=True, scale=True), ["c0"]),
        (layer("Activation", "relu", activation="relu"), ["bn"]),
        (layer("ZeroPadding2D", "pad", padding=[[1, 1], [1, 1]], data_format="channels_last"), ["relu"]),
        (layer("MaxPooling2D", "pool", pool_size=[3, 3], strides=[1, 1], padding="valid",
               data_format="channels_last"), ["pad"]),
        (layer("Dropout", "drop", rate=0.5), ["pool"]),
        (_conv("ca", 2), ["drop"]), (_conv("cb", 2), ["drop"]), (_conv("cc", 2), ["drop"]),
        (layer("Concatenate", "cat1", axis=-1), ["ca", "cb"]), (layer("Concatenate", "cat2", axis=-1), ["cat1", "cc"]),
        (layer("GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False), ["cat2"]),
        (layer("Reshape", "rs", target_shape=[1, 1, 6]), ["gap"]), (_conv("cd", 2), ["rs"]),
        (layer("Flatten", "flat", data_format="channels_last"), ["cd"]), (_dense("out", 2), ["flat"])]

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(size=shape).astype("float32")

    arrays = {"c0": [weights((1, 1, 3, 4)), weights((4,))],
              "bn": [weights((4,)), weights((4,)), weights((4,)), np.abs(weights((4,))) + 0.5],
              **{n: [weights((1, 1, 4, 2)), weights((2,))] for n in ("ca", "cb", "cc")},
              "cd": [weights((1, 1, 6, 2)), weights((2,))], "out": [weights((2, 2)), weights((2,))]}
    return functional(entries, ["inp"], ["out"]), arrays


def test_passes_ask_for_readers_once_not_per_node(tmp_path: Path, rng: np.random.Generator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking `Graph.consumers` per node made the passes quadratic: 8000 Dropouts took 38 s in cleanup,
    2000 Dense+BN 34 s in BN folding. They now build the reader index once; the per-tensor APIs must stay
    unused by the pipeline, while every fold still happens and the numbers stay those of the unfolded graph."""
    config, arrays = _every_fold_model(rng)
    path = save_keras(tmp_path / "m.keras", config, arrays)
    before = converter.load(path, optimize=False)
    from converter.export.onnx import export

    reference = export(before.graph)
    before.artifact.close()

    def quadratic(*args: Any) -> None:
        raise AssertionError("a pass asked for one tensor's consumers")

    monkeypatch.setattr(Graph, "consumers", quadratic)
    monkeypatch.setattr(Graph, "replace_uses", quadratic)
    after = converter.load(path)
    after.artifact.close()
    kinds = [n.kind for n in after.graph.nodes]
    assert not {"BatchNormalization", "ZeroPadding2D", "Dropout", "Reshape"} & set(kinds), kinds
    assert kinds.count("Concatenate") == 1 and kinds.count("kconvert:Transpose") == 1  # at the input only
    monkeypatch.undo()
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(run_onnx(export(after.graph), x)[0], run_onnx(reference, x)[0])
