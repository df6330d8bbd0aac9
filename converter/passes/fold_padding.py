"""Fold a ZeroPadding into the MaxPooling after it, where the padded zeros cannot change a maximum.

Rule: MaxPool_valid(ZeroPad_p(x)) == MaxPool_pads=p(x), whose padding never wins a max, when
- x >= 0: it comes from a ReLU-family activation (or a layer with such an activation), so a max
  over a window with zeros added equals the max over its real elements;
- every window keeps a real element: each pad is smaller than the pool size on its axis;
- the padding feeds only that pooling (and is no graph output), in the same data_format, and the
  pooling itself is 'valid'.
ResNet's and DenseNet's stems (relu -> ZeroPadding2D(1) -> MaxPooling2D(3, 2)) lose their Pad node:
one pass over the network's largest activation. onnxruntime fuses a Pad into a Conv by itself, but
not into a MaxPool, since it cannot know the input is non-negative.
"""

from __future__ import annotations

from converter.ir import Graph, Node
from converter.layers.registry import handler_for
from converter.layers.traits import AbsorbsZeroPadding


def run(graph: Graph) -> Graph:
    readers = graph.readers()  # once: a folded padding changes no other padding's readers
    outputs = {id(t) for t in graph.outputs}
    folded: set[int] = set()
    for padding in graph.nodes:
        pool = _only_absorbing_reader(padding, readers, outputs)
        if pool is None or not _non_negative(padding.inputs[0].producer):
            continue
        absorber = handler_for(pool)
        if isinstance(absorber, AbsorbsZeroPadding) and absorber.absorb_zero_padding(pool, padding):
            pool.inputs = [padding.inputs[0]]
            for tensor in pool.outputs:  # the padding is computed by the absorbing layer's op now
                tensor.origin = None if tensor.origin is None else tensor.origin.folding(padding.outputs[0].origin)
            folded.add(id(padding))
    graph.set_nodes([node for node in graph.nodes if id(node) not in folded])
    return graph


def _only_absorbing_reader(padding: Node, readers: dict[int, list[Node]], outputs: set[int]) -> Node | None:
    """The one reader of the node's single output, when that reader's handler absorbs zero padding."""
    if len(padding.inputs) != 1 or len(padding.outputs) != 1 or id(padding.outputs[0]) in outputs:
        return None
    users = readers.get(id(padding.outputs[0]), [])
    handler = handler_for(users[0]) if len(users) == 1 else None
    return users[0] if handler is not None and handler.absorbs_zero_padding else None


def _non_negative(producer: Node | None) -> bool:
    handler = None if producer is None else handler_for(producer)
    return producer is not None and handler is not None and len(producer.outputs) == 1 and \
        handler.output_non_negative(producer)
