"""Axis arguments (`axis`, `axes`, `attention_axes`, ...) resolved against the input they act on.

`config_fields` has made them ints or lists of ints; whether they name axes of *this* input (in range,
each once, not the batch axis) is only known once shapes are, so it is checked here, with the Keras
wording: negative axes count from the end.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError
from converter.ir import Node


def resolve_axes(node: Node, key: str, value: Any, rank: int, batch: bool = False) -> list[int]:
    """`value` (an int or a list of ints) as sorted non-negative axes of a rank-`rank` input."""
    values = [value] if isinstance(value, int) else list(value)
    out = sorted({a + rank if a < 0 else a for a in values})
    lowest = 0 if batch else 1
    if not values or len(out) != len(values) or out[0] < lowest or out[-1] >= rank:
        where = "the axes" if batch else "the sample axes (1 and up; 0 is the batch)"
        raise ShapeError(f"{node.kind} '{node.layer_name}' has {key}={value!r}, which does not name {where} of its "
                         f"rank-{rank} input, each once", layer=node.layer_name,
                         hint=f"{key} counts from 0 (negative from the end) over the input's axes")
    return out


def resolve_axis(node: Node, key: str, value: Any, rank: int) -> int:
    """One sample axis (an int; a one-element list is accepted, as Keras serialises some axes as lists)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int):
        raise ShapeError(f"{node.kind} '{node.layer_name}' has {key}={value!r}; it takes one axis",
                         layer=node.layer_name, hint=f"give {key} as a single int")
    return resolve_axes(node, key, value, rank)[0]
