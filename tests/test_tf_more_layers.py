"""Live cross-checks of the newer layers (RMSNormalization, adaptive pooling, GroupQueryAttention,
ReversibleEmbedding, SpectralNormalization, categorical preprocessing, AutoContrast, image identities,
LocallyConnected) against Keras 3 and tf_keras `model.predict`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_saved_model_matches

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

FORMATS = ["keras", "h5"]


def _randomize(model: Any, rng: np.random.Generator) -> None:
    for lay in model.layers:
        lay.set_weights([rng.normal(size=w.shape).astype(w.dtype) * 0.5 for w in lay.get_weights()])


@pytest.mark.parametrize("fmt", FORMATS)
def test_norm_pool_embedding(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    L = keras.layers
    rng = np.random.default_rng(0)
    seq, image, volume, ids = L.Input((7, 5)), L.Input((9, 7, 3)), L.Input((5, 6, 7, 2)), L.Input((6,), dtype="int32")
    embedding = L.ReversibleEmbedding(11, 5, tie_weights=False, logit_soft_cap=2.0)
    tied = L.ReversibleEmbedding(11, 5)
    outs = [L.RMSNormalization()(seq), L.RMSNormalization(axis=[1, 2], epsilon=1e-3)(seq),
            L.AdaptiveAveragePooling1D(3)(seq), L.AdaptiveMaxPooling1D(11)(seq),
            L.AdaptiveAveragePooling2D((4, 3))(image), L.AdaptiveMaxPooling2D(5)(image),
            L.AdaptiveAveragePooling2D(3, data_format="channels_first")(image),
            L.AdaptiveAveragePooling3D((2, 4, 3))(volume), L.AdaptiveMaxPooling3D(3)(volume),
            embedding(embedding(ids), reverse=True), tied(tied(ids), reverse=True),
            L.SpectralNormalization(L.Dense(4))(seq),
            L.SpectralNormalization(L.Conv2D(2, 3), power_iterations=2)(image)]
    model = keras.Model([seq, image, volume, ids], outs)
    _randomize(model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.normal(size=(n, 7, 5)).astype("float32"),
                                              rng.normal(size=(n, 9, 7, 3)).astype("float32"),
                                              rng.normal(size=(n, 5, 6, 7, 2)).astype("float32"),
                                              rng.integers(0, 11, size=(n, 6)).astype("int32")])


@pytest.mark.parametrize("fmt", FORMATS)
def test_group_query_attention(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    L = keras.layers
    rng = np.random.default_rng(1)
    q, v, mask = L.Input((5, 8)), L.Input((6, 8)), L.Input((5, 6), dtype="bool")
    plain = L.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)
    gated = L.GroupQueryAttention(head_dim=3, num_query_heads=3, num_key_value_heads=1, use_gate=True,
                                  use_bias=False)
    windowed = L.GroupQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=2, sliding_window=2)
    scored, scores = L.GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2)(
        q, v, attention_mask=mask, return_attention_scores=True)
    outs = [plain(q, v), gated(q, v, v, use_causal_mask=True), windowed(q, q, use_causal_mask=True),
            plain(q, v, attention_mask=mask), scored, scores]
    model = keras.Model([q, v, mask], outs)
    _randomize(model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.normal(size=(n, 5, 8)).astype("float32"),
                                              rng.normal(size=(n, 6, 8)).astype("float32"),
                                              rng.uniform(size=(n, 5, 6)) > 0.3])


@pytest.mark.parametrize("fmt", FORMATS)
def test_categorical_and_image(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    L = keras.layers
    rng = np.random.default_rng(2)
    tokens, values, image = L.Input((4,), dtype="int64"), L.Input((4,)), L.Input((6, 5, 3))
    outs = [L.CategoryEncoding(6, output_mode="multi_hot")(tokens), L.CategoryEncoding(6, output_mode="count")(tokens),
            L.CategoryEncoding(6, output_mode="one_hot")(tokens),
            L.Discretization(bin_boundaries=[-0.5, 0.0, 0.7])(values),
            L.Discretization(bin_boundaries=[-0.5, 0.0, 0.7], output_mode="count")(values),
            L.IntegerLookup(vocabulary=[3, 1, 5, 9])(tokens),
            L.IntegerLookup(vocabulary=[3, 1, 5], mask_token=0, num_oov_indices=2)(tokens),
            L.IntegerLookup(vocabulary=[3, 1, 5], mask_token=0, output_mode="multi_hot")(tokens),
            L.IntegerLookup(vocabulary=[3, 1, 5], num_oov_indices=3, output_mode="count")(tokens),
            L.AutoContrast()(image), L.AutoContrast(value_range=(-1, 1))(image),
            L.MaxNumBoundingBoxes(3)(L.Rescaling(1.0)(image))]
    if fmt == "keras":  # Keras 3 cannot write Solarization's config to .h5 (it deep-copies a module)
        outs.append(L.Solarization(addition_factor=0.5)(L.Rescaling(2.0)(image)))
    model = keras.Model([tokens, values, image], outs)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.integers(0, 9, size=(n, 4)).astype("int64"),
                                              rng.normal(size=(n, 4)).astype("float32"),
                                              rng.uniform(-1, 1, size=(n, 6, 5, 3)).astype("float32")])


def test_tf_keras_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tf_keras' SpectralNormalization builds `tf.keras.layers.InputSpec`s, which are tf_keras' own only
    # when TensorFlow resolves tf.keras to tf_keras.
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    keras = pytest.importorskip("tf_keras")
    L = keras.layers
    rng = np.random.default_rng(3)
    seq, image, tokens = L.Input((8, 3)), L.Input((7, 6, 2)), L.Input((4,), dtype="int64")
    outs = [L.LocallyConnected1D(4, 3, strides=2, implementation=m, padding="valid" if m == 1 else "same")(seq)
            for m in (1, 2, 3)]
    outs += [L.LocallyConnected2D(3, (3, 2), strides=(2, 1), implementation=m,
                                  padding="valid" if m == 1 else "same")(image) for m in (1, 2, 3)]
    outs += [L.LocallyConnected2D(2, 2, data_format="channels_first", implementation=m, activation="tanh")(image)
             for m in (1, 2, 3)]
    outs += [L.LocallyConnected1D(2, 2, data_format="channels_first", implementation=m)(seq) for m in (1, 2, 3)]
    outs += [L.SpectralNormalization(L.Dense(3))(seq), L.CategoryEncoding(6, output_mode="count")(tokens),
             L.Discretization(bin_boundaries=[0.0, 1.0])(seq),
             L.IntegerLookup(vocabulary=[3, 1, 5], mask_token=0, output_mode="multi_hot")(tokens)]
    model = keras.Model([seq, image, tokens], outs)
    for lay in model.layers:
        lay.set_weights([rng.normal(size=w.shape).astype(w.dtype) * 0.5 for w in lay.get_weights()])
    assert_saved_model_matches(tmp_path, model, "h5", lambda n: [rng.normal(size=(n, 8, 3)).astype("float32"),
                                               rng.normal(size=(n, 7, 6, 2)).astype("float32"),
                                               rng.integers(0, 6, size=(n, 4)).astype("int64")])
