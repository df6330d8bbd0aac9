"""Activation layers (ReLU, LeakyReLU, PReLU, ELU, Softmax, ThresholdedReLU) from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError, WeightsError
from converter.layers.activations import (
    HARD_SIGMOID_KERAS2,
    HARD_SIGMOID_SLOPE,
    keras_activation_name,
    parse_activation,
)
from converter.layers.registry import LAYERS
from converter.layers.spec import Config, ParseContext

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _keras_relu(x: np.ndarray, slope: float = 0.0, max_value: float | None = None,
                threshold: float = 0.0) -> np.ndarray:
    y = np.where(x > threshold, x, 0.0) if threshold else np.maximum(x, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, max_value)
    return y - slope * np.maximum(threshold - x, 0.0)


def _softmax(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    return e / e.sum(axis=axes, keepdims=True)


CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "relu": ({}, lambda x: np.maximum(x, 0)),
    "relu_max": ({"max_value": 2.5}, lambda x: np.clip(x, 0, 2.5)),
    "relu_threshold": ({"threshold": 0.7}, lambda x: _keras_relu(x, threshold=0.7)),
    "relu_slope": ({"negative_slope": 0.1}, lambda x: np.where(x > 0, x, 0.1 * x)),
    "relu_all": ({"max_value": 3.0, "negative_slope": 0.2, "threshold": 0.5},
                 lambda x: _keras_relu(x, 0.2, 3.0, 0.5)),
}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_relu(tmp_path: Path, rng: np.random.Generator, fmt: str, case: str, batch: int) -> None:
    config, reference = CASES[case]
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer("ReLU", "relu", **config)], (4, 5)), {})
    x = (rng.normal(size=(batch, 4, 5)) * 3).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, reference(x).astype("float32"))


@pytest.mark.parametrize("config, slope", [({}, 0.3), ({"negative_slope": 0.05}, 0.05), ({"alpha": 0.1}, 0.1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_leaky_relu_default_and_keras2_alpha(tmp_path: Path, rng: np.random.Generator, config: dict[str, Any],
                                             slope: float, batch: int) -> None:
    path = save_legacy_h5(tmp_path / "m.h5", sequential([layer("LeakyReLU", "leaky", **config)], (6,)), {})
    x = rng.normal(size=(batch, 6)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.where(x > 0, x, slope * x))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_elu_and_thresholded_relu(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    config = sequential([layer("ELU", "elu", alpha=0.5), layer("ThresholdedReLU", "thr", theta=0.2)], (7,))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {})
    x = rng.normal(size=(batch, 7)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    elu = np.where(x > 0, x, 0.5 * (np.exp(x) - 1))
    assert_close(y, np.where(elu > 0.2, elu, 0).astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("shared_axes, alpha_shape", [(None, (4, 5)), ([1], (1, 5))])
@pytest.mark.parametrize("batch", [1, 3])
def test_prelu(tmp_path: Path, rng: np.random.Generator, fmt: str, shared_axes: Any, alpha_shape: tuple[int, ...],
               batch: int) -> None:
    alpha = rng.normal(size=alpha_shape).astype("float32")
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer("PReLU", "prelu", shared_axes=shared_axes)], (4, 5)),
                       {"prelu": [alpha]})
    x = rng.normal(size=(batch, 4, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.maximum(x, 0) - alpha * np.maximum(-x, 0))


def test_prelu_alpha_of_the_wrong_shape_is_a_weights_error(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("PReLU", "prelu")], (4, 5)),
                      {"prelu": [np.zeros((5, 4), "float32")]})
    with pytest.raises(WeightsError, match="alpha"):
        converter.convert(path)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("axis, axes", [(-1, (2,)), (1, (1,)), ([1, 2], (1, 2))])
@pytest.mark.parametrize("opset", [13, 18])
def test_softmax_axes(tmp_path: Path, rng: np.random.Generator, fmt: str, axis: Any, axes: tuple[int, ...],
                      opset: int) -> None:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer("Softmax", "softmax", axis=axis)], (4, 5)), {})
    x = (rng.normal(size=(3, 4, 5)) * 3).astype("float32")
    (y,) = run_onnx(converter.convert(path, opset=opset), x)
    assert_close(y, _softmax(x, axes))


@pytest.mark.parametrize("keras_version, masked_value", [("3.15.1", 0.0), ("2.15.0", None)])
def test_softmax_with_mask_tensor(tmp_path: Path, rng: np.random.Generator, keras_version: str,
                                  masked_value: float | None) -> None:
    softmax = layer("Softmax", "softmax")
    config = functional([(input_layer("x", (2, 4)), []), (input_layer("m", (2, 4), dtype="bool"), [])],
                        ["x", "m"], ["softmax"])
    softmax["inbound_nodes"] = [{"args": [keras_tensor("x")], "kwargs": {"mask": keras_tensor("m")}}]
    config["config"]["layers"].append(softmax)
    path = save_legacy_h5(tmp_path / "m.h5", config, {}, keras_version=keras_version)
    x = rng.normal(size=(3, 2, 4)).astype("float32")
    mask = np.array([[True, False, True, True], [False] * 4], bool)[None].repeat(3, axis=0)
    (y,) = run_onnx(converter.convert(path), x, mask)
    assert_close(y[:, 0], _softmax(np.where(mask[:, 0], x[:, 0], -1e9), (1,)))
    # A fully masked row: Keras 3 zeroes it, Keras 2 leaves the uniform softmax of equal penalties.
    assert_close(y[:, 1], np.full((3, 4), 0.25 if masked_value is None else masked_value, "float32"))


# --- typed specs: parsed once, with the Keras major's meaning decided there ---------------------------


def _parse(kind: str, config: dict[str, Any], keras_major: int = 3) -> Any:
    handler = LAYERS.get(kind)
    assert handler is not None
    return handler.parse(Config(config, ParseContext(kind, "l", keras_major)))


@pytest.mark.parametrize("keras_major", [2, 3])
def test_hard_sigmoid_is_decided_by_the_parse(keras_major: int) -> None:
    name = parse_activation(Config({"activation": "hard_sigmoid"}, ParseContext("Dense", "d", keras_major)))
    assert name == ("hard_sigmoid" if keras_major >= 3 else HARD_SIGMOID_KERAS2)
    assert keras_activation_name(name) == "hard_sigmoid"
    assert HARD_SIGMOID_SLOPE[name] == (1.0 / 6.0 if keras_major >= 3 else 0.2)


def test_decided_names_are_not_config_names() -> None:
    with pytest.raises(UnsupportedLayerError, match="does not know"):
        parse_activation(Config({"activation": HARD_SIGMOID_KERAS2}, ParseContext("Dense", "d", 2)))


def test_activation_layer_specs() -> None:
    assert _parse("ReLU", {"max_value": 6}).max_value == 6.0
    assert _parse("LeakyReLU", {}).negative_slope == 0.3
    assert _parse("PReLU", {"shared_axes": 1}).shared_axes == (1,)
    assert _parse("Softmax", {"axis": [1, 2]}).axis == (1, 2)
    assert _parse("Softmax", {}, keras_major=2).zero_masked is False
    assert _parse("Activation", {"activation": "hard_sigmoid"}, keras_major=2).activation == HARD_SIGMOID_KERAS2


def test_mask_traits() -> None:
    for kind in ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"):
        assert LAYERS.get(kind).passes_mask, kind  # type: ignore[union-attr]
    assert not LAYERS.get("ThresholdedReLU").passes_mask  # type: ignore[union-attr]
