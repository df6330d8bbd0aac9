"""JSON mutations of single values: wrong types, extreme numbers, odd strings, deep nesting."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from . import json_tree as jt
from .mutant import Skip

JsonOp = Callable[[Any, random.Random], tuple[Any, str]]

DEEP_MARK = "__kconvert_fuzz_deep__:"  # replaced by n nested lists after serialising (json.dumps recurses)
HUGE = (2**31, 2**40, 2**63, 2**64 + 1, 10**30, -(2**40), 1e308, -1e308)
SMALL = (0, -1, -7, -(2**31), 0.0, -0.5)
NONFINITE = (float("nan"), float("inf"), float("-inf"))
ODD_STRINGS = ("", " ", "\x00", "\u202eevil", "\ud800", "e\u0301", "名前", "a" * 100_000, "../../../etc/passwd",
               "\n", "None", "null", "0", "%s%n", "${jndi:x}")
EXAMPLES: tuple[Any, ...] = ("text", 3, 0.5, [1, 2], {"a": 1}, None, True)
# Spatial tuples whose entries Keras reads with int(): [23.0, 23.0] loads in Keras, so it must convert.
INTEGRAL_FLOAT_KEYS = ("pool_size", "strides", "kernel_size", "dilation_rate", "size")


def _pick(tree: Any, rng: random.Random, keep: Callable[[jt.Where, Any], bool]) -> jt.Where:
    """A path whose value passes `keep`; half the time one within a layer's own arguments (units,
    kernel_size, activation, ...), which uniform picking would mostly miss for initializer subtrees."""
    found = jt.paths(tree, keep)
    if not found:
        raise Skip("no target")
    if rng.random() < 0.5:
        layers = set(jt.layers(tree))
        focused = [where for where in found if jt.is_layer_argument(where, layers)]
        found = focused or found
    return rng.choice(found)


def _is_number(_: jt.Where, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(_: jt.Where, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _replace(tree: Any, rng: random.Random, keep: Callable[[jt.Where, Any], bool], pool: tuple[Any, ...],
             what: str) -> tuple[Any, str]:
    where = _pick(tree, rng, keep)
    value = rng.choice(pool)
    jt.put(tree, where, value)
    return tree, f"{what} {jt.show(where)} = {jt.short(value)}"


def delete_key(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, lambda w, _: isinstance(w[-1], str))
    jt.delete(tree, where)
    return tree, f"delete {jt.show(where)}"


def wrong_type(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, lambda _w, _v: True)
    old = type(jt.get(tree, where))
    value = rng.choice([example for example in EXAMPLES if type(example) is not old])
    jt.put(tree, where, value)
    return tree, f"retype {jt.show(where)} from {old.__name__} to {jt.short(value)}"


def huge_number(tree: Any, rng: random.Random) -> tuple[Any, str]:
    return _replace(tree, rng, _is_number, HUGE, "huge")


def small_number(tree: Any, rng: random.Random) -> tuple[Any, str]:
    return _replace(tree, rng, _is_number, SMALL, "zero/negative")


def nonfinite(tree: Any, rng: random.Random) -> tuple[Any, str]:
    return _replace(tree, rng, _is_number, NONFINITE, "non-finite")


def int_as_float(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, _is_int)
    value = float(jt.get(tree, where)) + rng.choice((0.0, 0.0, 0.5))
    jt.put(tree, where, value)
    return tree, f"float {jt.show(where)} = {value}"


def int_as_string(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, _is_int)
    jt.put(tree, where, str(jt.get(tree, where)))
    return tree, f"stringify {jt.show(where)}"


def odd_string(tree: Any, rng: random.Random) -> tuple[Any, str]:
    return _replace(tree, rng, lambda _, v: isinstance(v, str), ODD_STRINGS, "string")


def empty_container(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, lambda _, v: isinstance(v, list | dict) and len(v) > 0)
    jt.put(tree, where, type(jt.get(tree, where))())
    return tree, f"empty {jt.show(where)}"


def deep_nesting(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _pick(tree, rng, lambda _w, _v: True)
    depth = rng.choice((100, 1_000, 10_000, 100_000))
    jt.put(tree, where, f"{DEEP_MARK}{depth}")
    return tree, f"nest {jt.show(where)} in {depth} lists"


def _in_spatial_tuple(where: jt.Where) -> bool:
    """An entry of a list (not a bare int) under one of INTEGRAL_FLOAT_KEYS."""
    return len(where) > 1 and isinstance(where[-1], int) and where[-2] in INTEGRAL_FLOAT_KEYS


def integral_floats(tree: Any, rng: random.Random) -> tuple[Any, str]:
    """Every int inside a spatial tuple becomes the same float: Keras loads that, so must kconvert."""
    targets = jt.paths(tree, lambda w, v: _is_int(w, v) and _in_spatial_tuple(w))
    if not targets:
        raise Skip("no spatial tuples")
    for where in targets:
        jt.put(tree, where, float(jt.get(tree, where)))
    return tree, f"integral floats in {len(targets)} spatial tuple entries"


VALUE_OPS: dict[str, JsonOp] = {
    "delete_key": delete_key, "wrong_type": wrong_type, "huge_number": huge_number,
    "small_number": small_number, "nonfinite": nonfinite, "int_as_float": int_as_float,
    "int_as_string": int_as_string, "odd_string": odd_string, "empty_container": empty_container,
    "deep_nesting": deep_nesting,
}
