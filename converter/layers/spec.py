"""Typed layer specs: each handler parses its layer's config once, at the boundary, into a frozen spec.

The boundary (keras/layer_configs.make_node) has already validated every argument's kind
(keras/config_fields.py) and canonicalised Keras 1/2/3 spellings; `Config` reads those values with
their types and their defaults, and `parse_fields` fills a spec dataclass whose field names are the
Keras argument names and whose defaults are Keras' own: declared once, in the spec. Handlers then
read `spec.kernel_size`, never `config["kernel_size"]`. Version-dependent meaning (Keras 2 and 3
disagree on a default or a rule) is decided here too, from `ParseContext.keras_major`, resolved once
per file.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from converter.errors import UnsupportedLayerError
from converter.ir.spec import LayerSpec, NoArgs, S

__all__ = ["Config", "LayerSpec", "NoArgs", "ParseContext", "parse_fields"]



@dataclass(frozen=True)
class ParseContext:
    """What a parse may depend on besides the config: who is parsed, and which Keras wrote the file."""

    kind: str
    layer_name: str
    keras_major: int = 2  # legacy files without a recorded version predate Keras 3

    @property
    def keras3(self) -> bool:
        return self.keras_major >= 3


class Config:
    """Typed reads of one validated, canonical layer config. A missing or null value is the default."""

    def __init__(self, raw: Mapping[str, Any], ctx: ParseContext) -> None:
        self.raw = raw
        self.ctx = ctx

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def value(self, key: str, default: Any = None) -> Any:
        """An argument whose structure the family parses itself (nested dicts, lists of mixed items)."""
        value = self.raw.get(key)
        return default if value is None else value

    def integer(self, key: str, default: int | None = None) -> int:
        return int(self._required(key, default))

    def optional_integer(self, key: str) -> int | None:
        value = self.raw.get(key)
        return None if value is None else int(value)

    def number(self, key: str, default: float | None = None) -> float:
        return float(self._required(key, default))

    def optional_number(self, key: str) -> float | None:
        value = self.raw.get(key)
        return None if value is None else float(value)

    def flag(self, key: str, default: bool) -> bool:
        return bool(self.value(key, default))

    def text(self, key: str, default: str | None = None) -> str:
        return str(self._required(key, default))

    def optional_text(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None else str(value)

    def ints(self, key: str, n: int, default: Any = None) -> tuple[int, ...]:
        """An int-or-tuple argument (kernel_size, strides, ...) as n ints: one int, or one item, repeats."""
        value = self._required(key, default)
        values = [value] * n if isinstance(value, (int, float)) else list(value)
        if len(values) == 1 and n > 1:
            values = values * n
        if len(values) != n or not all(isinstance(v, (int, float)) and int(v) == v and v >= 0 for v in values):
            raise self.refuse(key, value, f"expected {n} non-negative ints")
        return tuple(int(v) for v in values)

    def int_list(self, key: str, default: tuple[int, ...] = ()) -> tuple[int, ...]:
        """A list of ints of any length (axes, target shapes); a single int is a list of one."""
        value = self.value(key, default)
        values = [value] if isinstance(value, (int, float)) else list(value)
        return tuple(int(v) for v in values)

    def float_list(self, key: str, default: tuple[float, ...] = ()) -> tuple[float, ...]:
        value = self.value(key, default)
        values = [value] if isinstance(value, (int, float)) else list(value)
        return tuple(float(v) for v in values)

    def refuse(self, key: str, value: Any, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{self.ctx.kind} '{self.ctx.layer_name}' has {key}={value!r}; {why}",
                                     layer=self.ctx.layer_name, hint="fix the layer config")

    def _required(self, key: str, default: Any) -> Any:
        value = self.raw.get(key)
        if value is not None:
            return value
        if default is None:
            raise UnsupportedLayerError(f"{self.ctx.kind} '{self.ctx.layer_name}' has no {key}",
                                        layer=self.ctx.layer_name,
                                        hint=f"Keras requires {key} for {self.ctx.kind}; the config is incomplete")
        return default


def parse_fields(spec_type: type[S], config: Config, **given: Any) -> S:
    """Fill `spec_type` from the config: each field not in `given` is read by its own name, coerced by
    its annotation (int, float, bool, str, tuple[int, ...], their Optionals), or takes the field's
    default when the config has no value. A field without a default is required."""
    hints = _type_hints(spec_type)
    values = dict(given)
    for f in dataclasses.fields(spec_type):
        if f.name in values or not f.init:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if not config.has(f.name):
            if not has_default:
                config._required(f.name, None)
            continue  # the dataclass default applies
        values[f.name] = _coerce(config, f.name, hints[f.name])
    return spec_type(**values)


_HINTS: dict[type[LayerSpec], dict[str, Any]] = {}


def _type_hints(spec_type: type[LayerSpec]) -> dict[str, Any]:
    """A spec class's resolved field annotations, once per class (resolving them costs more than a parse)."""
    hints = _HINTS.get(spec_type)
    if hints is None:
        hints = _HINTS[spec_type] = get_type_hints(spec_type)
    return hints


def _coerce(config: Config, key: str, annotation: Any) -> Any:
    optional, inner = _unwrap_optional(annotation)
    value = config.raw.get(key)
    if value is None and optional:
        return None
    if inner is bool:
        return bool(value)
    if inner is int:
        return config.integer(key)
    if inner is float:
        return config.number(key)
    if inner is str:
        return config.text(key)
    if get_origin(inner) is tuple:
        args = get_args(inner)
        if args and args[0] is float:
            return config.float_list(key)
        if args and args[0] is int:
            return config.int_list(key)
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return value  # Any, dicts, nested configs: the family's own parse gives them structure


def _unwrap_optional(annotation: Any) -> tuple[bool, Any]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        return optional, args[0] if len(args) == 1 else Any
    return False, annotation
