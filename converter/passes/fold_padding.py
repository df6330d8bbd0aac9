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
from converter.layers.activations import activation_name
from converter.layers.pooling import Pooling
from converter.layers.registry import handler_for
from converter.layers.spatial import ZeroPadding

PAIRS = {"ZeroPadding1D": "MaxPooling1D", "ZeroPadding2D": "MaxPooling2D", "ZeroPadding3D": "MaxPooling3D"}
NON_NEGATIVE = frozenset({"relu", "relu6", "sigmoid", "softplus", "softmax", "exponential"})


def run(graph: Graph) -> Graph:
    readers = graph.readers()  # once: a folded padding changes no other padding's readers
    outputs = {id(t) for t in graph.outputs}
    folded: set[int] = set()
    for padding in graph.nodes:
        pool = _foldable_pool(padding, readers, outputs)
        if pool is None:
            continue
        amounts = _amounts(padding)
        pool.attrs["explicit_pads"] = [before for before, _ in amounts] + [after for _, after in amounts]
        pool.inputs = [padding.inputs[0]]
        folded.add(id(padding))
    graph.nodes = [node for node in graph.nodes if id(node) not in folded]
    return graph


def _foldable_pool(padding: Node, readers: dict[int, list[Node]], outputs: set[int]) -> Node | None:
    if padding.kind not in PAIRS or len(padding.inputs) != 1 or id(padding.outputs[0]) in outputs:
        return None
    users = readers.get(id(padding.outputs[0]), [])
    if len(users) != 1 or users[0].kind != PAIRS[padding.kind]:
        return None
    pool = users[0]
    if str(pool.attr("padding", "valid")).lower() != "valid" or "explicit_pads" in pool.attrs:
        return None
    if pool.attr("data_format") != padding.attr("data_format"):
        return None
    size, _ = _pooling(pool).window(pool)
    if any(before >= k or after >= k for (before, after), k in zip(_amounts(padding), size)):
        return None
    return pool if _non_negative(padding.inputs[0].producer) else None


def _amounts(padding: Node) -> tuple[tuple[int, int], ...]:
    handler = handler_for(padding)
    assert isinstance(handler, ZeroPadding)
    return handler.amounts(padding)


def _pooling(pool: Node) -> Pooling:
    handler = handler_for(pool)
    assert isinstance(handler, Pooling)
    return handler


def _non_negative(producer: Node | None) -> bool:
    if producer is None or len(producer.outputs) != 1:
        return False
    if producer.kind == "ReLU":
        slope = producer.attr("negative_slope", 0.0) or 0.0
        threshold = producer.attr("threshold", 0.0) or 0.0
        return float(slope) == 0.0 and float(threshold) >= 0.0
    return activation_name(producer.attrs.get("activation")) in NON_NEGATIVE
