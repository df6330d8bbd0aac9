"""Localisation against live Keras: a converted model with one weight of one layer perturbed in the ONNX
file is localised to exactly that layer, in both modes, for a CNN with BatchNormalization, a masked RNN and
a model with wrapped layers; saved by Keras 3 (.keras) and by tf_keras (.h5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import converter
from application.verify import VerifyRequest, verify
from runtime.localize_types import ACCUMULATED, ISOLATED

pytestmark = pytest.mark.tf

WRITERS = [("keras", "keras"), ("tf_keras", "h5")]


def cnn(K: Any) -> Any:
    L = K.layers
    x = K.Input((12, 12, 3))
    y = L.Conv2D(6, 3, name="stem")(x)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.ReLU(name="stem_relu")(y)
    y = L.Conv2D(8, 3, padding="same", name="body")(y)
    y = L.BatchNormalization(name="body_bn")(y)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Flatten(name="flat")(y)
    return K.Model(x, L.Dense(4, name="head")(y))


def masked_rnn(K: Any) -> Any:
    L = K.layers
    return K.Sequential([K.Input((7, 5)), L.Masking(-1.0, name="mask"), L.LSTM(6, return_sequences=True, name="rnn1"),
                         L.GRU(4, name="rnn2"), L.Dense(3, name="head")])


def wrapped(K: Any) -> Any:
    L = K.layers
    x = K.Input((6, 5))
    y = L.TimeDistributed(L.Dense(7), name="per_step")(x)
    y = L.Bidirectional(L.LSTM(4, return_sequences=True), name="birnn")(y)
    return K.Model(x, L.GlobalAveragePooling1D(name="pool")(y))


MODELS = {"cnn": (cnn, ["body", "head"]), "masked_rnn": (masked_rnn, ["rnn1", "rnn2"]),
          "wrapped": (wrapped, ["per_step", "birnn"])}


def _randomised(model: Any) -> Any:
    """Non-trivial BatchNormalization statistics, so folding them matters."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if "BatchNormalization" in type(layer).__name__:
            gamma, beta, mean, var = (np.asarray(w) for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    return model


def _perturbed(onnx_path: Path, layer: str, out: Path) -> Path:
    """The layer's first weight (its kernel) moved by 5% + 0.01: far beyond float32 rounding, and not
    hidden by a ReLU that zeroes the one channel a single element would touch."""
    model = onnx.load(str(onnx_path))
    tensor = next(t for t in model.graph.initializer if t.name.startswith(f"{layer}/")
                  and t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1)
    weight = onnx.numpy_helper.to_array(tensor)
    array = (weight * 1.05 + 0.01).astype(weight.dtype)
    tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("module,fmt", WRITERS)
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_perturbed_layer_is_localised_in_both_modes(tmp_path: Path, module: str, fmt: str, kind: str) -> None:
    K = pytest.importorskip(module)
    build, targets = MODELS[kind]
    keras_path = tmp_path / f"model.{fmt}"
    _randomised(build(K)).save(str(keras_path))
    clean = tmp_path / "clean.onnx"
    onnx.save(converter.convert(keras_path), str(clean))
    assert verify(VerifyRequest(clean, against=keras_path, localize=True)).ok
    for target in targets:
        bad = _perturbed(clean, target, tmp_path / f"bad_{target}.onnx")
        result = verify(VerifyRequest(bad, against=keras_path, localize=True))
        assert not result.ok
        assert [loc.mode for loc in result.localizations] == [ACCUMULATED, ISOLATED]
        for loc in result.localizations:
            first = loc.first_divergent
            assert first is not None and (first.layer == target or target in first.folded), (loc.mode, first)
        isolated = result.localizations[1]
        assert [e.layer for e in isolated.layers if not e.ok] == [isolated.first_divergent.layer]  # type: ignore[union-attr]


def test_a_batch_norm_folded_conv_is_named_with_its_batch_norm(tmp_path: Path) -> None:
    K = pytest.importorskip("keras")
    keras_path = tmp_path / "cnn.keras"
    _randomised(cnn(K)).save(str(keras_path))
    clean = tmp_path / "clean.onnx"
    onnx.save(converter.convert(keras_path), str(clean))
    result = verify(VerifyRequest(_perturbed(clean, "body", tmp_path / "bad.onnx"), against=keras_path,
                                  localize=True, localize_mode="isolated"))
    first = result.localizations[0].first_divergent
    assert first is not None and (first.layer, first.class_name, first.folded) == ("body_bn", "BatchNormalization",
                                                                                   ("body",))
    assert "stem" not in result.localizations[0].unmapped  # folded into stem_bn's value, so it is compared


FIXTURE_MODELS = sorted((Path(__file__).resolve().parent.parent / "fixtures").glob("**/model.keras"))


@pytest.mark.parametrize("path", FIXTURE_MODELS, ids=lambda p: p.parent.name)
def test_every_mapped_value_is_its_keras_layers_output(tmp_path: Path, path: Path) -> None:
    """The map is true: on a clean conversion, isolated, no Keras layer diverges from its ONNX value."""
    pytest.importorskip("keras")
    clean = tmp_path / "clean.onnx"
    onnx.save(converter.convert(path), str(clean))
    result = verify(VerifyRequest(clean, against=path, localize=True, localize_mode="isolated"))
    isolated = result.localizations[0]
    assert isolated.layers and isolated.first_divergent is None, isolated.first_divergent
