"""A custom Keras layer end to end: saved by Keras 3 (.keras, .h5) and tf_keras (.h5), converted with
--extension, checked against Keras with --check --custom-objects and verify --against; and inspect's
parameter counts against Keras' own (count_params, trainable_weights)."""

from __future__ import annotations

import json
import os
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
from runtime.user_code import run_user_file

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

WRITERS = [("keras", "keras"), ("keras", "h5"), ("tf_keras", "h5")]
LAYERS_SOURCE = '''
import {module} as keras


@keras.saving.register_keras_serializable(package="my")
class Scale(keras.layers.Layer):
    """Multiplies each feature by a learned weight."""

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


class Shift(keras.layers.Layer):
    """Not registered: Keras saves it by its class name."""

    def build(self, input_shape):
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.beta
'''
HANDLERS = '''
from converter.extensions import register_layer


@register_layer("{scale}", weights=("gamma",), layout_agnostic=True)
def scale(b, inputs, node):
    return b.op("Mul", inputs[0], b.weight("gamma"))


@register_layer("Shift", weights=("beta",), layout_agnostic=True)
def shift(b, inputs, node):
    return b.op("Add", inputs[0], b.weight("beta"))
'''


def _saved_model(tmp_path: Path, module: str, fmt: str, rng: np.random.Generator) -> tuple[Path, Path, Any]:
    """The model file, the custom-objects file, and the Keras model."""
    keras = pytest.importorskip(module)
    objects = tmp_path / "my_layers.py"
    objects.write_text(LAYERS_SOURCE.format(module=module))
    custom = run_user_file(objects, "--custom-objects")
    inputs = keras.Input((5,))
    x = custom.Shift()(custom.Scale()(keras.layers.Dense(4)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    for layer in model.layers:
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    path = tmp_path / f"model.{fmt}"
    model.save(str(path))
    return path, objects, model


@pytest.mark.parametrize("module, fmt", WRITERS)
@pytest.mark.parametrize("scale_name", ["Scale", "my>Scale"])
def test_custom_layer_converts_and_checks_against_keras(tmp_path: Path, rng: np.random.Generator, module: str,
                                                        fmt: str, scale_name: str) -> None:
    path, objects, model = _saved_model(tmp_path, module, fmt, rng)
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS.format(scale=scale_name))
    output = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, [str(path), "-o", str(output), "--extension", str(handlers), "--check",
                                       "--custom-objects", str(objects), "--json"])
    assert result.exit_code == 0, result.output
    check = json.loads(result.output)["check"]
    assert check["ok"] and check["rtol"] == 1e-4 and check["atol"] == 1e-5
    x = rng.normal(size=(3, 5)).astype("float32")
    assert_close(run_onnx(onnx.load(str(output)), x)[0], np.asarray(model(x)))
    verified = CliRunner().invoke(main, ["verify", str(output), "--against", str(path), "--extension", str(handlers),
                                         "--custom-objects", str(objects), "--json"])
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_check_without_custom_objects_says_keras_cannot_load_it(tmp_path: Path, rng: np.random.Generator,
                                                                module: str, fmt: str) -> None:
    path, _, _ = _saved_model(tmp_path, module, fmt, rng)
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS.format(scale="Scale"))
    # A fresh Keras knows no `my>Scale`: simulate it by forgetting this process's registrations.
    keras = pytest.importorskip(module)
    registry = keras.saving.get_custom_objects()
    saved = dict(registry)
    registry.clear()
    try:
        result = CliRunner().invoke(main, [str(path), "--extension", str(handlers), "--check"])
    finally:
        registry.update(saved)
    assert result.exit_code == 2 and "could not load" in result.stderr and "Traceback" not in result.stderr


def _counted_model(keras: Any) -> Any:
    L = keras.layers
    inputs = L.Input((6, 6, 3))
    x = L.Conv2D(4, 3, use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    frozen = L.Conv2D(2, 1)
    frozen.trainable = False
    x = frozen(L.ReLU()(x))
    x = L.TimeDistributed(L.Dense(3))(L.Reshape((16, 2))(x))
    x = L.Bidirectional(L.LSTM(2))(x)
    return keras.Model(inputs, L.Dense(2)(L.BatchNormalization(scale=False)(x)))


def _frozen_base_model(keras: Any) -> Any:
    """Transfer learning: a frozen base model (BatchNormalization inside) under a trainable head."""
    L = keras.layers
    inner_input = L.Input((4,))
    base = keras.Model(inner_input, L.BatchNormalization()(L.Dense(3)(inner_input)), name="base")
    base.trainable = False
    inputs = L.Input((4,))
    return keras.Model(inputs, L.Dense(2)(base(inputs)))


@pytest.mark.parametrize("module, fmt", WRITERS)
@pytest.mark.parametrize("build", [_counted_model, _frozen_base_model])
def test_inspect_counts_match_keras(tmp_path: Path, module: str, fmt: str, build: Any) -> None:
    keras = pytest.importorskip(module)
    model = build(keras)
    path = tmp_path / f"model.{fmt}"
    model.save(str(path))
    (tmp_path / "model.json").write_text(model.to_json())
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert trainable + non_trainable == model.count_params()
    for summary in (converter.inspect(path), converter.inspect(tmp_path / "model.json")):
        assert summary["params_unknown"] == 0
        assert (summary["total_params"], summary["trainable_params"], summary["non_trainable_params"]) == \
            (model.count_params(), trainable, non_trainable)


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_inspect_without_handlers_lists_and_counts_the_custom_layers(tmp_path: Path, rng: np.random.Generator,
                                                                     module: str, fmt: str) -> None:
    path, _, model = _saved_model(tmp_path, module, fmt, rng)
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    summary = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert sorted(e["class_name"].rsplit(">", 1)[-1] for e in summary["unsupported"]) == ["Scale", "Shift"]
    assert summary["total_params"] == model.count_params() and summary["params_unknown"] == 0
    assert summary["split_unknown"] == 2


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("case", ["small_cnn", "lstm_stack", "time_distributed", "nested", "embedding", "gru"])
@pytest.mark.parametrize("module, name", [("keras", "model.keras"), ("tf_keras", "model_k2.h5")])
def test_inspect_counts_of_fixtures_match_keras(case: str, module: str, name: str) -> None:
    keras = pytest.importorskip(module)
    path = FIXTURES / case / name
    model = keras.models.load_model(str(path), compile=False)
    summary = converter.inspect(path)
    assert summary["total_params"] == model.count_params()
    assert summary["trainable_params"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert summary["non_trainable_params"] == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
