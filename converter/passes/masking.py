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

from converter.errors import UnsupportedLayerError
from converter.ir import Graph, Node, Shape, Tensor
from converter.ir.graph import INTERNAL_ATTENTION_MASK, INTERNAL_TIMESTEP_MASK
from converter.ir.internal import AttentionMaskSpec, TimestepMaskSpec
from converter.layers.registry import handler_for

# GlobalAveragePooling1D averages over the unmasked steps only (its handler reads tensor_kwargs["mask"]).
MASK_CONSUMERS = frozenset({"SimpleRNN", "GRU", "LSTM", "RNN", "Bidirectional", "GlobalAveragePooling1D"})
# Layers whose Keras `compute_mask` returns the incoming mask unchanged (supports_masking, default).
MASK_PASSING = frozenset({
    "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Dense", "BatchNormalization",
    "LayerNormalization", "UnitNormalization", "GroupNormalization", "Normalization", "Rescaling",
    "TimeDistributed",
})
KERAS2_MASK_PASSING = frozenset({"SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"})
DOT_ATTENTION = frozenset({"Attention", "AdditiveAttention"})
HEAD_ATTENTION = frozenset({"MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention"})
# The tensors an attention call takes positionally, in order (Keras' call signature).
ATTENTION_CALL_NAMES = ("query", "value", "key")
# Keras 3 replaces masked positions of these merges' inputs (1 for Multiply, -inf/+inf-like for
# Maximum/Minimum); kconvert refuses that case rather than return other numbers.
KERAS3_MASKED_MERGES = frozenset({"Multiply", "Maximum", "Minimum"})


def run(graph: Graph) -> Graph:
    keras2 = graph.keras_major < 3
    passing = MASK_PASSING | KERAS2_MASK_PASSING if keras2 else MASK_PASSING
    made: dict[int, Tensor] = {}
    for node in list(graph.nodes):
        kwargs = node.call.tensor_kwargs
        if node.kind not in MASK_CONSUMERS or "mask" in kwargs or not node.inputs:
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
        if not keras2 and node.kind in KERAS3_MASKED_MERGES:
            _refuse_masked_merge(graph, node, passing, made)
        if node.kind in DOT_ATTENTION and "mask" not in node.call.tensor_kwargs:
            _mask_dot_attention(graph, node, passing, made)
        elif node.kind in HEAD_ATTENTION:
            _mask_head_attention(graph, node, passing, made)
    return graph


def _refuse_masked_merge(graph: Graph, node: Node, passing: frozenset[str], made: dict[int, Tensor]) -> None:
    if any(_mask_of(graph, t, passing, made) is not None for t in node.inputs):
        raise UnsupportedLayerError(
            f"{node.kind} '{node.layer_name}' receives an implicit mask, which Keras 3 applies to its inputs",
            layer=node.layer_name, hint="kconvert does not reproduce masked merges; drop mask_zero/Masking before it")


def _positional(node: Node) -> list[int]:
    """Indices into node.inputs of the positional tensors (a Keras 3 `inputs=` kwarg counts as positional)."""
    tensor_kwargs = node.call.tensor_kwargs
    taken = {i for indices in tensor_kwargs.values() for i in indices}
    return [i for i in range(len(node.inputs)) if i not in taken] + list(tensor_kwargs.get("inputs", []))


def _call_tensors(node: Node) -> dict[str, int]:
    """query/value/key (and a given attention_mask) -> index into node.inputs; key defaults to value."""
    found = dict(zip(ATTENTION_CALL_NAMES, _positional(node)))
    for name, indices in node.call.tensor_kwargs.items():
        if name in ATTENTION_CALL_NAMES or name == "attention_mask":
            found[name] = indices[0]
    found.setdefault("key", found.get("value", -1))
    return found


def _mask_dot_attention(graph: Graph, node: Node, passing: frozenset[str], made: dict[int, Tensor]) -> None:
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


def _mask_head_attention(graph: Graph, node: Node, passing: frozenset[str], made: dict[int, Tensor]) -> None:
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


def mask_origin(tensor: Tensor, passing: frozenset[str]) -> tuple[Node, Tensor] | None:
    """Walk back through mask-passing layers to the layer whose output may carry a mask, and that output."""
    producer = tensor.producer
    while producer is not None and producer.kind in passing and producer.inputs:
        tensor = producer.inputs[0]
        producer = tensor.producer
    return None if producer is None else (producer, tensor)


def _mask_of(graph: Graph, tensor: Tensor, passing: frozenset[str], made: dict[int, Tensor]) -> Tensor | None:
    origin = mask_origin(tensor, passing)
    if origin is None:
        return None
    producer, tensor = origin
    if producer.kind == "Embedding" and makes_zero_mask(producer):
        return _source_mask(graph, producer, TimestepMaskSpec(source="embedding"), made)
    if producer.kind == "Masking":
        return _source_mask(graph, producer, TimestepMaskSpec(source="masking", mask_value=mask_value(producer)), made)
    if producer.kind in MASK_CONSUMERS and returns_sequences(producer) and _is_sequence(producer, tensor):
        found = producer.call.tensor_kwargs.get("mask")
        return producer.inputs[found[0]] if found else None
    return None


# The spec fields read below are shared by several families' specs (recurrent layers, RNN, Bidirectional's
# children, Embedding, Masking); a consumer whose spec lacks one (GlobalAveragePooling1D) has its default.
def makes_zero_mask(embedding: Node) -> bool:
    return bool(getattr(embedding.spec, "mask_zero", False))


def mask_value(masking: Node) -> float:
    return float(getattr(masking.spec, "mask_value", 0.0))


def returns_sequences(node: Node) -> bool:
    layer = node.children[0] if node.kind == "Bidirectional" and node.children else node
    return bool(getattr(layer.spec, "return_sequences", False))


def _is_sequence(node: Node, tensor: Tensor) -> bool:
    """The sequence outputs: the first, and for Bidirectional(merge_mode=None) the second too."""
    two = node.kind == "Bidirectional" and getattr(node.spec, "merge_mode", "concat") is None
    sequences = 2 if two else 1
    return any(t is tensor for t in node.outputs[:sequences])


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
