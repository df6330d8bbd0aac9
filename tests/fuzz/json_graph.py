"""JSON mutations of the model's structure: layers deleted, duplicated, renamed, retyped, reordered,
and references between layers made cyclic, dangling or out of range."""

from __future__ import annotations

import copy
import random
from typing import Any

from . import json_tree as jt
from .json_values import JsonOp
from .mutant import Skip

ODD_CLASSES = ("NoSuchLayer", "Lambda", "Functional", "Sequential", "Model", "InputLayer", "TFOpLambda",
               "__keras_tensor__", "Transpose", "", "Merge")
ODD_INDEXES: tuple[Any, ...] = (1, 7, -1, 2**40, "0", None, 0.0)
ODD_SHAPES: tuple[Any, ...] = ([], [None], [None, 0], [None, -1], [None, 2**40], [None] * 20, [None, 3.5], "x",
                               [None, [3]], [2**31, 2**31])
SHAPE_KEYS = ("batch_input_shape", "batch_shape", "input_shape", "target_shape", "shape", "dims")
ODD_DTYPES: tuple[Any, ...] = ("float64", "int8", "bfloat16", "string", "complex64", "bool", "nope",
                               {"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}})


def _layer(tree: Any, rng: random.Random) -> jt.Where:
    found = jt.layers(tree)
    if not found:
        raise Skip("no layers")
    return rng.choice(found)


def _two_layers(tree: Any, rng: random.Random) -> tuple[jt.Where, jt.Where]:
    found = jt.layers(tree)
    if len(found) < 2:
        raise Skip("fewer than two layers")
    first, second = rng.sample(found, 2)
    return first, second


def _layer_names(tree: Any) -> list[str]:
    return [name for where in jt.layers(tree) if (name := jt.layer_name(jt.get(tree, where)))]


def delete_layer(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _layer(tree, rng)
    jt.delete(tree, where)
    return tree, f"delete layer {jt.show(where)}"


def duplicate_layer(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _layer(tree, rng)
    siblings = jt.get(tree, where[:-1])
    siblings.insert(rng.randrange(len(siblings) + 1), copy.deepcopy(jt.get(tree, where)))
    return tree, f"duplicate layer {jt.show(where)}"


def remove_input_layer(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = [w for w in jt.layers(tree) if jt.get(tree, w)["class_name"] == "InputLayer"]
    if not found:
        raise Skip("no InputLayer")
    where = rng.choice(found)
    jt.delete(tree, where)
    return tree, f"remove InputLayer {jt.show(where)}"


def duplicate_name(tree: Any, rng: random.Random) -> tuple[Any, str]:
    first, second = _two_layers(tree, rng)
    name = jt.layer_name(jt.get(tree, second))
    if name is None:
        raise Skip("unnamed layer")
    target = jt.get(tree, first)
    target["config"]["name"] = name
    if "name" in target:
        target["name"] = name
    return tree, f"layer {jt.show(first)} renamed to {name!r} (a duplicate)"


def swap_class(tree: Any, rng: random.Random) -> tuple[Any, str]:
    first, second = _two_layers(tree, rng)
    a, b = jt.get(tree, first), jt.get(tree, second)
    a["class_name"], b["class_name"] = b["class_name"], a["class_name"]
    return tree, f"swap class_name of {jt.show(first)} and {jt.show(second)}"


def odd_class(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _layer(tree, rng)
    jt.get(tree, where)["class_name"] = name = rng.choice(ODD_CLASSES)
    return tree, f"class_name of {jt.show(where)} = {name!r}"


def reorder_layers(tree: Any, rng: random.Random) -> tuple[Any, str]:
    where = _layer(tree, rng)
    siblings = jt.get(tree, where[:-1])
    if len(siblings) < 2:
        raise Skip("one layer")
    if rng.random() < 0.5:
        siblings.reverse()
    else:
        rng.shuffle(siblings)
    return tree, f"reorder {jt.show(where[:-1])}"


def cyclic_reference(tree: Any, rng: random.Random) -> tuple[Any, str]:
    """A reference to the layer that holds it, or to a later one: the graph gets a cycle."""
    found = jt.references(tree)
    if not found:
        raise Skip("no references")
    where = rng.choice(found)
    owner = jt.owning_layer(tree, where)
    names = _layer_names(tree)
    name = jt.layer_name(jt.get(tree, owner)) if owner and rng.random() < 0.5 else rng.choice(names)
    jt.get(tree, where)[0] = name
    return tree, f"reference {jt.show(where)} -> {name!r}"


def dangling_reference(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = jt.references(tree)
    if not found:
        raise Skip("no references")
    where = rng.choice(found)
    jt.get(tree, where)[0] = "no_such_layer"
    return tree, f"reference {jt.show(where)} -> 'no_such_layer'"


def reference_index(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = jt.references(tree)
    if not found:
        raise Skip("no references")
    where = rng.choice(found)
    slot, value = rng.choice((1, 2)), rng.choice(ODD_INDEXES)
    jt.get(tree, where)[slot] = value
    return tree, f"reference {jt.show(where)}[{slot}] = {value!r}"


def odd_inbound(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = jt.paths(tree, lambda w, _: w[-1] == "inbound_nodes")
    if not found:
        raise Skip("no inbound_nodes")
    where = rng.choice(found)
    value: Any = rng.choice(([], {}, "x", [[[]]], [[[[["a", 0, 0]]]]], [None], [{"args": [], "kwargs": None}]))
    jt.put(tree, where, value)
    return tree, f"{jt.show(where)} = {jt.short(value)}"


def odd_shape(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = jt.paths(tree, lambda w, _: w[-1] in SHAPE_KEYS)
    if not found:
        raise Skip("no shapes")
    where = rng.choice(found)
    value = copy.deepcopy(rng.choice(ODD_SHAPES))
    jt.put(tree, where, value)
    return tree, f"{jt.show(where)} = {jt.short(value)}"


def odd_dtype(tree: Any, rng: random.Random) -> tuple[Any, str]:
    found = jt.paths(tree, lambda w, _: w[-1] == "dtype")
    if not found:
        raise Skip("no dtype")
    where = rng.choice(found)
    value = copy.deepcopy(rng.choice(ODD_DTYPES))
    jt.put(tree, where, value)
    return tree, f"{jt.show(where)} = {jt.short(value)}"


def odd_root(tree: Any, rng: random.Random) -> tuple[Any, str]:
    value = rng.choice(([], {}, "model", 1, None, True, [tree], {"config": tree}, {"class_name": "Sequential"}))
    return value, f"root replaced by {jt.short(value)}"


GRAPH_OPS: dict[str, JsonOp] = {
    "delete_layer": delete_layer, "duplicate_layer": duplicate_layer, "remove_input_layer": remove_input_layer,
    "duplicate_name": duplicate_name, "swap_class": swap_class, "odd_class": odd_class,
    "reorder_layers": reorder_layers, "cyclic_reference": cyclic_reference,
    "dangling_reference": dangling_reference, "reference_index": reference_index, "odd_inbound": odd_inbound,
    "odd_shape": odd_shape, "odd_dtype": odd_dtype, "odd_root": odd_root,
}
