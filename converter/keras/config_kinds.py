"""The kinds of value a Keras layer argument holds, each a parser that accepts what Keras accepts.

A parser takes the raw JSON value and the layer's spatial rank (1, 2, 3, or None where the class has
none) and returns the value normalised the way the handlers read it, or raises `Invalid`. What Keras
itself accepts is accepted: integral floats (`pool_size: [23.0, 23.0]`, `units: 64.0` in old files)
become ints, as Keras' own `int(...)` conversions make them; Keras 1's 0/1 bools become bools.
Ints beyond int32 are refused: no Keras size or axis is that large, and ONNX would carry them into
int64 arithmetic or numpy allocations. Whether a valid kind fits the layer (a kernel_size of 3 ints
on a Conv2D, an axis of this input) is the handler's question. `config_fields.py` says which argument
has which kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INT32_MAX = 2**31 - 1
# A config list (a vocabulary, bin boundaries, a window) longer than this is not a real model's.
MAX_LIST_ITEMS = 2**24

Parser = Callable[[Any, "int | None"], Any]


class Invalid(Exception):  # noqa: N818  (internal signal, turned into a FormatError by config_fields)
    """The value is not of the field's kind; config_fields names the layer and the field."""


@dataclass(frozen=True)
class Kind:
    """`expected` may hold `{n}`, replaced by the layer's spatial rank; `example` is what Keras writes."""

    expected: str
    example: str
    parse: Parser

    def describe(self, rank: int | None) -> str:
        return self.expected.replace("{n}", str(rank) if rank else "n")


def integer(value: Any, low: int = -INT32_MAX, high: int = INT32_MAX) -> int:
    """An int, or a float with an integral value (Keras converts with int()); bools are not sizes."""
    if isinstance(value, bool):
        raise Invalid
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise Invalid
    return value


def number(value: Any, low: float = -math.inf, high: float = math.inf) -> float | int:
    """A finite int or float within [low, high]; kept as written (handlers convert with float())."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid
    if not math.isfinite(value) or not low <= value <= high:
        raise Invalid
    return value


def as_list(value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST_ITEMS:
        raise Invalid
    return list(value)


# ---------------------------------------------------------------------------------------- parsers


def positive_int(value: Any, rank: int | None) -> int:
    return integer(value, 1)


def non_negative_int(value: Any, rank: int | None) -> int:
    return integer(value, 0)


def any_int(value: Any, rank: int | None) -> int:
    return integer(value)


def boolean(value: Any, rank: int | None) -> bool:
    """Keras 1 wrote some flags as 0 / 1."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Invalid


def int_tuple(low: int) -> Parser:
    """An int, or one int per spatial axis (the handler checks the count against the layer's rank)."""

    def parse(value: Any, rank: int | None) -> int | list[int]:
        if not isinstance(value, (list, tuple)):
            return integer(value, low)
        items = [integer(v, low) for v in as_list(value)]
        if not items or len(items) > 3:
            raise Invalid
        return items

    return parse


# Keras 1.2 ZeroPadding1D / 2D also took a dict of named amounts.
_NAMED_AMOUNTS = {1: ("left_pad", "right_pad"), 2: ("top_pad", "bottom_pad", "left_pad", "right_pad")}


def amounts(value: Any, rank: int | None) -> Any:
    """ZeroPadding / Cropping: an int, one int per axis, or one (before, after) pair per axis; Keras 1.2's
    (top, bottom, left, right) and {"top_pad": ...} spellings of ZeroPadding2D become pairs."""
    if isinstance(value, dict) and rank in _NAMED_AMOUNTS and set(value) == set(_NAMED_AMOUNTS[rank]):
        value = [value[key] for key in _NAMED_AMOUNTS[rank]]
    if rank == 2 and isinstance(value, (list, tuple)) and len(value) == 4:
        value = [value[:2], value[2:]]
    if not isinstance(value, (list, tuple)):
        return integer(value, 0)
    items = as_list(value)
    if rank == 1 and len(items) == 2 and not any(isinstance(v, (list, tuple)) for v in items):
        return [integer(v, 0) for v in items]
    if not items or (rank is not None and len(items) != rank) or len(items) > 3:
        raise Invalid
    out: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            pair = as_list(item)
            if len(pair) != 2:
                raise Invalid
            out.append([integer(v, 0) for v in pair])
        else:
            out.append(integer(item, 0))
    return out


def target_shape(value: Any, rank: int | None) -> Any:
    """Reshape: ints (Keras 2 may write null for the inferred one); the handler allows one -1 and no 0."""
    items = [value] if not isinstance(value, (list, tuple)) else as_list(value)
    dims = [-1 if v is None else integer(v, -1) for v in items]
    if not dims or len(dims) > 32:
        raise Invalid
    return dims if isinstance(value, (list, tuple)) else dims[0]


def permutation(value: Any, rank: int | None) -> list[int]:
    """Permute: 1-based sample axes (the handler checks they permute the input's axes)."""
    dims = [integer(v, 1, 32) for v in as_list(value)]
    if not dims or len(dims) > 32:
        raise Invalid
    return dims


def axes(value: Any, rank: int | None) -> int | list[int]:
    """One axis or several (negative counts from the end); the handler checks them against the input."""
    if isinstance(value, (list, tuple)):
        items = as_list(value)
        if len(items) > 32:
            raise Invalid
        return [integer(v, -32, 32) for v in items]
    return integer(value, -32, 32)


def one_axis(value: Any, rank: int | None) -> int:
    return integer(value, -32, 32)


def axis_pair(value: Any, rank: int | None) -> int | list[int]:
    """Dot: one axis for both inputs or a pair."""
    parsed = axes(value, rank)
    if isinstance(parsed, list) and len(parsed) != 2:
        raise Invalid
    return parsed


def text(value: Any, rank: int | None) -> str:
    if not isinstance(value, str):
        raise Invalid
    return value


def lowered(value: Any, rank: int | None) -> str:
    """A name Keras lower-cases before using it (padding, data_format)."""
    return text(value, rank).lower()


def finite(low: float = -math.inf, high: float = math.inf) -> Parser:
    def parse(value: Any, rank: int | None) -> float | int:
        return number(value, low, high)

    return parse


def numbers(value: Any, rank: int | None) -> Any:
    """A number or a (nested) list of numbers: per-channel constants, statistics."""
    if isinstance(value, (list, tuple)):
        return [numbers(v, rank) for v in as_list(value)]
    return number(value)


def sorted_numbers(value: Any, rank: int | None) -> list[float | int]:
    values = [number(v) for v in as_list(value)]
    if any(b < a for a, b in zip(values, values[1:])):
        raise Invalid
    return values


def number_pair(value: Any, rank: int | None) -> list[float | int]:
    values = [number(v) for v in as_list(value)]
    if len(values) != 2:
        raise Invalid
    return values


def activation(value: Any, rank: int | None) -> Any:
    """A name, or a Keras 3 serialised object (a registered function or an activation layer)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        return value
    raise Invalid


def dims_or_none(value: Any, rank: int | None) -> Any:
    """EinsumDense / MultiHeadAttention output_shape: an int or a list of ints (None: unknown)."""
    if isinstance(value, (list, tuple)):
        items = as_list(value)
        if len(items) > 32:
            raise Invalid
        return [None if v is None else integer(v, 1) for v in items]
    return integer(value, 1)


def tokens(item: Parser) -> Parser:
    """A lookup vocabulary given in the config: a list of tokens (a file path is refused by the handler)."""

    def parse(value: Any, rank: int | None) -> Any:
        if isinstance(value, str):
            return value
        return [item(v, rank) for v in as_list(value)]

    return parse


def window(value: Any, rank: int | None) -> Any:
    """A window function's name or its weights."""
    if isinstance(value, str):
        return value
    return [number(v) for v in as_list(value)]


def structure(value: Any, rank: int | None) -> Any:
    """A nested config (a wrapped layer, a cell): must be a dict; its own fields are checked on their own."""
    if not isinstance(value, dict):
        raise Invalid
    return value
