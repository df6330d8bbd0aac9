"""MobileNet v3 (keras_hub/src/models/mobilenet/mobilenet_backbone.py, mobilenet_image_classifier.py,
Keras Hub 0.32.0).

Stem (`input_pad`, `input_conv`, `input_batch_norm`, `activation`), one DepthwiseConvBlock `block_0_0`,
InvertedResidualBlocks `block_{stack}_{index}`, and a ConvBnActBlock head; channel counts through
adjust_channels as Keras Hub rounds them. `output_num_filters` and `output_activation` are stored but
unused by Keras Hub's graph (its last block always uses hard_swish). The blocks are converted by
converter/layers/hub_mobilenet.py. The classifier has its own head: global average pooling (kept 4-D),
a 1x1 conv with hard_silu, Flatten, Dense.
"""

from __future__ import annotations

from typing import Any

from converter.keras.hub.efficientnet import image_shape
from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.recipes import MAX_SIZE, BackboneGraph, HubModel, backbone, call_backbone, task
from converter.layers.hub_mobilenet import adjust_channels

MODULE = "keras_hub.src.models.mobilenet.mobilenet_backbone"
MAX_BLOCKS = 4096
MAX_CHANNELS = 1 << 16


def block(b: FunctionalBuilder, class_name: str, name: str, config: dict[str, Any], x: Ref) -> Ref:
    """A MobileNet block as Keras writes it: class name as registered name (Keras Hub registers none)."""
    return b.layer(class_name, name, config, x, registered_name=class_name, module=MODULE)


def _ratio(model: HubModel, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 64:
        raise model.refuse(key, "expected null or a number from 0 to 64")
    return value


def _nested(model: HubModel, key: str, counts: tuple[int, ...]) -> list[list[Any]]:
    """A per-stack list of per-block values (`stackwise_kernel_size[stack][block]`)."""
    value = model.items(key)
    if len(value) < len(counts) or not all(isinstance(row, list) and len(row) >= n for row, n in zip(value, counts)):
        raise model.refuse(key, f"expected a list per stack with one value per block ({list(counts)} blocks)")
    return value


def _int(model: HubModel, key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_CHANNELS:
        raise model.refuse(key, f"expected integers from {minimum} to {MAX_CHANNELS}")
    return value


def _text(model: HubModel, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise model.refuse(key, "expected activation names")
    return value


def stem(b: FunctionalBuilder, model: HubModel, x: Ref) -> tuple[Ref, int]:
    filters = adjust_channels(model.integer("input_num_filters", 16, maximum=MAX_CHANNELS))
    x = b.layer("ZeroPadding2D", "input_pad", {"padding": [[1, 1], [1, 1]], "data_format": "channels_last"}, x)
    x = b.layer("Conv2D", "input_conv", {
        "filters": filters, "kernel_size": [3, 3], "strides": [2, 2], "padding": "valid",
        "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "linear",
        "use_bias": False}, x)
    x = b.layer("BatchNormalization", "input_batch_norm", {"axis": -1, "momentum": 0.9, "epsilon": 1e-5,
                                                           "center": True, "scale": True}, x)
    x = b.layer("Activation", "activation", {"activation": model.text("input_activation", "hard_swish")}, x)
    return x, filters


def depthwise_block(b: FunctionalBuilder, model: HubModel, x: Ref, infilters: int) -> tuple[Ref, int]:
    filters = model.integer("depthwise_filters", maximum=MAX_CHANNELS)
    x = block(b, "DepthwiseConvBlock", "block_0_0", {
        "infilters": infilters, "filters": filters, "kernel_size": 3,
        "stride": model.integer("depthwise_stride", maximum=MAX_CHANNELS),
        "squeeze_excite_ratio": _ratio(model, "squeeze_and_excite", model.args.value("squeeze_and_excite")),
        "residual": model.flag("depthwise_residual", False)}, x)
    return x, filters


def inverted_blocks(b: FunctionalBuilder, model: HubModel, x: Ref, infilters: int) -> tuple[Ref, int]:
    counts = model.integers("stackwise_num_blocks", maximum=MAX_BLOCKS)
    if sum(counts) > MAX_BLOCKS:
        raise model.refuse("stackwise_num_blocks", f"expected at most {MAX_BLOCKS} blocks in all")
    rows = {key: _nested(model, key, counts) for key in (
        "stackwise_expansion", "stackwise_num_filters", "stackwise_kernel_size", "stackwise_num_strides",
        "stackwise_se_ratio", "stackwise_activation", "stackwise_padding")}
    for stack, count in enumerate(counts):
        for index in range(count):
            at = {key: row[stack][index] for key, row in rows.items()}.__getitem__
            filters = adjust_channels(_int(model, "stackwise_num_filters", at("stackwise_num_filters")))
            x = block(b, "InvertedResidualBlock", f"block_{stack + 1}_{index}", {
                "expansion": _int(model, "stackwise_expansion", at("stackwise_expansion")),
                "infilters": infilters, "filters": filters,
                "kernel_size": _int(model, "stackwise_kernel_size", at("stackwise_kernel_size")),
                "stride": _int(model, "stackwise_num_strides", at("stackwise_num_strides")),
                "squeeze_excite_ratio": _ratio(model, "stackwise_se_ratio", at("stackwise_se_ratio")),
                "activation": _text(model, "stackwise_activation", at("stackwise_activation")),
                "padding": _int(model, "stackwise_padding", at("stackwise_padding"), minimum=0)}, x)
            infilters = filters
    return x, len(counts)


@backbone("MobileNetBackbone")
def mobilenet_backbone(model: HubModel) -> BackboneGraph:
    b = FunctionalBuilder(model.name)
    x = b.input("images", image_shape(model, "image_shape"))
    x, channels = stem(b, model, x)
    x, channels = depthwise_block(b, model, x, channels)
    x, stacks = inverted_blocks(b, model, x, channels)
    last = adjust_channels(model.integer("last_layer_filter", maximum=MAX_CHANNELS))
    x = block(b, "ConvBnActBlock", f"block_{stacks + 1}_0", {"filter": last, "activation": "hard_swish"}, x)
    return BackboneGraph(b, x)


@task("MobileNetImageClassifier")
def mobilenet_image_classifier(task_: HubModel, backbone_: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """`pooler` (average, 4-D) -> `classifier_conv` (1x1, hard_silu) -> Flatten -> `predictions`."""
    b = FunctionalBuilder(task_.name)
    features = call_backbone(b, backbone_, graph)
    assert isinstance(features, Ref)  # the backbone returns one feature map
    x = b.layer("GlobalAveragePooling2D", "pooler", {"data_format": "channels_last", "keepdims": True}, features)
    x = b.layer("Conv2D", "classifier_conv", {
        "filters": task_.integer("num_features", 1024, maximum=MAX_SIZE), "kernel_size": [1, 1],
        "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
        "groups": 1, "activation": "hard_silu", "use_bias": True}, x)
    x = b.layer("Flatten", "flatten", {"data_format": "channels_last"}, x)
    x = b.layer("Dense", "predictions", {"units": task_.integer("num_classes", maximum=MAX_SIZE),
                                         "activation": "linear", "use_bias": True}, x)
    return b.build(x)
