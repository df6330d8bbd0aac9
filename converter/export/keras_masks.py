"""Keras 1/2 implicit masks that Keras 3 would not apply, written as explicit `mask=` arguments.

Keras 2 propagated an `Embedding(mask_zero=True)` or `Masking` mask to every recurrent layer
downstream (through mask-passing layers, SpatialDropout included). Keras 3 applies an implicit
mask only to a call with one tensor argument (an LSTM given `initial_state` silently ignores it)
and its SpatialDropout layers drop masks. So for a Keras 1/2 source every recurrent layer that
read a mask gets it explicitly, computed the way Keras 3 files record masks: `not_equal(ids, 0)`
for an Embedding, `any(not_equal(x, mask_value), axis=-1)` for Masking (Keras 3 op nodes).
"""

from __future__ import annotations

from typing import Any

from converter.ir import Graph, Node, Tensor
from converter.ir.spec import CallSite, LayerSpec, NoArgs
from converter.layers.mask_layers import AnySpec
from converter.passes.masking import consumes_mask, mask_carrying, mask_origin, mask_passing, mask_source

# The Keras 1/2 rule: SpatialDropout passes masks on (the graph here is such a file's).
PASSING = mask_passing(keras2=True)


def explicit_masks(graph: Graph) -> None:
    """Give each masked recurrent call of a Keras 1/2 graph its mask as a tensor keyword argument."""
    made: dict[int, Tensor] = {}
    for node in list(graph.nodes):
        kwargs = node.call.tensor_kwargs
        if not consumes_mask(node) or "mask" in kwargs or not node.inputs:
            continue
        mask = _mask_of(graph, node.inputs[0], made)
        if mask is not None:
            node.inputs.append(mask)
            graph.changed()
            node.call.tensor_kwargs = {**kwargs, "mask": [len(node.inputs) - 1]}


def _mask_of(graph: Graph, tensor: Tensor, made: dict[int, Tensor]) -> Tensor | None:
    origin = mask_origin(tensor, PASSING)
    if origin is None:
        return None
    producer, tensor = origin
    if id(producer) in made:
        return made[id(producer)]
    source = mask_source(producer)
    if source is not None and source.source == "embedding":
        made[id(producer)] = _op(graph, producer, "NotEqual", producer.inputs[0], {"positional_constants": [0]})
    elif source is not None:
        differs = _op(graph, producer, "NotEqual", producer.inputs[0],
                      {"positional_constants": [source.mask_value]})
        made[id(producer)] = _op(graph, producer, "Any", differs, {}, {"axis": -1, "keepdims": False},
                                 AnySpec(axis=-1, keepdims=False))
    elif mask_carrying(producer, tensor) and tensor is producer.outputs[0]:
        found = producer.call.tensor_kwargs.get("mask")  # added already: nodes are in order
        return producer.inputs[found[0]] if found else None
    return made.get(id(producer))


def _op(graph: Graph, source: Node, kind: str, x: Tensor, call_kwargs: dict[str, Any],
        attrs: dict[str, Any] | None = None, spec: LayerSpec | None = None) -> Tensor:
    """A Keras 3 op node right after `source` (or after the op it reads); `attrs` are for the writer."""
    name = graph.names.unique(f"{source.layer_name}_{'not_equal' if kind == 'NotEqual' else 'any'}")
    shape = x.shape if kind == "NotEqual" or x.shape is None else tuple(x.shape[:-1])
    out = Tensor(name=name, shape=shape, dtype="bool")
    node = Node(kind=kind, name=name, attrs=dict(attrs or {}), spec=spec or NoArgs(), call=CallSite(kwargs=call_kwargs),
                inputs=[x], outputs=[out], layer_name=name)
    out.producer = node
    after = x.producer if x.producer is not None and x.producer.kind in ("NotEqual",) else source
    graph.insert_after(after, node)
    return out
