"""Hand-written Keras Hub EfficientNet / MobileNet configs that no Keras Hub constructor accepts (or that
kconvert does not convert) give a KconvertError naming the field; no TensorFlow or Keras Hub needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hub_support import hub_archive

import converter
from converter.errors import FormatError, KconvertError

EFFICIENTNET = {
    "name": "efficient_net_backbone", "trainable": True,
    "stackwise_width_coefficients": [1.0, 1.0], "stackwise_depth_coefficients": [1.0, 1.0], "dropout": 0.2,
    "depth_divisor": 8, "min_depth": 8, "activation": "swish", "input_shape": [32, 32, 3],
    "stackwise_kernel_sizes": [3, 3], "stackwise_num_repeats": [1, 2], "stackwise_input_filters": [8, 8],
    "stackwise_output_filters": [8, 16], "stackwise_expansion_ratios": [1, 4],
    "stackwise_squeeze_and_excite_ratios": [0.25, 0.25], "stackwise_strides": [1, 2],
    "stackwise_block_types": ["v1", "unfused"], "stackwise_force_input_filters": [0] * 7,
    "include_stem_padding": True, "use_depth_divisor_as_min_depth": False, "cap_round_filter_decrease": False,
    "stem_conv_padding": "valid", "batch_norm_momentum": 0.9, "batch_norm_epsilon": 1e-5,
    "projection_activation": None,
}


BAD_EFFICIENTNET = [
    ("stackwise_num_repeats", "two"),
    ("stackwise_num_repeats", [1, 10**9]),
    ("stackwise_output_filters", [8]),
    ("stackwise_block_types", ["v1", "v3"]),
    ("stackwise_squeeze_and_excite_ratios", [0.25, "x"]),
    ("stackwise_width_coefficients", [1.0, float("inf")]),
    ("input_shape", [32, 32]),
    ("depth_divisor", 0),
    ("min_depth", "8"),
    ("include_stem_padding", "yes"),
    ("stem_conv_padding", "causal"),
    ("data_format", "channels_first"),
    ("dropout", "high"),
]


@pytest.mark.parametrize("key,value", BAD_EFFICIENTNET, ids=[f"{k}={v!r}"[:40] for k, v in BAD_EFFICIENTNET])
def test_efficientnet_bad_argument_names_the_field(key: str, value: Any, tmp_path: Path) -> None:
    config = {**EFFICIENTNET, key: value}
    with pytest.raises(KconvertError) as caught:
        converter.convert(hub_archive(tmp_path / "model.keras", "EfficientNetBackbone", config))
    assert key in str(caught.value)


def test_efficientnet_missing_argument_is_a_format_error(tmp_path: Path) -> None:
    config = {k: v for k, v in EFFICIENTNET.items() if k != "stackwise_strides"}
    with pytest.raises(FormatError, match="stackwise_strides"):
        converter.convert(hub_archive(tmp_path / "model.keras", "EfficientNetBackbone", config))


MOBILENET = {
    "name": "mobile_net_backbone", "trainable": True,
    "stackwise_expansion": [[16, 24], [32]], "stackwise_num_blocks": [2, 1], "stackwise_num_filters": [[8, 8], [16]],
    "stackwise_kernel_size": [[3, 3], [5]], "stackwise_num_strides": [[2, 1], [2]],
    "stackwise_se_ratio": [[None, None], [0.25]], "stackwise_activation": [["relu", "relu"], ["hard_swish"]],
    "stackwise_padding": [[1, 1], [2]], "image_shape": [32, 32, 3], "input_num_filters": 8,
    "output_num_filters": 32, "depthwise_filters": 8, "depthwise_stride": 2, "depthwise_residual": False,
    "last_layer_filter": 32, "squeeze_and_excite": 0.5, "input_activation": "hard_swish",
    "output_activation": "hard_swish",
}
BAD_MOBILENET = [
    ("stackwise_num_blocks", "two"),
    ("stackwise_num_blocks", [2, 10**9]),
    ("stackwise_kernel_size", [[3, 3]]),
    ("stackwise_kernel_size", [[3], [5]]),
    ("stackwise_padding", [[1, "1"], [2]]),
    ("stackwise_activation", [[1, "relu"], ["relu"]]),
    ("stackwise_se_ratio", [[None, "high"], [0.25]]),
    ("squeeze_and_excite", "x"),
    ("image_shape", [32, 32]),
    ("depthwise_filters", 10**9),
    ("depthwise_residual", "no"),
    ("input_activation", 7),
]


@pytest.mark.parametrize("key,value", BAD_MOBILENET, ids=[f"{k}={v!r}"[:40] for k, v in BAD_MOBILENET])
def test_mobilenet_bad_argument_names_the_field(key: str, value: Any, tmp_path: Path) -> None:
    with pytest.raises(KconvertError) as caught:
        converter.convert(hub_archive(tmp_path / "model.keras", "MobileNetBackbone", {**MOBILENET, key: value}))
    assert key in str(caught.value)


def test_mobilenet_missing_argument_is_a_format_error(tmp_path: Path) -> None:
    config = {k: v for k, v in MOBILENET.items() if k != "last_layer_filter"}
    with pytest.raises(FormatError, match="last_layer_filter"):
        converter.convert(hub_archive(tmp_path / "model.keras", "MobileNetBackbone", config))


def test_mobilenet_classifier_bad_num_classes(tmp_path: Path) -> None:
    backbone = {"module": "keras_hub.src.models.mobilenet.mobilenet_backbone", "class_name": "MobileNetBackbone",
                "config": MOBILENET, "registered_name": "keras_hub>MobileNetBackbone"}
    config = {"name": "classifier", "backbone": backbone, "preprocessor": None, "num_classes": "3",
              "num_features": 1024}
    with pytest.raises(FormatError, match="num_classes"):
        converter.convert(hub_archive(tmp_path / "model.keras", "MobileNetImageClassifier", config))


def _block_file(tmp_path: Path, class_name: str, registered: str, config: dict[str, Any]) -> Path:
    """A user's Functional model of one Keras Hub block (no weights: the config is refused first)."""
    from kmodels import functional, input_layer, layer, save_keras

    block = {**layer(class_name, "block", **config), "registered_name": registered,
             "module": "keras_hub.src.models.efficientnet.mbconv"}
    model = functional([(input_layer("images", (16, 16, 8)), []), (block, ["images"])], ["images"], ["block"])
    return save_keras(tmp_path / "user.keras", model, {})


BAD_BLOCKS = [
    ("MBConvBlock", "keras_hub>MBConvBlock", {"input_filters": 8, "output_filters": 8, "kernel_size": "3"},
     "kernel_size"),
    ("FusedMBConvBlock", "keras_hub>FusedMBConvBlock", {"input_filters": 8, "output_filters": 0}, "output_filters"),
    ("MBConvBlock", "keras_hub>MBConvBlock", {"input_filters": 8, "output_filters": 8, "data_format": "channels_first"},
     "data_format"),
    ("InvertedResidualBlock", "InvertedResidualBlock", {"expansion": 16, "infilters": 8, "filters": 8,
     "kernel_size": 3, "stride": 1, "squeeze_excite_ratio": None, "activation": "relu", "padding": -1}, "padding"),
    ("DepthwiseConvBlock", "DepthwiseConvBlock", {"infilters": 8, "filters": 8, "residual": "yes"}, "residual"),
    ("ConvBnActBlock", "ConvBnActBlock", {"filter": 8, "activation": "no_such_activation"}, "activation"),
]


@pytest.mark.parametrize("class_name,registered,config,field", BAD_BLOCKS,
                         ids=[f"{c}-{f}" for c, _, _, f in BAD_BLOCKS])
def test_block_bad_argument_names_the_field(class_name: str, registered: str, config: dict[str, Any], field: str,
                                            tmp_path: Path) -> None:
    with pytest.raises(KconvertError) as caught:
        converter.convert(_block_file(tmp_path, class_name, registered, config))
    assert field in str(caught.value)
