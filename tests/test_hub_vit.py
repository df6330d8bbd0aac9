"""Keras Hub ViTBackbone and ViTImageClassifier (and the ViT layers in a user's own model) against Keras;
the recipe's graph against Keras' own; damaged constructor arguments refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import converter
from converter.errors import FormatError
from tests.hub_support import assert_matches, convert_saved, hub, hub_archive, image_inputs, randomize

SMALL = {"image_shape": (16, 16, 3), "patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 8,
         "mlp_dim": 16}


def _backbone(**changes: Any) -> Any:
    model = hub().models.ViTBackbone(**{**SMALL, **changes})
    randomize(model, seed=3, scale=0.5)
    return model


def _matches_two_batches(onnx: Any, model: Any, shape: tuple[int, int, int]) -> float:
    """One ONNX file, two batch sizes (the image size is fixed by the position table)."""
    dims = onnx.graph.input[0].type.tensor_type.shape.dim
    assert onnx.graph.input[0].name == "images" and dims[0].dim_param
    return max(assert_matches(onnx, model, image_inputs(2, shape, seed=1)),
               assert_matches(onnx, model, image_inputs(3, shape, seed=2)))


@pytest.mark.tf
@pytest.mark.parametrize("changes", [
    {},
    {"use_class_token": False, "use_patch_bias": False, "use_mha_bias": False, "use_mlp_bias": False},
    {"image_shape": (16, 24, 2), "patch_size": (4, 8), "layer_norm_epsilon": 1e-3},
    {"hidden_dim": 10, "num_heads": 3, "dropout_rate": 0.1, "attention_dropout": 0.2},  # key_dim 3 (floor)
    {"num_layers": 12, "hidden_dim": 4, "mlp_dim": 4},  # saved blocks sort _1, _10, _11, _2, ...
], ids=["default", "no_token_no_biases", "rectangular", "uneven_heads_dropouts", "twelve_layers"])
def test_backbone_matches_keras(tmp_path: Path, changes: dict[str, Any]) -> None:
    model = _backbone(**changes)
    _matches_two_batches(convert_saved(model, tmp_path), model, tuple(model.image_shape))


@pytest.mark.tf
@pytest.mark.parametrize(("pooling", "intermediate_dim", "activation", "dropout"),
                         [("token", None, None, 0.0), ("token", 5, "softmax", 0.1), ("gap", 6, None, 0.0),
                          ("gap", None, "sigmoid", 0.2)])
def test_image_classifier_matches_keras(tmp_path: Path, pooling: str, intermediate_dim: int | None,
                                        activation: str | None, dropout: float) -> None:
    task = hub().models.ViTImageClassifier(_backbone(), num_classes=3, pooling=pooling,
                                           intermediate_dim=intermediate_dim, activation=activation,
                                           dropout=dropout, preprocessor=None)
    randomize(task, seed=4, scale=0.5)
    _matches_two_batches(convert_saved(task, tmp_path), task, (16, 16, 3))


@pytest.mark.tf
def test_vit_layers_in_a_users_model(tmp_path: Path) -> None:
    """The layers outside a ViTBackbone: Keras Hub does not export them, so they are saved by bare name."""
    import keras
    from keras_hub.src.models.vit.vit_layers import ViTEncoder, ViTPatchingAndEmbedding

    hub()
    images = keras.Input((8, 8, 3))
    x = ViTPatchingAndEmbedding(image_size=(8, 8), patch_size=(2, 2), hidden_dim=6)(images)
    x = ViTEncoder(num_layers=1, num_heads=2, hidden_dim=6, mlp_dim=12)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(images, keras.layers.Dense(2)(x))
    randomize(model, seed=5)
    onnx = convert_saved(model, tmp_path)
    assert_matches(onnx, model, image_inputs(2, (8, 8, 3)))
    assert_matches(onnx, model, image_inputs(1, (8, 8, 3)))


@pytest.mark.tf
def test_recipe_graph_is_keras_graph() -> None:
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = _backbone()
    golden = json.loads(json.dumps(keras.Model(model.input, model.output).get_config()))
    ours = expand("ViTBackbone", json.loads(json.dumps(model.get_config())), StoredWeights(None))
    assert [(layer["class_name"], layer["name"]) for layer in ours["layers"]] == \
        [(layer["class_name"], layer["name"]) for layer in golden["layers"]]
    for mine, theirs in zip(ours["layers"][1:], golden["layers"][1:]):
        for key, value in theirs["config"].items():
            if key not in ("num_patches", "num_positions"):  # derived: the handler computes them
                assert mine["config"][key] == value, (mine["name"], key)
    assert ours["layers"][0]["config"]["batch_shape"] == golden["layers"][0]["config"]["batch_shape"]


# -- damaged constructor arguments (no Keras needed) -----------------------------------------------
def _backbone_entry(config: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras_hub.src.models.vit.vit_backbone", "class_name": "ViTBackbone",
            "registered_name": "keras_hub>ViTBackbone", "config": {"name": "vi_t_backbone", **config}}


BASE = {**SMALL, "image_shape": [16, 16, 3]}


@pytest.mark.parametrize(("change", "field"), [
    ({"num_layers": "2"}, "num_layers"),
    ({"num_layers": 10**9}, "num_layers"),
    ({"num_heads": 9}, "num_heads"),
    ({"hidden_dim": 2.5}, "hidden_dim"),
    ({"patch_size": 5}, "patch_size"),
    ({"patch_size": [4, 4, 4]}, "patch_size"),
    ({"image_shape": [None, None, 3]}, "image_shape"),
    ({"use_class_token": 1}, "use_class_token"),
    ({"layer_norm_epsilon": "tiny"}, "layer_norm_epsilon"),
    ({"mlp_dim": None}, "mlp_dim"),
])
def test_damaged_backbone_arguments_are_refused_by_name(tmp_path: Path, change: dict[str, Any],
                                                        field: str) -> None:
    with pytest.raises(FormatError, match=re.escape(field)) as caught:
        converter.convert(hub_archive(tmp_path / "m.keras", entry=_backbone_entry({**BASE, **change})))
    assert caught.value.layer == "vi_t_backbone"


@pytest.mark.parametrize(("change", "field"), [({"pooling": "cls"}, "pooling"), ({"num_classes": 0}, "num_classes"),
                                               ({"intermediate_dim": "5"}, "intermediate_dim")])
def test_damaged_classifier_arguments_are_refused_by_name(tmp_path: Path, change: dict[str, Any],
                                                          field: str) -> None:
    entry = {"module": "keras_hub.src.models.vit.vit_image_classifier", "class_name": "ViTImageClassifier",
             "registered_name": "keras_hub>ViTImageClassifier",
             "config": {"name": "vi_t_image_classifier", "backbone": _backbone_entry(BASE), "preprocessor": None,
                        "num_classes": 3, "pooling": "token", "intermediate_dim": None, "activation": None,
                        "dropout": 0.0, **change}}
    with pytest.raises(FormatError, match=re.escape(field)) as caught:
        converter.convert(hub_archive(tmp_path / "m.keras", entry=entry))
    assert caught.value.layer == "vi_t_image_classifier"


def _functional_with_encoder(encoder: dict[str, Any]) -> dict[str, Any]:
    """A user's Functional model holding a ViTEncoder (saved by bare class name, as Keras writes it)."""
    def tensor(layer: str) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": None,
                                                             "keras_history": [layer, 0, 0]}}
    layers = [
        {"module": "keras.layers", "class_name": "InputLayer", "name": "tokens", "inbound_nodes": [],
         "config": {"batch_shape": [None, 5, 8], "dtype": "float32", "name": "tokens"}},
        {"module": "keras_hub.src.models.vit.vit_layers", "class_name": "ViTEncoder",
         "registered_name": "ViTEncoder", "name": "vit_encoder",
         "config": {"name": "vit_encoder", "trainable": True, "dtype": "float32", **encoder},
         "inbound_nodes": [{"args": [tensor("tokens")], "kwargs": {}}]},
    ]
    return {"module": "keras", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "model", "trainable": True, "layers": layers,
                       "input_layers": [["tokens", 0, 0]], "output_layers": [["vit_encoder", 0, 0]]}}


ENCODER = {"num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}


@pytest.mark.parametrize(("change", "field"), [({"num_layers": 10**9}, "num_layers"), ({"num_heads": 9}, "num_heads"),
                                               ({"hidden_dim": "8"}, "hidden_dim")])
def test_damaged_encoder_layer_is_refused_by_name(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(FormatError, match=re.escape(field)) as caught:
        converter.convert(hub_archive(tmp_path / "m.keras", entry=_functional_with_encoder({**ENCODER, **change})))
    assert caught.value.layer == "vit_encoder"
