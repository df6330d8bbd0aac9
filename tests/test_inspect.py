"""`kconvert inspect` / converter.inspect: every layer listed (unsupported ones marked), trainable and
non-trainable counts, counts from the config when the file has no weights (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from kmodels import input_layer, keras_tensor, layer, save_keras, save_legacy_h5, sequential

import converter
import converter.errors as converter_errors
from application.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "model.json").is_file() and (p / "model.keras").is_file())


def _bn_model(tmp_path: Path, save: object = save_keras, trainable: bool = True) -> Path:
    """Dense(4 -> 3), BatchNormalization(3) (moving stats: non-trainable), an unknown class storing 6 values,
    Dense(3 -> 2)."""
    rng = np.random.default_rng(0)
    config = sequential([layer("Dense", "d1", units=3), layer("BatchNormalization", "bn", trainable=trainable),
                         layer("Mystery", "odd"), layer("Dense", "d2", units=2)], (4,))
    weights = {"d1": [rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32")],
               "bn": [np.ones(3, "float32")] * 4, "odd": [np.ones((2, 3), "float32")],
               "d2": [rng.normal(size=(3, 2)).astype("float32"), np.zeros(2, "float32")]}
    return save(tmp_path / ("m.keras" if save is save_keras else "m.h5"), config, weights)  # type: ignore[operator]


@pytest.mark.parametrize("save", [save_keras, save_legacy_h5])
def test_unsupported_layers_are_listed_and_marked(tmp_path: Path, save: object) -> None:
    summary = converter.inspect(_bn_model(tmp_path, save))
    rows = {row["name"]: row for row in summary["layers"]}
    assert list(rows) == ["d1", "bn", "odd", "d2"]
    assert rows["odd"]["supported"] is False and rows["odd"]["params"] == 6  # the file's arrays, counted
    assert rows["odd"]["trainable_params"] is None and rows["odd"]["output_shape"] == "?"
    assert "not a layer class kconvert knows" in rows["odd"]["reason"]
    assert rows["d1"] == {**rows["d1"], "params": 15, "trainable_params": 15, "non_trainable_params": 0,
                          "supported": True, "output_shape": "(None, 3)"}
    assert (rows["bn"]["trainable_params"], rows["bn"]["non_trainable_params"]) == (6, 6)
    assert rows["d2"]["params"] == 8  # stored weights: known even after the unsupported layer
    assert rows["d2"]["output_shape"] == "?"  # its input's shape is the unknown layer's output
    assert (summary["total_params"], summary["trainable_params"], summary["non_trainable_params"]) == (41, 29, 6)
    assert (summary["params_unknown"], summary["split_unknown"]) == (0, 1)
    assert summary["unsupported"] == [{"name": "odd", "class_name": "Mystery", "reason": rows["odd"]["reason"]}]


def test_a_frozen_layer_counts_as_non_trainable(tmp_path: Path) -> None:
    rows = {row["name"]: row for row in converter.inspect(_bn_model(tmp_path, trainable=False))["layers"]}
    assert (rows["bn"]["trainable_params"], rows["bn"]["non_trainable_params"]) == (0, 12)


def test_cli_lists_an_unsupported_model_in_full(tmp_path: Path) -> None:
    model = _bn_model(tmp_path)
    text = CliRunner().invoke(main, ["inspect", str(model)])
    assert text.exit_code == 0, text.output
    assert "odd (Mystery) ✗ unsupported" in text.output and "Total params: 41" in text.output
    assert "Trainable params: 29" in text.output and "Non-trainable params: 6" in text.output
    as_json = CliRunner().invoke(main, ["inspect", str(model), "--json"])
    summary = json.loads(as_json.output)
    assert as_json.exit_code == 0 and [r["supported"] for r in summary["layers"]] == [True, True, False, True]
    converted = CliRunner().invoke(main, [str(model), "--json"])  # converting it still refuses, exit 3
    assert converted.exit_code == 3 and "'odd' (Mystery)" in json.loads(converted.output)["error"]["message"]


@pytest.mark.parametrize("case", CASES)
def test_architecture_only_json_counts_from_the_config(case: str) -> None:
    with_weights = converter.inspect(FIXTURES / case / "model.keras")
    config_only = converter.inspect(FIXTURES / case / "model.json")
    assert not config_only["weights"] and with_weights["weights"]
    assert with_weights["params_unknown"] == 0 == config_only["params_unknown"]
    for key in ("total_params", "trainable_params", "non_trainable_params"):
        assert config_only[key] == with_weights[key], key
    assert [r["params"] for r in config_only["layers"]] == [r["params"] for r in with_weights["layers"]]


def test_unknown_sizes_are_question_marks(tmp_path: Path) -> None:
    """Without weights: Dense on an input whose feature size is unknown (its kernel's size cannot be known),
    and an unknown class (no rule says what it holds)."""
    config = sequential([layer("Dense", "d", units=2), layer("Mystery", "odd")], (None,))
    path = tmp_path / "model.json"
    path.write_text(json.dumps(config))
    summary = converter.inspect(path)
    assert [row["params"] for row in summary["layers"]] == [None, None] and summary["params_unknown"] == 2
    text = CliRunner().invoke(main, ["inspect", str(path)])
    assert text.exit_code == 0 and "?" in text.output and "from the config" in text.output


def test_inspect_takes_extensions(tmp_path: Path) -> None:
    model = _bn_model(tmp_path)
    handlers = tmp_path / "odd.py"
    handlers.write_text("from converter.extensions import register_layer\n"
                        "register_layer('Mystery', lambda b, xs, node: b.op('Neg', xs[0]))\n")
    result = CliRunner().invoke(main, ["inspect", str(model), "--extension", str(handlers), "--json"])
    summary = json.loads(result.output)
    assert result.exit_code == 0 and summary["unsupported"] == [] and summary["params_unknown"] == 0
    assert summary["layers"][3]["output_shape"] == "(None, 2)"


def test_an_unsupported_layer_read_at_several_outputs(tmp_path: Path) -> None:
    """A functional model reading outputs 0 and 1 of an unknown layer (a tf.split saved as TFOpLambda)."""
    split = {**layer("Splitter", "split"), "inbound_nodes": [{"args": [keras_tensor("x")], "kwargs": {}}]}
    add = {**layer("Add", "add"), "inbound_nodes": [{"args": [[keras_tensor("split", 0, 0),
                                                                keras_tensor("split", 0, 1)]], "kwargs": {}}]}
    config = {"class_name": "Functional", "config": {
        "name": "f", "layers": [{**input_layer("x", (4,)), "inbound_nodes": []}, split, add],
        "input_layers": [["x", 0, 0]], "output_layers": [["add", 0, 0]]}}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(config))
    summary = converter.inspect(path)
    assert [r["name"] for r in summary["layers"]] == ["split", "add"]
    assert summary["layers"][0]["output_shape"] == "?, ?" and summary["layers"][0]["supported"] is False
    with pytest.raises(converter_errors.UnsupportedLayerError, match="'split' \\(Splitter\\)"):
        converter.convert(path)
