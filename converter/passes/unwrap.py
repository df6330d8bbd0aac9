"""Unwrap: wrapper layers become the ordinary graph nodes they wrap.

A wrapper whose handler can `unwrap` (TimeDistributed, keras.layers.Pipeline) is replaced by the nodes it
returns: the wrapped layers as nodes of their own (each with its weights and spec), and for
TimeDistributed the internal nodes that merge batch and time before the layer and split them after it.
The last new node produces the wrapper's own output tensor, so no reader is rewired. Every new node gets
its shapes (and weight checks) from shape inference (the wrapper's own outputs keep theirs), and is
unwrapped in turn (a wrapper in a wrapper).
From here on every pass sees the wrapped layers: cleanup removes a Dropout inside and cancels a split
followed by a merge, BN folding and padding folding reach inside, and the layout pass places the
wrapped spatial layers channels-first like any other.

Bidirectional is not a wrapper here: it is one ONNX RNN op (two Scans around ConvLSTM, layers/bidirectional_conv.py).
"""

from __future__ import annotations

from converter.ir import Graph, Node
from converter.ir.names import NameAuthority
from converter.layers.registry import handler_for
from converter.layers.traits import Unwraps
from converter.passes import shape_inference


def run(graph: Graph) -> Graph:
    if not any(isinstance(handler_for(node), Unwraps) for node in graph.nodes):
        return graph
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.extend(_expand(node, graph.names))
    graph.set_nodes(nodes)
    return graph


def _expand(node: Node, names: NameAuthority) -> list[Node]:
    handler = handler_for(node)
    if not isinstance(handler, Unwraps):
        return [node]
    inferred = [t.shape for t in node.outputs]
    expanded: list[Node] = []
    for new in handler.unwrap(node, names):
        shape_inference.infer(new)
        expanded.extend(_expand(new, names))
    # The wrapper's outputs keep the shapes it inferred: the same dims, but a symbolic dim the wrapped
    # layer names after itself would now carry its node's `<wrapper>/` prefix.
    for tensor, shape in zip(node.outputs, inferred):
        tensor.shape = shape
    return expanded
