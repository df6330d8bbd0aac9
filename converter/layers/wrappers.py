"""Wrappers: TimeDistributed, and the internal nodes it unwraps into.

TimeDistributed applies its wrapped layer (`node.children[0]`) to every time step. Instead of
Keras' loop over steps, batch and time are merged into one axis, the child runs once, and the result is
split back: (batch, time, ...) -> (batch*time, ...) -> child -> (batch, time, ...). The unwrap pass
(passes/unwrap.py) makes that three ordinary nodes (`unwrap`): kconvert:MergeBatchTime, the child, and
kconvert:SplitBatchTime, so cleanup, BN folding and the layout pass see the child like any other node
(a split feeding a merge cancels in cleanup, so TimeDistributed layers in a row run on one merged
tensor). The wrapper stores the child's weights (Keras 3: `time_distributed/layer/vars`), which the
unwrapped child gets.

Every handler emits one layout, and a wrapped layer is emitted only as the ordinary node it becomes:
a wrapper node reaching lowering (a graph loaded with load(optimize=False) and lowered without the
unwrap pass) is refused by `refuse_wrapper_emit`, with what to run instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError, UsageError
from converter.ir import Node, Shape, Tensor
from converter.ir.internal import INTERNAL_MERGE_BATCH_TIME, INTERNAL_SPLIT_BATCH_TIME, SplitBatchTimeSpec
from converter.ir.names import NameAuthority
from converter.ir.spec import CallSite, LayerSpec, NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank, handler_for


def wrapped_child(node: Node) -> tuple[Node, LayerHandler[Any]]:
    """The layer a wrapper (TimeDistributed, SpectralNormalization) wraps, and its handler; the wrapper's
    stored weights are the child's (the same dict, so weights attached to the wrapper reach the child)."""
    if not node.children:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has no wrapped layer in its config",
                                    layer=node.layer_name, hint="the config is incomplete")
    child = node.children[0]
    handler = handler_for(child)
    if handler is None:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' wraps {child.kind} '{child.name}', "
                                    "which kconvert cannot convert", layer=node.layer_name,
                                    hint="register a handler for the wrapped layer (see README, 'Custom layers')")
    child.weights = node.weights
    return child, handler


def check_wrapped_child(node: Node) -> None:
    """The wrapped layer's own refusals, and one output (a wrapper returns one tensor)."""
    child, handler = wrapped_child(node)
    handler.check(child)
    if handler.num_outputs(child) != 1:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' wraps {child.kind}, which has "
                                    "several outputs", layer=node.layer_name, hint="a wrapper passes on one tensor")


def _step_shape(shape: Shape) -> Shape:
    """(batch, time, ...) -> one merged leading axis; its size is unknown to the child."""
    return ("batch", *shape[2:])


def graph_node_of(child: Node, name: str, inputs: list[Tensor], output: Tensor,
                  weights: dict[str, np.ndarray]) -> Node:
    """A wrapped layer as an ordinary graph node of its own (a copy: a shared wrapper's calls share their
    children, and passes rewrite a node's spec and attrs in place). Its ONNX scope is `name`."""
    node = dataclasses.replace(child, name=name, layer_name=child.layer_name, attrs=dict(child.attrs),
                               call=CallSite(), weights=dict(weights), inputs=inputs, outputs=[output],
                               children=list(child.children))
    output.producer = node
    return node


@LAYERS.register("TimeDistributed")
class TimeDistributed(LayerHandler[NoArgs]):
    keras3_args = "layer"
    passes_mask = True  # Keras' TimeDistributed.compute_mask returns the incoming (batch, time) mask
    consumes_sequence = True  # an input_dim/input_length shorthand spells (batch, steps, features)

    required_arguments = ("layer",)

    def check(self, node: Node) -> None:
        check_wrapped_child(node)

    def weight_names(self, node: Node) -> list[str]:
        child, handler = wrapped_child(node)
        return handler.weight_names(child)

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_min_rank(node, input_shapes[0], 3)  # (batch, time, ...): before the child sees a step shape
        child, handler = wrapped_child(node)
        return handler.weight_shapes(child, [_step_shape(input_shapes[0])])

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_min_rank(node, shape, 3)
        child, handler = wrapped_child(node)
        step = _step_shape(shape)
        (out,) = handler.output_shapes(child, [step])[:1]
        # The child's own tensors carry per-step shapes, for handlers that read them while emitting.
        child.inputs = [Tensor(f"{node.name}/step_input", step, node.inputs[0].dtype)]
        child.outputs = [Tensor(f"{node.name}/step_output", tuple(out), producer=child)]
        return [(shape[0], shape[1], *out[1:])]

    def unwrap(self, node: Node, names: NameAuthority) -> list[Node]:
        """Merge batch and time, the child as an ordinary node on the merged tensor, split back; the
        split produces the wrapper's own output tensor, so its readers need no rewiring."""
        child, _ = wrapped_child(node)
        x, out = node.inputs[0], node.outputs[0]
        merge = _internal_node(INTERNAL_MERGE_BATCH_TIME, names.unique(f"{node.name}/merge_batch_time"), node,
                               [x], Tensor("", dtype=x.dtype))
        inner_name = names.unique(f"{node.name}/{child.name}")
        inner = graph_node_of(child, inner_name, [merge.outputs[0]], Tensor(inner_name), node.weights)
        shape = x.shape or ()
        # Unknown sizes after the batch are read from the wrapper's input at run time.
        head = [] if all(isinstance(d, int) for d in (out.shape or ())[1:]) else [x]
        split = _internal_node(INTERNAL_SPLIT_BATCH_TIME, names.unique(f"{node.name}/split_batch_time"), node,
                               [inner.outputs[0], *head], out, SplitBatchTimeSpec(shape[0], shape[1]))
        return [merge, inner, split]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        raise refuse_wrapper_emit(node)


def refuse_wrapper_emit(node: Node) -> UsageError:
    """A wrapper is lowered through its unwrapped nodes only (see the module docstring)."""
    return UsageError(f"{node.kind} '{node.layer_name}' reached lowering still wrapped: the unwrap pass "
                      "replaces it by the layers it wraps", layer=node.layer_name,
                      hint="lower a graph from converter.load() (optimize=True), or run "
                           "converter.passes.unwrap.run(graph) first")


def _internal_node(kind: str, name: str, wrapper: Node, inputs: list[Tensor], output: Tensor,
                   spec: LayerSpec | None = None) -> Node:
    """An unwrap node, under the wrapper's layer name (errors and weights name the Keras layer)."""
    if not output.name:
        output.name = name
    node = Node(kind=kind, name=name, inputs=inputs, outputs=[output], layer_name=wrapper.layer_name)
    if spec is not None:
        node.spec = spec
    output.producer = node
    return node


def _undoes(node: Node, kind: str) -> Tensor | None:
    """The input of the `kind` node feeding `node`, when `node` reshapes it back to that very shape."""
    producer = node.inputs[0].producer
    if producer is None or producer.kind != kind or not producer.inputs:
        return None
    source = producer.inputs[0]
    return source if source.shape is not None and source.shape == node.outputs[0].shape else None


@LAYERS.register(INTERNAL_MERGE_BATCH_TIME)
class MergeBatchTime(LayerHandler[NoArgs]):
    """(batch, time, ...) -> (batch*time, ...): a Reshape, before a time-distributed layer."""

    internal = True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [_step_shape(input_shapes[0])]

    def undone(self, node: Node) -> Tensor | None:
        """Cleanup: a merge of a split gives back the split's input (TimeDistributed layers in a row)."""
        return _undoes(node, INTERNAL_SPLIT_BATCH_TIME)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        node.outputs[0].dtype = node.inputs[0].dtype
        return [_merge_batch_and_time(b, inputs[0], node.inputs[0].shape or ())]


@LAYERS.register(INTERNAL_SPLIT_BATCH_TIME)
class SplitBatchTime(LayerHandler[SplitBatchTimeSpec]):
    """(batch*time, ...) -> (batch, time, ...): a Reshape, after a time-distributed layer. A second input
    (the wrapper's input) gives batch and time at run time when the static sizes do not."""

    internal = True
    spec_type = SplitBatchTimeSpec

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        return [(spec.batch, spec.time, *input_shapes[0][1:])]

    def undone(self, node: Node) -> Tensor | None:
        """Cleanup: a split of a merge gives back the merge's input (a time-distributed identity)."""
        return _undoes(node, INTERNAL_MERGE_BATCH_TIME)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        node.outputs[0].dtype = node.inputs[0].dtype
        out_shape = node.outputs[0].shape or ()
        if len(inputs) == 1:
            return [b.reshape(inputs[0], [-1, *out_shape[1:]])]  # type: ignore[list-item]
        return [_split_batch_and_time(b, inputs[0], inputs[1], out_shape)]


def _merge_batch_and_time(b: OpBuilder, x: str, shape: Shape) -> str:
    rest = shape[2:]
    if all(isinstance(d, int) for d in rest):
        return b.reshape(x, [-1, *rest])  # type: ignore[list-item]
    tail = b.slice(b.op("Shape", x), [2], [len(shape)], [0])
    return b.op("Reshape", x, b.op("Concat", b.ints([-1], "minus_one"), tail, axis=0))


def _split_batch_and_time(b: OpBuilder, y: str, x: str, out_shape: Shape) -> str:
    rest = out_shape[1:]
    if all(isinstance(d, int) for d in rest):
        return b.reshape(y, [-1, *rest])  # type: ignore[list-item]
    head = b.slice(b.op("Shape", x), [0], [2], [0])
    tail = b.slice(b.op("Shape", y), [1], [len(out_shape) - 1], [0])
    return b.op("Reshape", y, b.op("Concat", head, tail, axis=0))
