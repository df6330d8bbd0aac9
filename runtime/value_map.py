"""Reading the Keras-layer → ONNX-value map a kconvert ONNX file carries (written by
converter/value_map.py at lowering). The file may come from anywhere: the map is checked like any
other input, and one that does not parse is reported, never trusted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import FormatError
from converter.value_map import FORMAT_VERSION, KERAS_VALUES_KEY

Perm = tuple[int, ...]
MAX_MAP_BYTES = 64 << 20  # far above any real model's map; a hostile file's is refused before parsing


@dataclass(frozen=True)
class MappedValue:
    """Output `output` of top-level Keras layer `layer` is ONNX value `value`; keras = transpose(onnx, perm)."""

    depth: int
    layer: str
    class_name: str
    output: int
    value: str
    perm: Perm | None
    folded: tuple[str, ...] = ()  # layers folded into this value's ops (a Conv before its BatchNormalization)


@dataclass(frozen=True)
class ValueMap:
    inputs: dict[str, Perm | None]
    outputs: dict[str, Perm | None]
    layers: list[MappedValue]


def read_value_map(metadata: dict[str, str], model: str) -> ValueMap | None:
    """The map in a model's metadata_props, or None when the file has none (not written by kconvert)."""
    text = metadata.get(KERAS_VALUES_KEY)
    if text is None:
        return None
    if len(text) > MAX_MAP_BYTES:
        raise FormatError(f"{model}: its {KERAS_VALUES_KEY} metadata is {len(text)} bytes", hint="the file is damaged")
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise FormatError(f"{model}: its {KERAS_VALUES_KEY} metadata is not JSON ({err})",
                          hint="the file is damaged; reconvert the model") from None
    return _parse(raw, model)


def _parse(raw: Any, model: str) -> ValueMap:
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise FormatError(f"{model}: its {KERAS_VALUES_KEY} metadata is not version {FORMAT_VERSION} of the map",
                          hint="reconvert the model with this kconvert")
    entries = raw.get("layers")
    if not isinstance(entries, list):
        raise _bad(model, "layers")
    layers = [_entry(item, depth, model) for depth, item in enumerate(entries)]
    return ValueMap(_perms(raw.get("inputs"), model, "inputs"), _perms(raw.get("outputs"), model, "outputs"),
                    [m for m in layers if m is not None])


def _entry(item: Any, depth: int, model: str) -> MappedValue | None:
    """One layer's entry; later calls of a shared layer are skipped (Keras names a layer's first call)."""
    if not isinstance(item, dict):
        raise _bad(model, f"layers[{depth}]")
    text = {k: item.get(k) for k in ("layer", "class", "value")}
    numbers = {k: item.get(k) for k in ("call", "output")}
    if not all(isinstance(v, str) for v in text.values()) or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers.values()):
        raise _bad(model, f"layers[{depth}]")
    if numbers["call"] != 0:
        return None
    folded = item.get("folded", [])
    if not isinstance(folded, list) or not all(isinstance(name, str) for name in folded):
        raise _bad(model, f"layers[{depth}].folded")
    return MappedValue(depth, str(text["layer"]), str(text["class"]), int(numbers["output"] or 0),
                       str(text["value"]), _perm(item.get("perm"), model, f"layers[{depth}].perm"), tuple(folded))


def _perms(raw: Any, model: str, field: str) -> dict[str, Perm | None]:
    if not isinstance(raw, dict):
        raise _bad(model, field)
    return {str(name): _perm(perm, model, f"{field}.{name}") for name, perm in raw.items()}


def _perm(raw: Any, model: str, field: str) -> Perm | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or sorted(raw) != list(range(len(raw))) or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise _bad(model, field)
    return tuple(raw)


def _bad(model: str, field: str) -> FormatError:
    return FormatError(f"{model}: the {KERAS_VALUES_KEY} metadata's {field} is malformed",
                       hint="the file is damaged; reconvert the model")


def value_map_of(model: Path) -> ValueMap | None:
    """The map of an ONNX file on disk (parsed with the protobuf classes alone: no onnx import)."""
    from runtime.replay import model_facts

    return read_value_map(model_facts(model).metadata, str(model))
