"""Why a layer cannot be converted, and the one error that lists every such layer of a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.keras.legacy_config import legacy_refusal


@dataclass
class UnsupportedEntry:
    name: str
    class_name: str
    reason: str
    stored_params: int | None = None  # inspect: how many values the file stores for the layer (None: unknown)


# Where the README lists every class kconvert converts (GitHub's anchor of the "Supported layers" heading).
SUPPORTED_TABLE = "README.md#supported-layers"
SHOWN = 20  # layers named in the message; a model with more says how many more


def unsupported_error(entries: list[UnsupportedEntry]) -> UnsupportedLayerError:
    """One error naming the model's unsupported layers (the first SHOWN of them) and where to look."""
    lines = "; ".join(f"'{e.name}' ({e.class_name}): {e.reason}" for e in entries[:SHOWN])
    more = f"; and {len(entries) - SHOWN} more" if len(entries) > SHOWN else ""
    classes = sorted({e.class_name for e in entries})
    return UnsupportedLayerError(
        f"{len(entries)} layer(s) cannot be converted: {lines}{more}",
        layer=entries[0].name,
        hint=f"supported classes: the table in {SUPPORTED_TABLE}; `kconvert inspect` lists every layer with "
             f"the unsupported ones marked; for {', '.join(classes[:SHOWN])}: register a handler "
             "(README, 'Custom layers and Lambda layers': --extension FILE.py)",
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
    if _custom_class(cls, layer):
        return "a custom layer class (give kconvert a handler for it: --extension FILE.py)"
    return "not a layer class kconvert knows"


def _custom_class(cls: str, layer: dict[str, Any]) -> bool:
    """Keras 3 saves a registered class as `package>Name` (`registered_name` in .keras archives), and records
    the module of a class defined outside Keras."""
    module = layer.get("module")
    registered = str(layer.get("registered_name") or "")
    return ">" in cls or ">" in registered or (isinstance(module, str) and not module.startswith("keras"))
