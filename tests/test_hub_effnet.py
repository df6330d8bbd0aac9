"""Keras Hub EfficientNet (v1 blocks inline, v2 fused/unfused blocks) and MobileNet (v3): small models with
random weights, saved as `.keras`, converted, and compared with Keras at two batch sizes and image sizes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hub_support import assert_matches, convert_saved, hub, image_inputs, randomize

pytestmark = pytest.mark.tf

SMALL = {
    "stackwise_width_coefficients": [1.0, 1.0], "stackwise_depth_coefficients": [1.0, 1.0],
    "stackwise_kernel_sizes": [3, 3], "stackwise_num_repeats": [1, 2], "stackwise_input_filters": [8, 8],
    "stackwise_output_filters": [8, 16], "stackwise_expansion_ratios": [1, 4],
    "stackwise_squeeze_and_excite_ratios": [0.25, 0.25], "stackwise_strides": [1, 2],
    "stackwise_block_types": ["v1", "v1"], "input_shape": (None, None, 3),
}


def efficientnet(**changes: Any) -> Any:
    return hub().models.EfficientNetBackbone(**{**SMALL, **changes})


def check_images(onnx: Any, model: Any, sizes: tuple[int, ...] = (32, 40)) -> float:
    """Two batch sizes; two image sizes where the model takes any size (one ONNX model)."""
    fixed = model.input_shape[1]
    worst = 0.0
    for batch, size in zip((1, 3), sizes if fixed is None else (fixed, fixed)):
        images = image_inputs(batch, (size, size, 3), seed=batch)
        worst = max(worst, assert_matches(onnx, model, images))
    return worst


def test_efficientnet_v1_backbone(tmp_path: Path) -> None:
    model = efficientnet()
    randomize(model, scale=0.3)
    onnx = convert_saved(model, tmp_path)
    assert [i.name for i in onnx.graph.input] == ["images"]
    dims = onnx.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value and [d.dim_value for d in dims[3:]] == [3]
    check_images(onnx, model)


V1_OPTIONS = {
    "no_se_no_expansion": {"stackwise_squeeze_and_excite_ratios": [0.0, 0.0], "stackwise_expansion_ratios": [1, 1],
                           "dropout": 0.0},
    "rounding": {"stackwise_width_coefficients": [1.1, 1.3], "stackwise_depth_coefficients": [1.2, 1.6],
                 "stackwise_input_filters": [10, 12], "stackwise_output_filters": [12, 22],
                 "cap_round_filter_decrease": True, "min_depth": 4, "depth_divisor": 4},
    "divisor_as_min_depth": {"use_depth_divisor_as_min_depth": True, "min_depth": None,
                             "stackwise_force_input_filters": [0, 12, 0, 0, 0, 0, 0], "stackwise_kernel_sizes": [5, 3]},
    "stem_same_relu": {"include_stem_padding": False, "stem_conv_padding": "same", "activation": "relu",
                       "projection_activation": "relu6", "batch_norm_epsilon": 1e-3},
    "fixed_size_top_width": {"input_shape": (24, 24, 3), "num_features": 40},
}


@pytest.mark.parametrize("option", sorted(V1_OPTIONS))
def test_efficientnet_v1_options(option: str, tmp_path: Path) -> None:
    # num_features is not saved by Keras Hub (such a file does not even reload in Keras): the top
    # conv's width comes from its stored kernel, compared here with the model in memory.
    model = efficientnet(**V1_OPTIONS[option])
    randomize(model, seed=1, scale=0.3)
    check_images(convert_saved(model, tmp_path), model, (33, 24))


@pytest.mark.parametrize("pooling,dropout,activation", [("avg", 0.0, None), ("max", 0.5, "softmax")])
def test_efficientnet_image_classifier(pooling: str, dropout: float, activation: str | None,
                                       tmp_path: Path) -> None:
    kwargs = {"activation": activation} if activation else {}
    model = hub().models.EfficientNetImageClassifier(efficientnet(), num_classes=3, pooling=pooling,
                                                     dropout=dropout, preprocessor=None, **kwargs)
    randomize(model, seed=2, scale=0.3)
    check_images(convert_saved(model, tmp_path), model)


V2_OPTIONS = {
    "fused_unfused": {"stackwise_block_types": ["fused", "unfused"],
                      "stackwise_squeeze_and_excite_ratios": [0.0, 0.25]},
    "expanded_fused_with_se": {"stackwise_block_types": ["fused", "unfused"], "stackwise_expansion_ratios": [4, 1],
                               "stackwise_kernel_sizes": [3, 5], "stackwise_strides": [2, 1],
                               "projection_activation": "relu", "dropout": 0.0},
    "unfused_first_projection_activation": {"stackwise_block_types": ["unfused", "fused"],
                                            "stackwise_expansion_ratios": [1, 1], "projection_activation": "relu6",
                                            "stackwise_squeeze_and_excite_ratios": [0.5, 0.0],
                                            "activation": "gelu", "batch_norm_epsilon": 1e-3},
    "cba_first": {"stackwise_block_types": ["cba", "unfused"], "stackwise_kernel_sizes": [5, 3],
                       "stackwise_num_repeats": [2, 1], "activation": "relu"},
    "mixed_with_v1": {"stackwise_block_types": ["v1", "unfused"], "stackwise_width_coefficients": [1.1, 1.3],
                      "stackwise_depth_coefficients": [1.0, 1.6]},
}


@pytest.mark.parametrize("option", sorted(V2_OPTIONS))
def test_efficientnet_v2_blocks(option: str, tmp_path: Path) -> None:
    model = efficientnet(**V2_OPTIONS[option])
    randomize(model, seed=3, scale=0.3)
    check_images(convert_saved(model, tmp_path), model, (33, 24))


def test_efficientnet_v2_image_classifier(tmp_path: Path) -> None:
    backbone = efficientnet(**V2_OPTIONS["fused_unfused"], input_shape=(32, 32, 3))
    model = hub().models.EfficientNetImageClassifier(backbone, num_classes=4, preprocessor=None)
    randomize(model, seed=4, scale=0.3)
    check_images(convert_saved(model, tmp_path), model)


def test_efficientnet_blocks_in_a_users_model(tmp_path: Path) -> None:
    """MBConvBlock / FusedMBConvBlock / CBABlock as layers of the user's own Functional model (nores,
    dropout, a projection kernel of 3)."""
    import keras
    from keras_hub.src.models.efficientnet.cba import CBABlock
    from keras_hub.src.models.efficientnet.fusedmbconv import FusedMBConvBlock
    from keras_hub.src.models.efficientnet.mbconv import MBConvBlock

    images = keras.Input((None, None, 8))
    x = FusedMBConvBlock(8, 8, expand_ratio=1, projection_kernel_size=3, projection_activation="relu",
                         se_ratio=0.5, dropout=0.1, name="fused_")(images)
    x = MBConvBlock(8, 8, expand_ratio=2, se_ratio=0.25, nores=True, name="unfused_")(x)
    x = CBABlock(8, 8, kernel_size=5, dropout=0.1, activation="relu", name="cba_")(x)
    y = MBConvBlock(8, 12, expand_ratio=3, strides=2, kernel_size=5, batch_norm_epsilon=1e-5, name="down_")(x)
    model = keras.Model(images, keras.layers.GlobalAveragePooling2D()(y))
    randomize(model, seed=5, scale=0.3)
    onnx = convert_saved(model, tmp_path)
    for batch, size in ((1, 15), (2, 16)):
        assert_matches(onnx, model, image_inputs(batch, (size, size, 8), seed=batch))


MOBILENET = {
    "stackwise_expansion": [[16, 24], [32]], "stackwise_num_blocks": [2, 1], "stackwise_num_filters": [[8, 8], [16]],
    "stackwise_kernel_size": [[3, 3], [5]], "stackwise_num_strides": [[2, 1], [2]],
    "stackwise_se_ratio": [[None, None], [0.25]], "stackwise_activation": [["relu", "relu"], ["hard_swish"]],
    "stackwise_padding": [[1, 1], [2]], "output_num_filters": 32, "depthwise_filters": 8, "depthwise_stride": 2,
    "depthwise_residual": False, "last_layer_filter": 32, "squeeze_and_excite": 0.5, "image_shape": (None, None, 3),
    "input_num_filters": 8,
}
MOBILENET_OPTIONS = {
    "default": {},
    "residual_depthwise_odd_channels": {
        "depthwise_stride": 1, "depthwise_residual": True, "squeeze_and_excite": None, "input_num_filters": 12,
        "depthwise_filters": 16, "stackwise_num_filters": [[12, 12], [20]], "stackwise_expansion": [[20, 36], [40]],
        "stackwise_se_ratio": [[0.25, None], [0.5]], "stackwise_activation": [["hard_swish", "relu6"], ["relu"]],
        "input_activation": "relu", "last_layer_filter": 28},
    "fixed_size": {"image_shape": (24, 24, 3), "stackwise_kernel_size": [[5, 3], [3]],
                   "stackwise_padding": [[2, 1], [1]]},
}


def mobilenet(**changes: Any) -> Any:
    return hub().models.MobileNetBackbone(**{**MOBILENET, **changes})


@pytest.mark.parametrize("option", sorted(MOBILENET_OPTIONS))
def test_mobilenet_backbone(option: str, tmp_path: Path) -> None:
    model = mobilenet(**MOBILENET_OPTIONS[option])
    randomize(model, seed=6, scale=0.3)
    onnx = convert_saved(model, tmp_path)
    assert [i.name for i in onnx.graph.input] == ["images"]
    check_images(onnx, model, (32, 45))


@pytest.mark.parametrize("num_features", [1024, 20])
def test_mobilenet_image_classifier(num_features: int, tmp_path: Path) -> None:
    model = hub().models.MobileNetImageClassifier(mobilenet(), num_classes=5, num_features=num_features,
                                                  preprocessor=None)
    randomize(model, seed=7, scale=0.3)
    check_images(convert_saved(model, tmp_path), model, (32, 40))


def test_mobilenet_blocks_in_a_users_model(tmp_path: Path) -> None:
    """Keras Hub registers no MobileNet block class: a user's file names them by bare class name."""
    import keras
    from keras_hub.src.models.mobilenet.mobilenet_backbone import ConvBnActBlock, InvertedResidualBlock

    images = keras.Input((None, None, 8))
    x = InvertedResidualBlock(expansion=24, infilters=8, filters=8, kernel_size=3, stride=1,
                              squeeze_excite_ratio=0.25, activation="hard_swish", padding=1, name="irb")(images)
    x = ConvBnActBlock(filter=16, activation="relu", name="head")(x)
    model = keras.Model(images, x)
    randomize(model, seed=8, scale=0.3)
    onnx = convert_saved(model, tmp_path)
    for batch, size in ((1, 9), (2, 12)):
        assert_matches(onnx, model, image_inputs(batch, (size, size, 8), seed=batch))


def layer_list(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, class) per layer; MobileNet's stem activation is auto-named (`activation_59` after other
    models were built in the session, `activation` in a fresh one), so its number is dropped."""
    return [(re.sub(r"^activation_\d+$", "activation", layer["config"]["name"]), layer["class_name"])
            for layer in config["layers"]]


@pytest.mark.parametrize("changes", [{}, V1_OPTIONS["rounding"], V1_OPTIONS["stem_same_relu"],
                                     V2_OPTIONS["fused_unfused"], V2_OPTIONS["mixed_with_v1"],
                                     V2_OPTIONS["cba_first"]])
def test_efficientnet_recipe_matches_keras_graph(changes: dict[str, Any]) -> None:
    """Names, classes and order of the recipe's layers = Keras' own Functional config of the backbone."""
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = efficientnet(**changes)
    golden = keras.Model(model.input, model.output).get_config()
    saved = json.loads(json.dumps(model.get_config()))  # as the file holds it (lists, not tuples)
    ours = expand("EfficientNetBackbone", saved, StoredWeights(None))
    assert layer_list(ours)[1:] == layer_list(golden)[1:]
    assert [(layer["registered_name"], layer["module"]) for layer in ours["layers"][1:]] == \
        [(layer["registered_name"], layer["module"]) for layer in golden["layers"][1:]]
    assert ours["layers"][0]["config"]["name"] == "images"


@pytest.mark.parametrize("option", sorted(MOBILENET_OPTIONS))
def test_mobilenet_recipe_matches_keras_graph(option: str) -> None:
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = mobilenet(**MOBILENET_OPTIONS[option])
    golden = keras.Model(model.input, model.output).get_config()
    saved = json.loads(json.dumps(model.get_config()))
    ours = expand("MobileNetBackbone", saved, StoredWeights(None))
    assert layer_list(ours)[1:] == layer_list(golden)[1:]
    assert [layer["registered_name"] for layer in ours["layers"]] == \
        [layer["registered_name"] for layer in golden["layers"]]
