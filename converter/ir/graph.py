"""LayerGraph: layers as nodes, tensors as edges, after the file format and before ONNX."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from converter.errors import FormatError
from converter.ir.internal import (  # noqa: F401  (re-exported: the internal kinds' names)
    INTERNAL_ATTENTION_MASK,
    INTERNAL_TIMESTEP_MASK,
    INTERNAL_TRANSPOSE,
)
from converter.ir.names import NameAuthority
from converter.ir.shape import Shape
from converter.ir.spec import CallSite, LayerSpec, NoArgs

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


@dataclass(frozen=True)
class KerasOutput:
    """Which Keras value a tensor holds: output `index` of call `call` of the top-level layer `layer`.
    Set when the model is read; a pass that makes a tensor hold another layer's value moves it (BN folded
    into the layer before it), one that changes the value drops it (a Flatten reading channels-first).
    Lowering records them in the ONNX file, so `kconvert verify --localize` can name the Keras layer whose
    output diverges."""

    layer: str
    class_name: str
    call: int = 0
    index: int = 0
    folded: tuple[str, ...] = ()  # layers folded into the ops that compute this value (a Conv before its BN)

    def folding(self, other: KerasOutput | None) -> KerasOutput:
        """This value, now also computing `other`'s layer (and what was folded into it)."""
        extra = () if other is None else (*other.folded, other.layer)
        return replace(self, folded=tuple(dict.fromkeys((*extra, *self.folded))))


@dataclass(eq=False)
class Tensor:
    """A value flowing between layers. `shape` is physical (after the layout pass, channels_first)."""

    name: str
    shape: Shape | None = None
    dtype: str = "float32"
    layout: str | None = None
    producer: Node | None = None
    origin: KerasOutput | None = None

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.shape})"


@dataclass(eq=False)
class Node:
    """One call of one Keras layer: its typed spec (parsed once by its handler), the canonical Keras
    config it was parsed from (`attrs`: kept for the Keras archive writer and for user extension handlers,
    which read their own classes' arguments), what the call passed, and its weights."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    spec: LayerSpec = field(default_factory=NoArgs)
    call: CallSite = field(default_factory=CallSite)
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
    # The major Keras version of the source file (keras/versions.py resolves it once, when the graph is built).
    keras_major: int = 2
    # Called by a pass with a weight array it has replaced (BN folding): a loader that reads weights
    # as views of a mapped file drops their pages here. Keeping the array is always correct.
    release_weight: Callable[[np.ndarray], None] = field(default=lambda array: None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._uses: dict[int, list[Node]] | None = None
        self._names: NameAuthority | None = None

    def __setattr__(self, key: str, value: Any) -> None:
        # A pass that rebuilds the node list in one walk assigns it whole: the use index is stale then.
        if key == "nodes":
            object.__setattr__(self, "_uses", None)
        object.__setattr__(self, key, value)

    # -- reading ---------------------------------------------------------------------------------------

    def consumers(self, tensor: Tensor) -> list[Node]:
        """The nodes reading `tensor`, in graph order (each once), from an index kept until the next edit."""
        return list(self._use_index().get(id(tensor), ()))

    def readers(self) -> dict[int, list[Node]]:
        """Every tensor's consumers, by tensor id."""
        return {k: list(v) for k, v in self._use_index().items()}

    def is_output(self, tensor: Tensor) -> bool:
        return any(t is tensor for t in self.outputs)

    def is_input(self, tensor: Tensor) -> bool:
        return any(t is tensor for t in self.inputs)

    @property
    def names(self) -> NameAuthority:
        """The graph's one name authority: node and tensor names handed out by passes come from here."""
        if self._names is None:
            taken = {n.name for n in self.nodes} | {t.name for t in self.tensors()}
            self._names = NameAuthority(taken)
        return self._names

    # -- editing: every structural change goes through these, which keep the use index true -------------

    def changed(self) -> None:
        """Forget the use index after an edit made outside these methods (a node's inputs rewired)."""
        self._uses = None

    def insert_before(self, anchor: Node, *nodes: Node) -> None:
        self.nodes[self._index_of(anchor):self._index_of(anchor)] = list(nodes)
        self._claim(nodes)

    def insert_after(self, anchor: Node, *nodes: Node) -> None:
        at = self._index_of(anchor) + 1
        self.nodes[at:at] = list(nodes)
        self._claim(nodes)

    def append(self, *nodes: Node) -> None:
        self.nodes.extend(nodes)
        self._claim(nodes)

    def remove(self, node: Node) -> None:
        """Remove a node; its outputs must have no readers left (use replace_all_uses first)."""
        del self.nodes[self._index_of(node)]
        self._uses = None

    def replace_all_uses(self, old: Tensor, new: Tensor) -> None:
        """Every reader of `old` (and the graph outputs) reads `new` instead. One walk over the nodes, not the
        use index: it must be right even after inputs were rewired by hand without `changed()`."""
        for node in self.nodes:
            if any(t is old for t in node.inputs):
                node.inputs = [new if t is old else t for t in node.inputs]
        self.outputs = [new if t is old else t for t in self.outputs]
        self._uses = None

    replace_uses = replace_all_uses

    def set_nodes(self, nodes: list[Node]) -> None:
        """Replace the node list wholesale (a pass that rebuilds the order in one walk)."""
        self.nodes = nodes
        self._uses = None

    def _index_of(self, node: Node) -> int:
        for i, candidate in enumerate(self.nodes):
            if candidate is node:
                return i
        raise ValueError(f"{node!r} is not in graph {self.name!r}")

    def _claim(self, nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            self.names.reserve(node.name)
            for tensor in node.outputs:
                self.names.reserve(tensor.name)
        self._uses = None

    def _use_index(self) -> dict[int, list[Node]]:
        if self._uses is None:
            uses: dict[int, list[Node]] = {}
            for node in self.nodes:
                for tensor_id in dict.fromkeys(id(t) for t in node.inputs):
                    uses.setdefault(tensor_id, []).append(node)
            self._uses = uses
        return self._uses

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
