"""Live cross-checks of the breadth families (activation layers, Layer/Group/Unit normalisation,
preprocessing, attention, EinsumDense) against Keras 3 and tf_keras `model.predict`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_saved_model_matches

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

# (Keras module, file formats it writes): Keras 3 writes .keras and legacy .h5; tf_keras is Keras 2.
WRITERS = [("keras", "keras"), ("keras", "h5"), ("tf_keras", "h5")]


def _keras(module: str) -> Any:
    return pytest.importorskip(module)


def _randomize(keras: Any, model: Any, rng: np.random.Generator) -> None:
    for lay in model.layers:
        if not isinstance(lay, keras.layers.Normalization):  # its adapted statistics stay as adapted
            lay.set_weights([rng.normal(size=w.shape).astype(w.dtype) * 0.5 for w in lay.get_weights()])


def _activation_model(keras: Any, module: str) -> Any:
    L = keras.layers
    x = L.Input((4, 5))
    outs = [L.ReLU(max_value=3.0, negative_slope=0.2, threshold=0.5)(x), L.ReLU(max_value=6.0)(x),
            L.LeakyReLU()(x), L.PReLU(shared_axes=[1])(x), L.ELU(alpha=0.5)(x), L.Softmax(axis=[1, 2])(x),
            L.Softmax(axis=1)(x)]
    if module == "tf_keras":
        outs.append(L.ThresholdedReLU(theta=0.4)(x))
    return keras.Model(x, outs)


def _normalization_model(keras: Any) -> Any:
    L = keras.layers
    x = L.Input((5, 6, 8))
    outs = [L.LayerNormalization()(x), L.LayerNormalization(axis=[1, 3], center=False)(x),
            L.GroupNormalization(groups=4)(x), L.GroupNormalization(groups=5, axis=1)(x),
            L.UnitNormalization(axis=[1, 2])(x)]
    return keras.Model(x, outs)


def _preprocessing_model(keras: Any, rng: np.random.Generator) -> Any:
    L = keras.layers
    image = L.Input((10, 14, 3))
    norm = L.Normalization()
    norm.adapt(rng.uniform(0, 1, size=(8, 10, 14, 3)).astype("float32"))
    x = norm(L.Rescaling(1 / 255.0)(image))
    outs = [L.Resizing(7, 9)(x), L.Resizing(17, 23, interpolation="nearest")(x),
            L.Resizing(8, 8, interpolation="bicubic", crop_to_aspect_ratio=True)(x), L.CenterCrop(5, 9)(x),
            L.Conv2D(2, 3)(L.Resizing(6, 6)(L.Conv2D(4, 3)(x)))]
    return keras.Model(image, outs)


def _attention_model(keras: Any) -> Any:
    L = keras.layers
    q, v, qm, vm, m = (L.Input((4, 6)), L.Input((5, 6)), L.Input((4,), dtype="bool"), L.Input((5,), dtype="bool"),
                       L.Input((4, 5), dtype="bool"))
    q4, v4 = L.Input((2, 4, 6)), L.Input((3, 5, 6))
    outs = [L.Attention(use_scale=True, score_mode="concat")([q, v], use_causal_mask=True),
            L.Attention()([q, v], mask=[qm, vm]), L.AdditiveAttention()([q, v, v]),
            L.MultiHeadAttention(2, 3)(q, v),
            L.MultiHeadAttention(2, 3)(q, q, use_causal_mask=True),
            *L.MultiHeadAttention(3, 2, value_dim=4, output_shape=7)(query=q, value=v, key=v, attention_mask=m,
                                                                     return_attention_scores=True),
            L.MultiHeadAttention(2, 3, attention_axes=(1, 2))(q4, v4),
            L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", activation="relu")(q),
            L.EinsumDense("abc,cbd->ad", output_shape=7, bias_axes="d")(q)]
    return keras.Model([q, v, qm, vm, m, q4, v4], outs)


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_activation_layers(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(0)
    model = _activation_model(keras, module)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [(rng.normal(size=(n, 4, 5)) * 3).astype("float32")])


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_layer_group_unit_normalization(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(1)
    model = _normalization_model(keras)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt,
                               lambda n: [(rng.normal(size=(n, 5, 6, 8)) * 2 + 1).astype("float32")])


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_preprocessing(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(2)
    model = _preprocessing_model(keras, rng)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt,
                               lambda n: [rng.uniform(0, 255, size=(n, 10, 14, 3)).astype("float32")])


def _attention_inputs(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    masks = [rng.uniform(size=(n, *s)) > 0.3 for s in ((4,), (5,), (4, 5))]
    masks[1][:, 0] = True
    masks[2][..., 0] = True
    q, v = rng.normal(size=(n, 4, 6)).astype("float32"), rng.normal(size=(n, 5, 6)).astype("float32")
    return [q, v, *masks, rng.normal(size=(n, 2, 4, 6)).astype("float32"),
            rng.normal(size=(n, 3, 5, 6)).astype("float32")]


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_attention_and_einsum_dense(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(3)
    model = _attention_model(keras)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: _attention_inputs(rng, n))
