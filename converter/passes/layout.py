"""Layout: ONNX convolution and pooling are channels-first, so every spatial node runs channels_first.

Rule: every tensor gets a physical permutation of its Keras axes (`physical = transpose(keras, perm)`:
the identity, or channels-first). Walking the nodes in order:
- a channels_last node whose handler is `channels_first_only` switches to channels_first: its spatial
  inputs must arrive channels-first and its spatial outputs leave channels-first;
- a node whose handler accepts its inputs' permutation (`remap_axes`: elementwise layers, and
  axis-carrying layers that rewrite their axis) passes the permutation on, so no Transpose is needed
  around it: Transposes "sink" through activations, merges and normalisation;
- every other node needs Keras' own layout on its inputs.
A Transpose is inserted only where a tensor's permutation differs from what a consumer needs, once per
(tensor, permutation), so a channels_last conv stack pays one Transpose at each spatial input and
output. That Transpose climbs above single-input, size-keeping nodes whose output goes channels-first
(the Rescaling/Normalization at the top of an image model), so they run channels-first too. Graph
inputs feeding spatial layers arrive channels-first with `nchw_inputs`, spatial graph outputs leave
channels-first with `nchw_outputs` (no Transpose at all then). Last, Transpose -> Flatten
-> Dense drops the Transpose and permutes the Dense kernel's rows instead, and a global pooling followed
by a Reshape to its keepdims shape (squeeze-and-excite blocks) keeps its dims instead; a Concatenate
feeding only another Concatenate on the same (now physical) axis is spliced into it (Inception blocks).
Those three folds live in layout_folds.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from converter.ir import Graph, Node, Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.ir.internal import INTERNAL_TRANSPOSE, PermSpec
from converter.ir.shape import Perm, identity_perm, inverse, permute, to_channels_first, to_channels_last
from converter.layers.registry import LayerHandler, handler_for
from converter.passes.layout_folds import fold_flatten_dense, fold_pool_reshape, merge_concatenations

# runtime/check.py and runtime/stored.py import the layout permutations from here.
__all__ = ["LayoutOptions", "Perm", "run", "to_channels_first", "to_channels_last"]


@dataclass(frozen=True)
class LayoutOptions:
    nchw_inputs: bool = False  # spatial graph inputs are given channels-first (the ONNX input is NCHW)
    nchw_outputs: bool = False  # spatial graph outputs are returned channels-first


def run(graph: Graph, options: LayoutOptions | None = None) -> Graph:
    options = LayoutOptions() if options is None else options
    assigner = _Assigner(graph)
    if options.nchw_inputs:
        for tensor in graph.inputs:
            if 3 <= _rank(tensor) <= 5 and id(tensor) in assigner.wants_cf:
                assigner.assign(tensor, to_channels_first(_rank(tensor)))
    for node in list(graph.nodes):
        assigner.visit(node)
    graph.outputs = [assigner.convert(t, _output_perm(assigner.perm_of(t), options)) for t in graph.outputs]
    graph.set_nodes(assigner.nodes)
    fold_flatten_dense(graph)
    fold_pool_reshape(graph)
    merge_concatenations(graph)
    return graph


def _rank(tensor: Tensor) -> int:
    return len(tensor.shape or ())


def _output_perm(have: Perm, options: LayoutOptions) -> Perm:
    keep = options.nchw_outputs and len(have) >= 3 and have == to_channels_first(len(have))
    return have if keep else identity_perm(len(have))


def _is_switched(node: Node, handler: LayerHandler[Any] | None) -> bool:
    return handler is not None and handler.channels_first_only and not handler.is_channels_first(node)


def _may_remap(node: Node, handler: LayerHandler[Any] | None) -> bool:
    if handler is None:
        return False
    return handler.is_layout_agnostic(node) or type(handler).remap_axes is not LayerHandler.remap_axes


class _Assigner:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.perm: dict[int, Perm] = {}
        self.cache: dict[tuple[int, Perm], Tensor] = {}
        self.nodes: list[Node] = []  # the new order, Transposes placed before their readers
        self.wants_cf = self._preferences()

    def _preferences(self) -> set[int]:
        """Tensors some consumer would take channels-first: a switched spatial node reads them, or a
        remappable node whose output is wanted channels-first (walked backwards)."""
        wants: set[int] = set()
        for node in reversed(self.graph.nodes):
            handler = handler_for(node)
            switched = _is_switched(node, handler)
            passes_on = _may_remap(node, handler) and any(id(o) in wants for o in node.outputs)
            for tensor in node.inputs:
                if _rank(tensor) >= 3 and (switched or passes_on):
                    wants.add(id(tensor))
        return wants

    def perm_of(self, tensor: Tensor) -> Perm:
        return self.perm.get(id(tensor), identity_perm(_rank(tensor)))

    def assign(self, tensor: Tensor, perm: Perm) -> None:
        self.perm[id(tensor)] = perm
        if tensor.shape is not None:
            tensor.shape = permute(tensor.shape, perm)
        tensor.layout = CHANNELS_FIRST if len(perm) >= 3 and perm == to_channels_first(len(perm)) else None

    def convert(self, tensor: Tensor, want: Perm) -> Tensor:
        """The tensor with physical permutation `want`: itself, or a (shared) Transpose of it."""
        have = self.perm_of(tensor)
        if have == want:
            return tensor
        key = (id(tensor), want)
        if key not in self.cache:
            inv = inverse(have)
            node = self._transpose(tensor, tuple(inv[w] for w in want), want)
            self.nodes.append(node)
            self.perm[id(node.outputs[0])] = want
            self.cache[key] = node.outputs[0]
        return self.cache[key]

    def _transpose(self, source: Tensor, perm: Perm, want: Perm) -> Node:
        suffix = "to_channels_first" if want == to_channels_first(len(want)) else "to_keras_layout"
        name = self.graph.names.unique(f"{source.name}/{suffix}")
        out = Tensor(name=name, dtype=source.dtype,
                     shape=None if source.shape is None else permute(source.shape, perm))
        node = Node(kind=INTERNAL_TRANSPOSE, name=name, spec=PermSpec(perm=perm), inputs=[source], outputs=[out])
        out.producer = node
        return node

    def visit(self, node: Node) -> None:
        handler = handler_for(node)
        if _is_switched(node, handler):
            self._switch(node)
        elif not self._remap(node, handler):
            node.inputs = [self.convert(t, identity_perm(_rank(t))) for t in node.inputs]
        self.nodes.append(node)

    def _switch(self, node: Node) -> None:
        node.inputs = [self.convert(t, to_channels_first(_rank(t)) if _rank(t) >= 3 else identity_perm(_rank(t)))
                       for t in node.inputs]
        handler = handler_for(node)
        assert handler is not None  # only nodes with a channels_first_only handler are switched
        handler.switch_to_channels_first(node)
        for tensor in node.outputs:
            if _rank(tensor) >= 3:
                self.assign(tensor, to_channels_first(_rank(tensor)))

    def _remap(self, node: Node, handler: LayerHandler[Any] | None) -> bool:
        """Pass the inputs' permutation through the node when its handler can adapt to it."""
        if handler is None or not node.outputs or _rank(node.outputs[0]) < 3:
            return False
        rank = _rank(node.outputs[0])
        ranked = [self.perm_of(t) for t in node.inputs if _rank(t) == rank]
        if ranked:
            counts = Counter(ranked)
            perm = max(counts, key=lambda p: (counts[p], p != identity_perm(rank)))
            if perm == identity_perm(rank) and self._hoists(node, ranked):
                perm = to_channels_first(rank)
        elif any(id(o) in self.wants_cf for o in node.outputs):
            perm = to_channels_first(rank)  # e.g. a Reshape to (1, 1, C) feeding a convolution
        else:
            return False
        if perm == identity_perm(rank) or not handler.remap_axes(node, perm):
            return False
        node.inputs = [self.convert(t, perm if _rank(t) == rank else identity_perm(_rank(t))) for t in node.inputs]
        for tensor in node.outputs:
            if _rank(tensor) == rank:
                self.assign(tensor, perm)
        return True


    def _hoists(self, node: Node, ranked: list[Perm]) -> bool:
        """Whether the Transpose a channels-first consumer needs should move above this node: a
        single-input elementwise node (Rescaling, Normalization, activations) keeps the tensor's size,
        so the Transpose costs the same on either side, while the node's own work gets cheaper
        channels-first (a per-channel constant broadcasts over whole planes, not every few floats)."""
        single = len(ranked) == 1 and len(node.outputs) == 1
        same_size = single and node.inputs[0].shape is not None and node.inputs[0].shape == node.outputs[0].shape
        return same_size and id(node.outputs[0]) in self.wants_cf
