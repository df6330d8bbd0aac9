"""Fold BatchNormalization into the channel-wise linear layer before it (Conv, Dense, ...: handlers with
the `folds_batch_norm` trait, which do the fold themselves through `FoldsChannelScale`).

Rule: BN(layer(x)) == layer'(x) when the layer's output feeds only the BN (and is no graph output),
the layer has no activation and the BN normalises the layer's channel axis. Then with
s = gamma / sqrt(moving_variance + epsilon), layer' has its output channels' kernel entries scaled by
s and bias' = bias * s + beta - moving_mean * s (s and the bias in float64). The BN node disappears.
"""

from __future__ import annotations

import numpy as np

from converter.ir import Graph, Node, Tensor
from converter.layers.registry import handler_for
from converter.layers.traits import ChannelAffine, FoldsChannelScale


def run(graph: Graph) -> Graph:
    """One walk in topological order; a folded BN's output becomes an alias of the layer's output, which
    later nodes read instead (linear in the number of nodes, however many BNs fold)."""
    uses = {tensor_id: len(nodes) for tensor_id, nodes in graph.readers().items()}
    outputs = {id(t) for t in graph.outputs}
    present = {id(n) for n in graph.nodes}
    alias: dict[int, Tensor] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        node.inputs = [alias.get(id(t), t) for t in node.inputs]
        found = _foldable_producer(node, uses, outputs, present)
        replaced = None if found is None else found[1].fold_channel_scale(found[0], *found[2])
        if found is None or replaced is None:
            kept.append(node)
            continue
        bn_out, layer_out = node.outputs[0], found[0].outputs[0]
        alias[id(bn_out)] = layer_out
        # It holds the BN's value now; the layer's own value is computed nowhere, its ops are the BN's.
        layer_out.origin = None if bn_out.origin is None else bn_out.origin.folding(layer_out.origin)
        uses[id(layer_out)] = uses.get(id(bn_out), 0)
        if id(bn_out) in outputs:
            outputs.add(id(layer_out))
        graph.release_weight(replaced)  # a shared layer's other calls may still read it: release, never free
    graph.nodes = kept
    graph.outputs = [alias.get(id(t), t) for t in graph.outputs]
    return graph


def _foldable_producer(bn: Node, uses: dict[int, int], outputs: set[int], present: set[int]
                       ) -> tuple[Node, FoldsChannelScale, tuple[np.ndarray, np.ndarray]] | None:
    """The layer a per-channel affine node (BN) reads, its handler, and the (scale, shift) to fold: when
    the node is the layer's only reader and the fold computes the same."""
    affine = handler_for(bn)
    if not isinstance(affine, ChannelAffine) or len(bn.inputs) != 1:
        return None
    tensor = bn.inputs[0]
    layer = tensor.producer
    handler = None if layer is None else handler_for(layer)
    if layer is None or handler is None or not handler.folds_batch_norm or \
            not isinstance(handler, FoldsChannelScale) or id(layer) not in present or len(layer.outputs) != 1:
        return None
    if uses.get(id(tensor)) != 1 or id(tensor) in outputs or tensor.shape is None:
        return None
    rank = len(tensor.shape)
    channel = handler.channel_axis(layer, rank)  # None under a fused activation
    found = affine.channel_affine(bn, rank)
    if channel is None or found is None or found[2] != channel:
        return None
    return layer, handler, (found[0], found[1])
