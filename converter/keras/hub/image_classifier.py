"""Keras Hub's generic ImageClassifier head (keras_hub/src/models/image_classifier.py), which ResNet's,
EfficientNet's and other backbones' image classifiers use as it is: pooled features, dropout, Dense."""

from __future__ import annotations

from typing import Any

from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.recipes import BackboneGraph, HubModel, call_backbone

POOLERS = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}


def image_classifier(task: HubModel, backbone: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """`pooler` (global average or max over the feature map) -> `output_dropout` -> `predictions`."""
    b = FunctionalBuilder(task.name)
    features = call_backbone(b, backbone, graph)
    assert isinstance(features, Ref)  # image backbones return one feature map
    pooling = task.text("pooling", "avg", choices=tuple(POOLERS))
    x = b.layer(POOLERS[pooling], "pooler", {"data_format": "channels_last", "keepdims": False}, features)
    return b.build(predictions(b, task, x))


def predictions(b: FunctionalBuilder, task: HubModel, x: Ref) -> Ref:
    """`output_dropout` (an identity at inference) -> `predictions` Dense(num_classes, activation)."""
    x = b.layer("Dropout", "output_dropout", {"rate": task.number("dropout", 0.0), "seed": None,
                                              "noise_shape": None}, x)
    activation = task.args.value("activation") or "linear"
    return b.layer("Dense", "predictions", {"units": task.integer("num_classes"), "activation": activation,
                                            "use_bias": True}, x)
