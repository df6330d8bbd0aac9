"""The structure of a model config, checked where it is read: nesting depth, layer entries, layer names.

A model config is untrusted input. Before anything walks it, its nesting depth is bounded (the config
walkers of `dialects`, `cudnn` and `calls` then stay far from Python's recursion limit); each model's
`layers` is checked to be a list of `{"class_name": str, "config": object}` entries with string names,
unique within the model (Keras refuses duplicate names; here they would silently merge two layers).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from converter.errors import FormatError
from converter.keras.calls import excerpt
from converter.keras.dialects import canonical_class
from converter.keras.layer_configs import layer_parts

# Real configs nest a few dozen levels (a model in a model adds three: entry, config, layers).
MAX_CONFIG_DEPTH = 256
# Models nested as layers of models; every level is one Python recursion of the graph builder.
MAX_MODEL_DEPTH = 64

_HINT = "is the config complete and undamaged?"


def check_config_tree(raw: Any) -> None:
    """One walk (without recursion) over the whole config, before any other: nesting depth at most
    MAX_CONFIG_DEPTH, and every `class_name` (layers, initializers, policies, ...) a string, as Keras
    writes them, so the config walkers may compare and look up class names; every string valid Unicode
    (names become ONNX names). Errors name the layer whose entry holds the damage."""
    stack: list[tuple[Any, int, str | None]] = [(raw, 1, None)]
    while stack:
        value, depth, owner = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise FormatError(f"the model config nests deeper than {MAX_CONFIG_DEPTH} levels", layer=owner,
                              hint="no Keras model nests this deep; the file is damaged or hostile")
        if isinstance(value, dict):
            owner = _name_in(value) or owner
            if "class_name" in value and not isinstance(value["class_name"], str):
                raise FormatError(f"the model config holds class_name {excerpt(value['class_name'])}, not a "
                                  "class name", layer=owner, hint=_HINT)
            _push_children(stack, value.values(), depth, owner)
            _push_children(stack, value, depth, owner)
        elif isinstance(value, list):
            _push_children(stack, value, depth, owner)
        elif isinstance(value, str) and not _valid_text(value):
            # JSON's \u escapes can spell lone UTF-16 surrogates, which no name or ONNX string can hold.
            raise FormatError(f"the model config holds the string {excerpt(value)}, which is not valid Unicode "
                              "(a lone surrogate)", layer=owner, hint="the file is damaged; Keras writes valid UTF-8")


def _push_children(stack: list[tuple[Any, int, str | None]], children: Collection[Any], depth: int,
                   owner: str | None) -> None:
    """Stack what can still fail the check: containers and non-ASCII strings (numbers, None and ASCII
    text are fine wherever they sit, so they are not stacked, one push and pop for each of a wide
    model's thousands of values). One level deeper than allowed fails on the first child, as it would
    when popped: it is the next item the walk would pop."""
    if depth >= MAX_CONFIG_DEPTH and children:
        raise FormatError(f"the model config nests deeper than {MAX_CONFIG_DEPTH} levels", layer=owner,
                          hint="no Keras model nests this deep; the file is damaged or hostile")
    stack.extend((child, depth + 1, owner) for child in children
                 if isinstance(child, (dict, list)) or (isinstance(child, str) and not child.isascii()))


def _name_in(entry: dict[str, Any]) -> str | None:
    """The name of a `{class_name, config}` layer entry (None for other objects)."""
    if "class_name" not in entry:
        return None
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
    return name if isinstance(name, str) and name and _valid_text(name) else None


def _valid_text(text: str) -> bool:
    return text.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def model_layers(config: Any, model: str) -> list[dict[str, Any]]:
    """The checked layer entries of a Sequential/Functional config (a Keras 1 Sequential is a bare list)."""
    raw = config if isinstance(config, list) else config.get("layers") if isinstance(config, dict) else config
    if not isinstance(raw, list):
        raise FormatError(f"model '{model}': `layers` is {excerpt(raw)}, not a list of layer entries",
                          layer=model, hint=_HINT)
    if not raw:
        raise FormatError(f"model '{model}' has no layers", layer=model, hint=_HINT)
    for index, entry in enumerate(raw):
        check_entry(entry, f"layer {index} of model '{model}'")
    _check_unique_names(raw, model)
    return raw


def check_entry(entry: Any, where: str) -> None:
    """One `{"class_name", "config"}` entry; a Sequential's config may be Keras 1/2's bare list of layers."""
    if not isinstance(entry, dict):
        raise FormatError(f"{where} is {excerpt(entry)}, not a {{class_name, config}} object", hint=_HINT)
    cls = entry.get("class_name")
    if not isinstance(cls, str) or not cls:
        raise FormatError(f"{where}: class_name is {excerpt(cls)}, not a class name", hint=_HINT)
    name = entry.get("name")
    label = f"{where} ({cls} '{name}')" if isinstance(name, str) else f"{where} ({cls})"
    config = entry.get("config")
    bare_list = isinstance(config, list) and canonical_class(cls) == "Sequential"
    if not isinstance(config, dict) and not bare_list:
        raise FormatError(f"{label}: config is {excerpt(config)}, not an object", layer=name if
                          isinstance(name, str) else None, hint=_HINT)
    inner = config.get("name") if isinstance(config, dict) else None
    for field_name, value in (("name", name), ("config.name", inner)):
        if value is not None and not isinstance(value, str):
            raise FormatError(f"{label}: {field_name} is {excerpt(value)}, not a string", hint=_HINT)


def _check_unique_names(entries: list[dict[str, Any]], model: str) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for index, entry in enumerate(entries):
        cls, name, _ = layer_parts(entry)
        if name in seen:
            first, first_cls = seen[name]
            raise FormatError(
                f"model '{model}' has two layers named '{name}': layer {first} ({first_cls}) and layer {index} "
                f"({cls})", layer=name, hint="Keras requires unique layer names; the file is damaged")
        seen[name] = (index, cls)
