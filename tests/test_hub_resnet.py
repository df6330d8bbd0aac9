"""Keras Hub ResNetBackbone and ResNetImageClassifier: every block type, v1 and v2 (pre-activation),
several input convolutions, both poolings, against Keras; the recipe's graph against Keras' own; damaged
constructor arguments refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import converter
from converter.errors import FormatError
from tests.hub_support import assert_matches, convert_saved, hub, hub_archive, image_inputs, randomize

SMALL = {"input_conv_filters": [64], "input_conv_kernel_sizes": [7], "stackwise_num_filters": [64, 16],
         "stackwise_num_blocks": [2, 1], "stackwise_num_strides": [1, 2]}
BLOCK_TYPES = ["basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd"]


def _backbone(block_type: str, pre_activation: bool, **changes: Any) -> Any:
    kwargs: dict[str, Any] = {**SMALL, "block_type": block_type, "use_pre_activation": pre_activation,
                              "image_shape": (None, None, 3), **changes}
    if block_type.endswith("_vd") and pre_activation:
        kwargs["stackwise_num_strides"] = [1, 1]  # Keras Hub cannot build a strided pre-activated vd block
    model = hub().models.ResNetBackbone(**kwargs)
    unit_gain(model, seed=1)
    return model


def unit_gain(model: Any, seed: int) -> None:
    """Random weights with each convolution's and Dense's kernel scaled by 1/sqrt(fan-in), so activations
    stay O(1) through the stacks (float32 rounding then stays well inside the tolerance)."""
    randomize(model, seed=seed, scale=1.0)
    for variable in model.weights:
        if variable.path.endswith("kernel"):
            fan_in = int(np.prod(variable.shape[:-1]))
            variable.assign(np.asarray(variable) / np.sqrt(fan_in))


def _matches_two_sizes(onnx: Any, model: Any) -> float:
    """One ONNX file, two batch sizes and two image sizes (batch, height and width are dynamic)."""
    return max(assert_matches(onnx, model, image_inputs(2, (32, 32, 3), seed=1)),
               assert_matches(onnx, model, image_inputs(3, (40, 24, 3), seed=2)))


@pytest.mark.tf
@pytest.mark.parametrize("pre_activation", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("block_type", BLOCK_TYPES)
def test_backbone_matches_keras(tmp_path: Path, block_type: str, pre_activation: bool) -> None:
    model = _backbone(block_type, pre_activation)
    onnx = convert_saved(model, tmp_path)
    assert [i.name for i in onnx.graph.input] == ["images"]
    _matches_two_sizes(onnx, model)


@pytest.mark.tf
@pytest.mark.parametrize("pre_activation", [False, True], ids=["v1", "v2"])
def test_several_input_convolutions(tmp_path: Path, pre_activation: bool) -> None:
    model = _backbone("bottleneck_block_vd", pre_activation, input_conv_filters=[16, 16, 64],
                      input_conv_kernel_sizes=[3, 3, 3])
    _matches_two_sizes(convert_saved(model, tmp_path), model)


@pytest.mark.tf
def test_fixed_image_shape(tmp_path: Path) -> None:
    model = _backbone("basic_block", False, image_shape=(32, 32, 3))
    onnx = convert_saved(model, tmp_path)
    dims = onnx.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert_matches(onnx, model, image_inputs(2, (32, 32, 3)))
    assert_matches(onnx, model, image_inputs(1, (32, 32, 3)))


@pytest.mark.tf
@pytest.mark.parametrize(("pooling", "dropout", "activation"),
                         [("avg", 0.0, None), ("max", 0.2, "softmax")])
def test_image_classifier_matches_keras(tmp_path: Path, pooling: str, dropout: float,
                                        activation: str | None) -> None:
    backbone = _backbone("bottleneck_block", False)
    task = hub().models.ResNetImageClassifier(backbone, num_classes=3, pooling=pooling, dropout=dropout,
                                              activation=activation, preprocessor=None)
    unit_gain(task, seed=2)
    _matches_two_sizes(convert_saved(task, tmp_path), task)


# Keras names these by session-wide counters (input_layer_7, average_pooling2d_3, pad_2): only their
# class and place can be compared.
_AUTO_NAMED = {"InputLayer", "AveragePooling2D", "Pad"}


def _layer_list(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [(layer["class_name"], "" if layer["class_name"] in _AUTO_NAMED else layer["name"])
            for layer in config["layers"]]


@pytest.mark.tf
@pytest.mark.parametrize(("block_type", "pre_activation"),
                         [("bottleneck_block", False), ("basic_block", True), ("basic_block_vd", False)])
def test_recipe_graph_is_keras_graph(block_type: str, pre_activation: bool) -> None:
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = _backbone(block_type, pre_activation, input_conv_filters=[32, 64], input_conv_kernel_sizes=[3, 3])
    golden = json.loads(json.dumps(keras.Model(model.input, model.output).get_config()))
    ours = expand("ResNetBackbone", json.loads(json.dumps(model.get_config())), StoredWeights(None))
    assert _layer_list(ours) == _layer_list(golden)
    for mine, theirs in zip(ours["layers"], golden["layers"]):
        if "filters" in theirs["config"]:
            assert mine["config"]["filters"] == theirs["config"]["filters"], mine["name"]
            assert mine["config"]["strides"] == theirs["config"]["strides"], mine["name"]
            assert mine["config"]["padding"] == theirs["config"]["padding"], mine["name"]


# -- damaged constructor arguments (no Keras needed) -----------------------------------------------
def _write_keras(tmp_path: Path, config: dict[str, Any]) -> Path:
    return hub_archive(tmp_path / "m.keras", "ResNetBackbone", {"name": "res_net_backbone", **config},
                       "keras_hub.src.models.resnet.resnet_backbone")


BASE = {**SMALL, "block_type": "bottleneck_block", "use_pre_activation": False, "image_shape": [None, None, 3]}


@pytest.mark.parametrize(("change", "field"), [
    ({"stackwise_num_blocks": ["2", 1]}, "stackwise_num_blocks"),
    ({"stackwise_num_blocks": [10**9, 1]}, "stackwise_num_blocks"),
    ({"stackwise_num_blocks": [4000, 1000]}, "stackwise_num_blocks"),
    ({"stackwise_num_strides": [1]}, "stackwise_num_blocks"),
    ({"stackwise_num_filters": [32, 16]}, "stackwise_num_filters"),
    ({"input_conv_kernel_sizes": [7, 3]}, "input_conv_kernel_sizes"),
    ({"block_type": "wide_block"}, "block_type"),
    ({"use_pre_activation": "yes"}, "use_pre_activation"),
    ({"image_shape": [32, 32, None]}, "image_shape"),
    ({"image_shape": [32, 32]}, "image_shape"),
    ({"block_type": "basic_block_vd", "use_pre_activation": True}, "stackwise_num_strides"),
    ({"data_format": "channels_first"}, "data_format"),
])
def test_damaged_arguments_are_refused_by_name(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(FormatError, match=re.escape(field)) as caught:
        converter.convert(_write_keras(tmp_path, {**BASE, **change}))
    assert caught.value.layer == "res_net_backbone"


def test_missing_argument_is_refused_by_name(tmp_path: Path) -> None:
    config = {k: v for k, v in BASE.items() if k != "block_type"}
    with pytest.raises(FormatError, match="block_type"):
        converter.convert(_write_keras(tmp_path, config))
