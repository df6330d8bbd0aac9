"""Why a layer cannot be converted, and the one error that lists every such layer of a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.keras.legacy_config import legacy_refusal
from converter.layers import LAYERS


@dataclass
class UnsupportedEntry:
    name: str
    class_name: str
    reason: str


def unsupported_error(entries: list[UnsupportedEntry]) -> UnsupportedLayerError:
    lines = "; ".join(f"'{e.name}' ({e.class_name}): {e.reason}" for e in entries)
    return UnsupportedLayerError(
        f"{len(entries)} layer(s) cannot be converted: {lines}",
        layer=entries[0].name,
        hint="register a handler for them (see README, 'Custom layers'); supported classes: "
        + ", ".join(LAYERS.public_names()),
    )


def why_unsupported(cls: str, layer: dict[str, Any]) -> str:
    config = layer.get("config")
    refusal = legacy_refusal(cls, config) if isinstance(config, dict) else None
    if refusal:
        return refusal
    if cls == "Lambda":
        return ("a Lambda layer holds Python code, which kconvert never runs "
                "(converter.extensions.register_lambda gives it a handler by its layer name)")
    if cls == "TFOpLambda" or cls.startswith("TF"):
        return "a raw TensorFlow op, not a Keras layer"
    if layer.get("registered_name") and "Custom>" in str(layer.get("registered_name")):
        return "a custom layer class"
    return "not a layer class kconvert knows"
