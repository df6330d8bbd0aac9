"""Live cross-checks of the core families (reshape, merge, BatchNormalization, Embedding,
TimeDistributed, a registered Lambda) against Keras 3 and tf_keras `model.predict`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_saved_model_matches

import converter
from converter.extensions import register_lambda, unregister_lambda

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

# (Keras module, file formats it writes): Keras 3 writes .keras and legacy .h5; tf_keras is Keras 2.
WRITERS = [("keras", "keras"), ("keras", "h5"), ("tf_keras", "h5")]


def _keras(module: str) -> Any:
    return pytest.importorskip(module)


def _randomize(keras: Any, model: Any, rng: np.random.Generator) -> None:
    for lay in model.layers:
        arrays = [rng.normal(size=w.shape).astype(w.dtype) * 0.5 for w in lay.get_weights()]
        if isinstance(getattr(lay, "layer", lay), keras.layers.BatchNormalization):
            arrays[-1] = rng.uniform(0.3, 2.0, size=arrays[-1].shape).astype("float32")  # a variance
        lay.set_weights(arrays)


def _core_model(keras: Any) -> Any:
    L = keras.layers
    a, b, c = L.Input((4, 6)), L.Input((4, 6)), L.Input((6,))
    x = L.TimeDistributed(L.Dense(5, activation="tanh"))(a)
    x = L.BatchNormalization(center=False, epsilon=0.01)(x)
    x = L.BatchNormalization(axis=1, scale=False)(x)
    x = L.Permute((2, 1))(L.Reshape((-1, 5))(L.RepeatVector(2)(L.Flatten()(x))))
    merged = [L.Add()([a, b]), L.Subtract()([a, b]), L.Multiply()([a, b, a]), L.Average()([a, b]),
              L.Maximum()([a, b]), L.Minimum()([a, b])]
    y = L.Concatenate(axis=-2)(merged)
    dots = [L.Dot(axes=(1, 1))([a, b]), L.Dot(axes=-1, normalize=True)([a, b]), L.Dot(axes=(2, 1))([a, c])]
    return keras.Model([a, b, c], [x, y, *dots])


def _conv_model(keras: Any) -> Any:
    L = keras.layers
    seq, image = L.Input((3, 8, 7, 2)), L.Input((2, 6, 5))
    x = L.TimeDistributed(L.Conv2D(4, 3, activation="relu"))(seq)
    x = L.TimeDistributed(L.Flatten())(L.TimeDistributed(L.BatchNormalization())(x))
    y = L.Conv2D(3, 2, data_format="channels_first")(image)
    y = L.Flatten(data_format="channels_first")(L.BatchNormalization(axis=1)(y))
    return keras.Model([seq, image], [x, y])


def _embedding_model(keras: Any) -> Any:
    L = keras.layers
    ids = L.Input((5,), dtype="int32")
    return keras.Model(ids, L.Dense(2)(L.Embedding(12, 3, mask_zero=True)(ids)))


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_reshape_merge_batchnorm_time_distributed(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(0)
    model = _core_model(keras)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.normal(size=(n, *s)).astype("float32")
                                                     for s in ((4, 6), (4, 6), (6,))])


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_time_distributed_conv_and_channels_first_flatten(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(1)
    model = _conv_model(keras)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.normal(size=(n, 3, 8, 7, 2)).astype("float32"),
                                                     rng.normal(size=(n, 2, 6, 5)).astype("float32")])


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_embedding(tmp_path: Path, module: str, fmt: str) -> None:
    keras, rng = _keras(module), np.random.default_rng(2)
    model = _embedding_model(keras)
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.integers(0, 12, size=(n, 5)).astype("int32")])


@pytest.fixture
def normalize_lambda() -> Iterator[None]:
    register_lambda("normalize", lambda b, xs, node: b.op("Sub", b.op("Div", xs[0], b.scalar(127.5)),
                                                          b.scalar(1.0)), layout_agnostic=True)
    yield
    unregister_lambda("normalize")


@pytest.mark.parametrize("module, fmt", WRITERS)
def test_registered_lambda(tmp_path: Path, module: str, fmt: str, normalize_lambda: None) -> None:
    keras, rng = _keras(module), np.random.default_rng(3)
    L = keras.layers
    image = L.Input((6, 6, 3))
    scaled = L.Lambda(lambda t: t / 127.5 - 1, name="normalize")(image)
    model = keras.Model(image, L.Flatten()(L.Conv2D(2, 3)(scaled)))
    _randomize(keras, model, rng)
    assert_saved_model_matches(tmp_path, model, fmt,
                               lambda n: [rng.uniform(0, 255, size=(n, 6, 6, 3)).astype("float32")])


def test_nested_model_with_dict_inputs_and_outputs(tmp_path: Path) -> None:
    """A model nested in another takes a dict of inputs by name (whatever the dict's order) and its dict of
    outputs is indexed as Keras flattens it, by sorted key (`zeta` is output 1 though declared first)."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    inner_in = {"x": L.Input((4,), name="x"), "y": L.Input((3,), name="y")}
    inner = keras.Model(inner_in, {"zeta": L.Dense(2, name="zeta")(inner_in["x"]),
                                   "alpha": L.Dense(5, name="alpha")(inner_in["y"])}, name="inner")
    outer_in = {"y": L.Input((3,), name="y"), "x": L.Input((4,), name="x")}
    parts = inner({"y": outer_in["y"], "x": outer_in["x"]})
    joined = L.Concatenate()([parts["zeta"], L.Dense(1)(parts["alpha"])])
    model = keras.Model(outer_in, L.Dense(3, name="head")(joined))
    rng = np.random.default_rng(3)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)).astype("float32"))
    path = tmp_path / "nested.keras"
    model.save(path)
    feed = {"x": rng.normal(size=(2, 4)).astype("float32"), "y": rng.normal(size=(2, 3)).astype("float32")}
    import onnxruntime as ort

    session = ort.InferenceSession(converter.convert(path).SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feed)
    np.testing.assert_allclose(got, np.asarray(model(feed)), rtol=1e-4, atol=1e-5)
