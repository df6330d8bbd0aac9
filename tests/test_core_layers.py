"""Dense and the Activation vocabulary, from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf)(x).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


NUMPY_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "log_softmax": lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True)),
    "hard_silu": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "log_sigmoid": lambda x: -_softplus(-x),
    "tanh_shrink": lambda x: x - np.tanh(x),
}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
@pytest.mark.parametrize("batch", [1, 3])
def test_dense_activation(tmp_path: Path, rng: np.random.Generator, fmt: str, activation: str, batch: int) -> None:
    kernel, bias = rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    config = sequential([layer("Dense", "dense", units=4, activation=activation, use_bias=True)], (5,))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"dense": [kernel, bias]})
    x = rng.normal(size=(batch, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, NUMPY_ACTIVATIONS[activation](x @ kernel + bias).astype("float32"))


@pytest.mark.parametrize("keras_version, slope", [("2.15.0", 0.2), ("3.15.1", 1 / 6)])
def test_hard_sigmoid_follows_the_file_keras_version(tmp_path: Path, rng: np.random.Generator,
                                                     keras_version: str, slope: float) -> None:
    config = sequential([layer("Activation", "act", activation="hard_sigmoid")], (7,))
    path = save_legacy_h5(tmp_path / "m.h5", config, {}, keras_version=keras_version)
    x = rng.normal(size=(2, 7)).astype("float32") * 4
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.clip(slope * x + 0.5, 0, 1))


def test_dense_on_rank3_input(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.normal(size=(3, 15)).astype("float32")
    config = sequential([layer("Dense", "dense", units=15, use_bias=False)], (5, 3))
    path = save_keras(tmp_path / "m.keras", config, {"dense": [kernel]})
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x @ kernel)


def test_dropout_is_removed(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.normal(size=(3, 2)).astype("float32")
    config = sequential([layer("Dropout", "drop", rate=0.5), layer("Dense", "dense", units=2, use_bias=False)], (3,))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [kernel]}))
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


@pytest.mark.parametrize("augmentation", ["RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"])
def test_random_augmentation_is_identity_at_inference(tmp_path: Path, rng: np.random.Generator,
                                                      augmentation: str) -> None:
    kernel = rng.normal(size=(3, 2)).astype("float32")
    config = sequential([layer(augmentation, "aug", factor=0.2), layer("Dense", "dense", units=2, use_bias=False)],
                        (4, 4, 3))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [kernel]}))
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    (y,) = run_onnx(model, x)
    assert_close(y, x @ kernel)
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_inference_identities_carry_their_own_masking_traits() -> None:
    """One configured handler per kind: Keras' supports_masking decides what each hands on."""
    from converter.layers.registry import LAYERS

    def traits(kind: str) -> tuple[bool, bool, bool]:
        handler = LAYERS.get(kind)
        assert handler is not None
        return handler.inference_identity, handler.passes_mask, handler.passes_mask_before_keras3

    for kind in ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"):
        assert traits(kind) == (True, True, False)
    for kind in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"):
        assert traits(kind) == (True, False, True)
    assert traits("RandomFlip") == (True, False, False)
