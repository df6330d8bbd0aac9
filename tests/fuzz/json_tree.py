"""Addressing a parsed JSON config: paths to every value, get/set/delete by path, and the Keras
structures mutators aim at (layers, references between layers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Key = str | int
Where = tuple[Key, ...]


def walk(node: Any, where: Where = ()) -> Iterator[tuple[Where, Any]]:
    """Every (path, value) in the tree, parents before children (the root is path ())."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*where, index))


def paths(tree: Any, keep: Callable[[Where, Any], bool]) -> list[Where]:
    return [where for where, value in walk(tree) if where and keep(where, value)]


def get(tree: Any, where: Where) -> Any:
    for key in where:
        tree = tree[key]
    return tree


def put(tree: Any, where: Where, value: Any) -> None:
    get(tree, where[:-1])[where[-1]] = value


def delete(tree: Any, where: Where) -> None:
    del get(tree, where[:-1])[where[-1]]


def is_layer(where: Where, value: Any) -> bool:
    """A layer entry: a dict with class_name and config, inside a list (the root model is excluded)."""
    return (bool(where) and isinstance(where[-1], int) and isinstance(value, dict)
            and "class_name" in value and isinstance(value.get("config"), dict))


def layers(tree: Any) -> list[Where]:
    return paths(tree, is_layer)


def layer_name(layer: dict[str, Any]) -> str | None:
    name = layer.get("name", layer["config"].get("name"))
    return name if isinstance(name, str) else None


def is_layer_argument(where: Where, layer_paths: set[Where]) -> bool:
    """`where` is a layer's config argument or an entry of a list one (layers/3/config/kernel_size/0),
    not a value inside a nested object such as an initializer's or a dtype policy's config."""
    for cut in range(max(len(where) - 3, 0), len(where) - 1):
        if where[cut] == "config" and where[:cut] in layer_paths:
            return all(isinstance(key, int) for key in where[cut + 2:])
    return False


def is_reference(where: Where, value: Any) -> bool:
    """A reference to a layer output: Keras 2 `[name, node_index, tensor_index(, kwargs)]` (in
    inbound_nodes, input_layers, output_layers) or Keras 3 `keras_history: [name, node, tensor]`."""
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and all(isinstance(item, int) for item in value[1:3]))


def references(tree: Any) -> list[Where]:
    return paths(tree, is_reference)


def owning_layer(tree: Any, where: Where) -> Where | None:
    """The innermost layer entry whose subtree holds `where`."""
    for cut in range(len(where), 0, -1):
        if is_layer(where[:cut], get(tree, where[:cut])):
            return where[:cut]
    return None


def show(where: Where) -> str:
    return "/".join(str(key) for key in where)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
