"""Keras' intermediate values for localisation (runtime/reference.py layer_outputs / layer_inbound), on
Keras 3 and tf_keras: Functional and Sequential models with Conv+BatchNormalization, a masked
Bidirectional LSTM, TimeDistributed, a shared layer, a nested model and a layer with several outputs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from converter.errors import FormatError
from runtime import reference

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
KERASES = ["keras", "tf_keras"]
RTOL, ATOL = 1e-5, 1e-5


def _keras(module: str) -> Any:
    pytest.importorskip("tensorflow")
    return reference._import_keras3() if module == "keras" else reference._import_tf_keras()


def _randomize(keras: Any, model: Any, seed: int = 0) -> None:
    """Random weights (BatchNormalization's variance positive), so no layer is an identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        arrays = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            arrays[-1] = rng.uniform(0.5, 2.0, size=arrays[-1].shape).astype("float32")
        layer.set_weights(arrays)


def _cnn(keras: Any) -> Any:
    L = keras.layers
    image = L.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(image)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(image, L.Dense(2, name="head")(x), name="cnn")
    _randomize(keras, model)
    return model


def _masked_bilstm(keras: Any) -> Any:
    L = keras.layers
    seq = L.Input((6, 3), name="seq")
    x = L.Masking(0.0, name="mask")(seq)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bilstm")(x)
    x = L.TimeDistributed(L.Dense(2), name="td")(x)
    model = keras.Model(seq, x, name="rnn")
    _randomize(keras, model)
    return model


def _sequence(seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(3, 6, 3)).astype("float32")
    x[0, 4:] = 0.0  # masked steps: the LSTM must skip them exactly as in the whole model
    x[2, 2:] = 0.0
    return x


def _image() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("module", KERASES)
def test_the_last_layer_is_the_models_output(module: str) -> None:
    keras = _keras(module)
    for model, x, last in ((_cnn(keras), _image(), "head"), (_masked_bilstm(keras), _sequence(), "td")):
        (got,) = reference.layer_outputs(model, [x], [last])[last]
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("module", KERASES)
def test_intermediate_values_are_the_layers_own(module: str) -> None:
    """BatchNormalization's output is the layer applied (inference mode) to the convolution's output."""
    keras = _keras(module)
    model = _cnn(keras)
    values = reference.layer_outputs(model, [_image()], ["conv", "bn", "image"])
    (conv,), (bn,), (image,) = values["conv"], values["bn"], values["image"]
    np.testing.assert_array_equal(image, _image())
    expected = np.asarray(model.get_layer("bn")(conv, training=False))
    np.testing.assert_allclose(bn, expected, rtol=RTOL, atol=ATOL)
    assert not np.allclose(bn, conv)


@pytest.mark.parametrize("module", KERASES)
def test_a_masked_bidirectional_lstm_keeps_its_mask(module: str) -> None:
    """The sub-model carries Masking's mask into the LSTM: its output is the whole model's, not an unmasked
    LSTM's over the zero steps."""
    keras = _keras(module)
    model = _masked_bilstm(keras)
    (lstm,) = reference.layer_outputs(model, [_sequence()], ["bilstm"])["bilstm"]
    np.testing.assert_allclose(np.asarray(model.get_layer("td")(lstm)), np.asarray(model(_sequence())),
                               rtol=RTOL, atol=ATOL)
    unmasked = np.asarray(model.get_layer("bilstm")(_sequence()))
    assert not np.allclose(lstm, unmasked, atol=1e-4)


@pytest.mark.parametrize("module", KERASES)
def test_a_sequential_model_built_or_not(module: str) -> None:
    keras = _keras(module)
    L = keras.layers
    layers = [L.Conv1D(3, 2, name="c"), L.BatchNormalization(name="b"), L.TimeDistributed(L.Dense(2), name="t")]
    unbuilt = keras.Sequential(layers, name="unbuilt")  # no input shape: built by its first call
    x = np.random.default_rng(3).normal(size=(2, 5, 4)).astype("float32")
    _ = unbuilt(x)
    _randomize(keras, unbuilt)
    built = keras.Sequential([L.Input((5, 4)), L.Conv1D(3, 2, name="c2"), L.Dense(2, name="d2")])
    _randomize(keras, built, seed=4)
    for model, last in ((unbuilt, "t"), (built, "d2")):
        (got,) = reference.layer_outputs(model, [x], [last])[last]
        np.testing.assert_allclose(got, np.asarray(model(x)), rtol=RTOL, atol=ATOL)


def _shared_nested_multi(keras: Any) -> Any:
    L = keras.layers
    inner_in = L.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3, activation="tanh")(inner_in), name="inner")
    a, b = L.Input((4,), name="a"), L.Input((4,), name="b")
    shared = L.Dense(4, name="shared")
    first, second = shared(a), shared(b)  # the first call is on `a`
    nested = inner(second)
    seq = L.Reshape((3, 1), name="reshape")(nested)
    _, h, c = L.LSTM(2, return_state=True, name="lstm")(seq)
    model = keras.Model([a, b], [L.Concatenate(name="cat")([first, h, c])], name="mixed")
    _randomize(keras, model, seed=5)
    return model


@pytest.mark.parametrize("module", KERASES)
def test_shared_nested_and_multi_output_layers(module: str) -> None:
    keras = _keras(module)
    model = _shared_nested_multi(keras)
    rng = np.random.default_rng(6)
    a, b = (rng.normal(size=(2, 4)).astype("float32") for _ in range(2))
    values = reference.layer_outputs(model, [a, b], ["shared", "inner", "lstm", "cat"])
    shared, inner = model.get_layer("shared"), model.get_layer("inner")
    np.testing.assert_allclose(values["shared"][0], np.asarray(shared(a)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(values["inner"][0], np.asarray(inner(shared(b))), rtol=RTOL, atol=ATOL)
    assert len(values["lstm"]) == 3  # the sequence's last step, h and c
    np.testing.assert_allclose(values["lstm"][0], values["lstm"][1], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(values["cat"][0], np.asarray(model([a, b])), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("module", KERASES)
def test_inbound_layers_of_the_first_call(module: str) -> None:
    keras = _keras(module)
    inbound = reference.layer_inbound(_shared_nested_multi(keras))
    assert inbound["shared"] == ["a"] and inbound["inner"] == ["shared"]
    assert inbound["cat"] == ["shared", "lstm", "lstm"] and inbound["reshape"] == ["inner"]
    assert reference.layer_inbound(_cnn(keras))["bn"] == ["conv"]


@pytest.mark.parametrize("module", KERASES)
def test_a_layer_the_model_lacks_is_a_format_error(module: str) -> None:
    keras = _keras(module)
    with pytest.raises(FormatError, match="no top-level layer 'nope'"):
        reference.layer_outputs(_cnn(keras), [_image()], ["conv", "nope"])


def test_the_backend_is_named() -> None:
    keras = _keras("keras")
    named = reference.reference_backend(_cnn(keras))
    assert (named.keras, named.backend) == ("keras", keras.backend.backend())
    assert named.describe().startswith(f"Keras {keras.__version__} on ")
    assert reference.reference_backend(_cnn(_keras("tf_keras"))).to_dict()["keras"] == "tf_keras"
