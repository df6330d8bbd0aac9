"""Masking: make Keras' implicit timestep masks explicit inputs of the recurrent layers that read them.

Keras attaches a mask to the output of `Embedding(mask_zero=True)` and of `Masking`; layers that
support masking pass it on unchanged (Dropout, Dense, activations, normalisations, ...), a recurrent
layer returning sequences passes it on, and any other layer drops it (Keras 3 warns; Keras 2
refuses to build such a model, except that its SpatialDropout layers, being Dropouts, pass it on).
Rule: for each SimpleRNN / GRU / LSTM / RNN / Bidirectional without an explicit `mask=` argument, walk
back through mask-passing layers; if a mask source is found, a TimestepMask node computing the
(batch, time) bool mask is inserted (one per source, shared) and appended to the layer's inputs
under `tensor_kwargs["mask"]`. An explicit mask is left as the user wired it (Keras 3 functional
files record every mask a call used this way, as `not_equal` / `any` op nodes).

Attention layers read the implicit masks of their inputs too, in Keras 2 and Keras 3 files alike
(neither records them): Attention / AdditiveAttention get `mask=[query_mask, value_mask]`;
MultiHeadAttention / GroupQueryAttention get an AttentionMask node (query x value x key masks, ANDed
with any given `attention_mask`) as their `attention_mask`.
"""

from __future__ import annotations

from collections.abc import Callable

from converter.errors import UnsupportedLayerError
from converter.ir import Graph, Node, Shape, Tensor
from converter.ir.internal import INTERNAL_ATTENTION_MASK, INTERNAL_TIMESTEP_MASK, AttentionMaskSpec, TimestepMaskSpec
from converter.layers.registry import handler_for
from converter.layers.traits import MaskedSequences, MaskSource

# Which layers consume, pass, source or carry masks is each handler's to say (its traits: consumes_mask,
# passes_mask, passes_mask_before_keras3, attention_mask_kind, masked_merge_refused_in_keras3; and the
# MaskSource / MaskedSequences protocols of layers/traits.py). This pass never names a layer class.
Passing = Callable[[Node], bool]
# The tensors an attention call takes positionally, in order (Keras' call signature).
ATTENTION_CALL_NAMES = ("query", "value", "key")


def mask_passing(keras2: bool) -> Passing:
    """Whether a node's output carries its input's mask unchanged, by the rules of the file's Keras: Keras 1/2
    SpatialDropout layers (Dropouts) passed masks on, Keras 3's drop them."""
    def passes(node: Node) -> bool:
        handler = handler_for(node)
        return handler is not None and (handler.passes_mask or (keras2 and handler.passes_mask_before_keras3))

    return passes


def consumes_mask(node: Node) -> bool:
    handler = handler_for(node)
    return handler is not None and handler.consumes_mask


def _attention_kind(node: Node) -> str | None:
    handler = handler_for(node)
    return None if handler is None else handler.attention_mask_kind


def _refuses_masked_merge(node: Node) -> bool:
    handler = handler_for(node)
    return handler is not None and handler.masked_merge_refused_in_keras3


def run(graph: Graph) -> Graph:
    keras2 = graph.keras_major < 3
    passing = mask_passing(keras2)
    made: dict[int, Tensor] = {}
    for node in list(graph.nodes):
        kwargs = node.call.tensor_kwargs
        if not consumes_mask(node) or "mask" in kwargs or not node.inputs:
            continue
        if not keras2 and len(node.inputs) > 1:
            # Keras 3 fills in an implicit mask only for a call with one tensor argument: with
            # initial_state tensors the mask is silently not applied (and none is recorded).
            continue
        mask = _mask_of(graph, node.inputs[0], passing, made)
        if mask is None:
            continue
        node.inputs.append(mask)
        graph.changed()
        node.call.tensor_kwargs = {**kwargs, "mask": [len(node.inputs) - 1]}
    for node in list(graph.nodes):
        if not keras2 and _refuses_masked_merge(node):
            _refuse_masked_merge(graph, node, passing, made)
        kind = _attention_kind(node)
        if kind == "dot" and "mask" not in node.call.tensor_kwargs:
            _mask_dot_attention(graph, node, passing, made)
        elif kind == "heads":
            _mask_head_attention(graph, node, passing, made)
    return graph


def _refuse_masked_merge(graph: Graph, node: Node, passing: Passing, made: dict[int, Tensor]) -> None:
    if any(_mask_of(graph, t, passing, made) is not None for t in node.inputs):
        raise UnsupportedLayerError(
            f"{node.kind} '{node.layer_name}' receives an implicit mask, which Keras 3 applies to its inputs",
            layer=node.layer_name, hint="kconvert does not reproduce masked merges; drop mask_zero/Masking before it")


def _positional(node: Node) -> list[int]:
    return node.call.positional(len(node.inputs))


def _call_tensors(node: Node) -> dict[str, int]:
    """query/value/key (and a given attention_mask) -> index into node.inputs; key defaults to value."""
    return node.call.named_tensors(len(node.inputs), ATTENTION_CALL_NAMES, also=("attention_mask",))


def _mask_dot_attention(graph: Graph, node: Node, passing: Passing, made: dict[int, Tensor]) -> None:
    at = _positional(node)
    query, value = (_mask_of(graph, node.inputs[i], passing, made) for i in at[:2])
    if query is None and value is None:
        return
    if query is None or value is None:
        raise UnsupportedLayerError(
            f"{node.kind} '{node.layer_name}' receives an implicit mask on only one of query and value",
            layer=node.layer_name, hint="pass mask=[query_mask, value_mask] explicitly in the model")
    node.inputs.extend([query, value])
    graph.changed()
    kwargs = node.call.tensor_kwargs
    node.call.tensor_kwargs = {**kwargs, "mask": [len(node.inputs) - 2, len(node.inputs) - 1]}


def _mask_head_attention(graph: Graph, node: Node, passing: Passing, made: dict[int, Tensor]) -> None:
    found = _call_tensors(node)
    roles, masks = [], []
    for role in ("query", "value", "key"):
        index = found.get(role, -1)
        mask = _mask_of(graph, node.inputs[index], passing, made) if index >= 0 else None
        if mask is not None:
            roles.append(role)
            masks.append(mask)
    if not masks:
        return
    if "attention_mask" in found:
        roles.append("given")
        masks.append(node.inputs[found["attention_mask"]])
    out = Tensor(name=graph.names.unique(f"{node.name}/implicit_attention_mask"), dtype="bool")
    mask_node = Node(kind=INTERNAL_ATTENTION_MASK, name=out.name, spec=AttentionMaskSpec(roles=tuple(roles)),
                     inputs=masks, outputs=[out], layer_name=node.layer_name)
    out.producer = mask_node
    out.shape = _output_shape(mask_node)
    graph.insert_before(node, mask_node)
    if "attention_mask" in found:  # the given mask now feeds the combined one, in its place
        node.inputs[found["attention_mask"]] = out
        return
    node.inputs.append(out)
    graph.changed()
    kwargs = node.call.tensor_kwargs
    node.call.tensor_kwargs = {**kwargs, "attention_mask": [len(node.inputs) - 1]}


def _output_shape(node: Node) -> Shape:
    handler = handler_for(node)
    assert handler is not None, f"no handler for kconvert's own {node.kind}"
    return handler.output_shapes(node, [t.shape or () for t in node.inputs])[0]


def mask_origin(tensor: Tensor, passing: Passing) -> tuple[Node, Tensor] | None:
    """Walk back through mask-passing layers to the layer whose output may carry a mask, and that output."""
    producer = tensor.producer
    while producer is not None and passing(producer) and producer.inputs:
        tensor = producer.inputs[0]
        producer = tensor.producer
    return None if producer is None else (producer, tensor)


def _mask_of(graph: Graph, tensor: Tensor, passing: Passing, made: dict[int, Tensor]) -> Tensor | None:
    origin = mask_origin(tensor, passing)
    if origin is None:
        return None
    producer, tensor = origin
    source = mask_source(producer)
    if source is not None:
        return _source_mask(graph, producer, source, made)
    if mask_carrying(producer, tensor):
        found = producer.call.tensor_kwargs.get("mask")
        return producer.inputs[found[0]] if found else None
    return None


def mask_source(node: Node) -> TimestepMaskSpec | None:
    """How the node computes a mask of its own (Embedding(mask_zero=True), Masking), if it does."""
    handler = handler_for(node)
    return handler.timestep_mask(node) if isinstance(handler, MaskSource) else None


def mask_carrying(node: Node, tensor: Tensor) -> bool:
    """Whether `tensor`, an output of a mask consumer, is a sequence carrying the mask that consumer got."""
    handler = handler_for(node)
    if not consumes_mask(node) or not isinstance(handler, MaskedSequences):
        return False
    return any(t is tensor for t in node.outputs[:handler.mask_carrying_outputs(node)])


def _source_mask(graph: Graph, source: Node, spec: TimestepMaskSpec, made: dict[int, Tensor]) -> Tensor:
    if id(source) in made:
        return made[id(source)]
    name = graph.names.unique(f"{source.name}/timestep_mask")
    shape = source.inputs[0].shape
    out = Tensor(name=name, shape=tuple(shape[:2]) if shape is not None else None, dtype="bool")
    node = Node(kind=INTERNAL_TIMESTEP_MASK, name=name, spec=spec, inputs=[source.inputs[0]], outputs=[out],
                layer_name=source.layer_name)
    out.producer = node
    graph.insert_after(source, node)
    made[id(source)] = out
    return out
