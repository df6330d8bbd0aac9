"""The base of typed layer specs and of a call's data; handlers' spec classes live with their families."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S", bound="LayerSpec")


@dataclass(frozen=True)
class LayerSpec:
    """A layer's arguments, typed, with Keras' defaults. Subclasses are frozen dataclasses."""

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed (passes rewrite `data_format`, an `axis`, a target shape)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class NoArgs(LayerSpec):
    """The spec of a layer whose output depends on no argument (identities, internal nodes' defaults)."""


@dataclass(frozen=True)
class TensorArg:
    """A tensor among a call's written arguments: the position in `Node.inputs` that holds it."""

    index: int


@dataclass
class CallSite:
    """What one call of a layer passed besides its positional tensors: plain keyword arguments
    (`training`, `return_attention_scores`, ...) and tensor keyword arguments, each naming the positions
    in `Node.inputs` that hold it (`mask`, MultiHeadAttention's `value`, ...).

    `args` / `arg_kwargs` keep the call's arguments as the file wrote them, in place and nested (a list
    passed to `tf.concat`, a slice spec), each tensor replaced by a `TensorArg` and constants kept as their
    JSON values: what a call of a named tensor function (a tf.keras TFOpLambda, a Keras 3 op node) binds
    to the function's parameters. Layers read `kwargs` and `tensor_kwargs`."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_kwargs: dict[str, list[int]] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    arg_kwargs: dict[str, Any] = field(default_factory=dict)

    def tensor_positions(self, name: str) -> list[int]:
        return list(self.tensor_kwargs.get(name) or [])

    def has_tensor(self, name: str) -> bool:
        return bool(self.tensor_kwargs.get(name))

    def positional(self, count: int) -> list[int]:
        """Positions (of `count` inputs) of the positional tensors; a Keras 3 `inputs=` kwarg counts as
        positional, after the others."""
        taken = {i for indices in self.tensor_kwargs.values() for i in indices}
        return [i for i in range(count) if i not in taken] + list(self.tensor_kwargs.get("inputs", []))

    def named_tensors(self, count: int, names: tuple[str, ...], also: tuple[str, ...] = ()) -> dict[str, int]:
        """`names` in call order (attention's query, value, key) -> their input positions, positional
        first, then by keyword; `also` names keyword-only tensors to look up (attention_mask). The third
        name defaults to the second (attention's key is its value unless given)."""
        found = dict(zip(names, self.positional(count)))
        for name, indices in self.tensor_kwargs.items():
            if name in names or name in also:
                found[name] = indices[0]
        if len(names) == 3:
            found.setdefault(names[2], found.get(names[1], -1))
        return found
