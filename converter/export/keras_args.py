"""The constructor arguments Keras 3 layers accept, by class: what the .keras writer may put in a config.

Keras 3's `Layer.__init__` raises on any keyword it does not know, so a Keras 1/2 argument such as
`input_dim`, `input_length`, `implementation`, `time_major` or `fused` must not reach it. Each
handler declares its Keras 3 class's own `__init__` parameters (`keras3_args`, Keras 3.15, read with
`inspect.signature`), without the base `Layer` ones in BASE_ARGS; a class without them has no Keras 3
built-in equivalent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from converter.layers import LAYERS

BASE_ARGS = frozenset({"name", "trainable", "dtype", "activity_regularizer"})
T = TypeVar("T")


def class_fact(value: T | Mapping[str, T], class_name: str, default: T) -> T:
    """One class's value of a handler trait given once or by class name (see LayerHandler)."""
    if isinstance(value, Mapping):
        return value.get(class_name, default)
    return value


def keras3_args(class_name: str) -> frozenset[str] | None:
    """Every keyword the Keras 3 class accepts, or None when Keras 3 has no such layer."""
    handler = LAYERS.get(class_name)
    own = None if handler is None else class_fact(handler.keras3_args, class_name, None)
    if own is None or handler is None:
        return None
    return frozenset(own.split()) if handler.keras3_closed else BASE_ARGS | frozenset(own.split())


def op_module(class_name: str) -> str | None:
    """The module of a Keras 3 operation recorded as a node of its own (the mask of an
    Embedding(mask_zero=True) is `ops.not_equal(ids, 0)`); None for layers."""
    handler = LAYERS.get(class_name)
    return None if handler is None else handler.keras_op_module


def op_args(class_name: str) -> frozenset[str]:
    """An operation's arguments: exactly its own, none of Layer's."""
    handler = LAYERS.get(class_name)
    own = None if handler is None else class_fact(handler.keras3_args, class_name, None)
    return frozenset((own or "").split())
