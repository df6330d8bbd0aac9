"""Model configs and metadata as JSON: parsed, checked for shape and depth, and dated by content.

Every config enters here (a model.json, an `.h5`'s `model_config` attribute, a `.keras` archive's
config.json): the top level is an object (or a Keras 1 bare list of layer objects), and damaged
text (or nesting deeper than `json` can parse) is a FormatError. The nesting depth of what parses is
bounded by `structure.check_config_tree`, before any recursive walker sees the config; the walks here
use no recursion.

Which Keras wrote a config matters where Keras changed a computation (Keras 3's `hard_sigmoid` is
relu6(x + 3) / 6, Keras 2's is clip(0.2 x + 0.5, 0, 1)). Keras 1/2 files record `keras_version`;
a Keras 3 `to_json()` does not, so `keras_generation` recognises Keras 3 by what only it writes.
"""

from __future__ import annotations

import json
from typing import Any

from converter.errors import FormatError

_HINT = "is this a Keras model file, and is it complete?"


def parse_config(text: str | bytes, what: str) -> dict[str, Any] | list[Any]:
    """A model config: a JSON object, or a Keras 1 Sequential's bare list of layer objects."""
    return check_config(parse_json(text, what), what)


def check_config(value: Any, what: str) -> dict[str, Any] | list[Any]:
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    if not isinstance(value, dict):
        raise FormatError(f"{what} holds a JSON {_json_type(value)}, not a model config object", hint=_HINT)
    return value


def parse_metadata(text: str | bytes, what: str) -> dict[str, Any]:
    """A `.keras` archive's metadata.json: an object whose `keras_version`, if present, is text."""
    value = parse_json(text, what)
    if not isinstance(value, dict):
        raise FormatError(f"{what} holds a JSON {_json_type(value)}, not an object", hint=_HINT)
    recorded_text(value, "keras_version", what)
    return value


def recorded_text(config: Any, key: str, what: str) -> str | None:
    """A top-level text field a Keras 2 config records (`keras_version`, `backend`), or None."""
    value = config.get(key) if isinstance(config, dict) else None
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{what}: '{key}' is a JSON {_json_type(value)}, not text", hint=_HINT)
    return value


def parse_json(text: str | bytes, what: str) -> Any:
    try:
        value = json.loads(text)
        # `json.dump(model.to_json(), f)` writes the config as one JSON string: decode it once more.
        value = json.loads(value) if isinstance(value, str) and value.lstrip()[:1] in ("{", "[") else value
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise FormatError(f"{what} is not valid JSON: {err}", hint="is the file complete?") from None
    except RecursionError:
        raise FormatError(f"{what} nests deeper than JSON can be read", hint=_HINT) from None
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def keras_generation(config: Any) -> str | None:
    """"3" for a config only Keras 3 writes, else None (Keras 1/2 record their version themselves).

    Keras 3 markers: a dtype policy object (`DTypePolicy`, `DTypePolicyMap`, the quantized ones),
    a functional call argument `__keras_tensor__`, an InputLayer stating `batch_shape` (Keras 2's
    is `batch_input_shape`). The `module` / `registered_name` / `build_config` keys Keras 3 writes are
    not enough: tf.keras 2.13-2.15 writes them too.
    """
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if _is_keras3_entry(item):
                return "3"
            stack.extend(item.values())
    return None


def _is_keras3_entry(entry: dict[str, Any]) -> bool:
    class_name = entry.get("class_name")
    if not isinstance(class_name, str):
        return False
    if class_name.endswith("DTypePolicy") or class_name in ("DTypePolicyMap", "__keras_tensor__"):
        return True
    config = entry.get("config")
    return (class_name == "InputLayer" and isinstance(config, dict) and "batch_shape" in config
            and "batch_input_shape" not in config)
