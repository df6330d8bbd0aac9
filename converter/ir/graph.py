"""LayerGraph: layers as nodes, tensors as edges, after the file format and before ONNX."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converter.errors import FormatError
from converter.ir.shape import Shape

# kconvert's own node kinds, inserted by passes. The ':' keeps them apart from Keras class names, which
# are Python identifiers (a Keras 3 model may hold a `Transpose` op node of its own).
INTERNAL_TRANSPOSE = "kconvert:Transpose"
INTERNAL_TIMESTEP_MASK = "kconvert:TimestepMask"
INTERNAL_ATTENTION_MASK = "kconvert:AttentionMask"

_WIRING_HINT = "the model's layers are not wired into one graph; is the config complete and undamaged?"

CHANNELS_LAST = "channels_last"
CHANNELS_FIRST = "channels_first"

# The raw ways Keras lets a model state its input shape; Graph.input_specs keeps them per input
# until the shape-semantics pass turns them into one canonical shape.
INPUT_SPEC_KEYS = (
    "batch_shape", "batch_input_shape", "input_shape", "shape", "input_dim", "input_length",
    "batch_size", "dtype",
)
SHAPE_KEYS = ("batch_shape", "batch_input_shape", "input_shape", "shape", "input_dim", "input_length")


@dataclass(eq=False)
class Tensor:
    """A value flowing between layers. `shape` is physical (after the layout pass, channels_first)."""

    name: str
    shape: Shape | None = None
    dtype: str = "float32"
    layout: str | None = None
    producer: Node | None = None

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.shape})"


@dataclass(eq=False)
class Node:
    """One call of one Keras layer, with canonical attributes and weights."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    layer_name: str = ""
    children: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layer_name:
            self.layer_name = self.name

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key)
        return default if value is None else value

    def __repr__(self) -> str:
        return f"Node({self.kind} {self.name!r})"


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    input_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ONNX names of the outputs, fixed when the graph is built so passes may swap tensors freely.
    output_names: list[str] = field(default_factory=list)
    # Called by a pass with a weight array it has replaced (BN folding): a loader that reads weights
    # as views of a mapped file drops their pages here. Keeping the array is always correct.
    release_weight: Callable[[np.ndarray], None] = field(default=lambda array: None, repr=False, compare=False)

    def consumers(self, tensor: Tensor) -> list[Node]:
        return [n for n in self.nodes if any(t is tensor for t in n.inputs)]

    def readers(self) -> dict[int, list[Node]]:
        """Every tensor's consumers (by tensor id), in one walk: for a pass that asks for many tensors,
        where `consumers` per tensor would make the pass quadratic in the number of nodes."""
        out: dict[int, list[Node]] = {}
        for node in self.nodes:
            for tensor_id in dict.fromkeys(id(t) for t in node.inputs):
                out.setdefault(tensor_id, []).append(node)
        return out

    def replace_uses(self, old: Tensor, new: Tensor) -> None:
        for node in self.nodes:
            node.inputs = [new if t is old else t for t in node.inputs]
        self.outputs = [new if t is old else t for t in self.outputs]

    def tensors(self) -> Iterator[Tensor]:
        seen: set[int] = set()
        for t in [*self.inputs, *(o for n in self.nodes for o in n.outputs)]:
            if id(t) not in seen:
                seen.add(id(t))
                yield t

    def validate(self) -> None:
        """Every node input is a graph input or produced earlier; node names are unique; every output is made."""
        available = {id(t) for t in self.inputs}
        names: set[str] = set()
        for node in self.nodes:
            for t in node.inputs:
                if id(t) not in available:
                    raise FormatError(f"layer '{node.layer_name}' reads tensor '{t.name}' before it is produced",
                                      layer=node.layer_name, hint=_WIRING_HINT)
            if node.name in names:
                raise FormatError(f"two nodes are named '{node.name}'", layer=node.layer_name, hint=_WIRING_HINT)
            names.add(node.name)
            available.update(id(t) for t in node.outputs)
        for t in self.outputs:
            if id(t) not in available:
                owner = t.producer.layer_name if t.producer is not None else t.name
                raise FormatError(f"model output '{t.name}' is never produced", layer=owner, hint=_WIRING_HINT)
