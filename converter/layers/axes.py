"""Axis arguments (`axis`, `axes`, `attention_axes`, ...) resolved against the input they act on.

`config_fields` has made them ints or lists of ints; whether they name axes of *this* input (in range,
each once, not the batch axis) is only known once shapes are, so it is checked here, with the Keras
wording: negative axes count from the end.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError
from converter.ir import Node
from converter.layers.spec import Config


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


# A parsed axis argument: one int, or a tuple of ints (Keras writes a list). Specs keep the two apart,
# so that messages show the value as the file spelled it.
AxisArg = int | tuple[int, ...]


def parse_axis_arg(config: Config, key: str, default: AxisArg = -1) -> AxisArg:
    """An `axis`-like config value as an int or a tuple of ints (null: the default)."""
    value = config.value(key, default)
    return int(value) if isinstance(value, (int, float)) else tuple(int(a) for a in value)


def optional_axis_arg(config: Config, key: str) -> AxisArg | None:
    """Like `parse_axis_arg`, with null kept as None (the layer's own meaning of 'no axes given')."""
    return parse_axis_arg(config, key) if config.has(key) else None


def _as_config_value(value: AxisArg) -> int | list[int]:
    """The value as the config held it (a list), for the resolvers' messages and their one-item rule."""
    return value if isinstance(value, int) else list(value)


def resolve_spec_axes(node: Node, key: str, value: AxisArg, rank: int, batch: bool = False) -> list[int]:
    """`resolve_axes` for a spec's parsed axis argument."""
    return resolve_axes(node, key, _as_config_value(value), rank, batch)


def resolve_spec_axis(node: Node, key: str, value: AxisArg, rank: int) -> int:
    """`resolve_axis` for a spec's parsed axis argument."""
    return resolve_axis(node, key, _as_config_value(value), rank)
