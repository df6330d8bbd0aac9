"""Node weights -> Keras 3 `model.weights.h5` groups (`layers/<saved name>/<sub-object>/vars/<i>`).

Keras 3 stores each layer's own variables in `vars/` in `layer.weights` order and its sub-objects
as child groups: an RNN's `cell`, Bidirectional's `forward_layer/cell` and `backward_layer/cell`,
TimeDistributed's `layer`, MultiHeadAttention's `query_dense`, `key_dense`, `value_dense`,
`output_dense`. The node's weights are already canonical (Keras 1 per-gate arrays merged, Theano
kernels flipped), in that order.
"""

from __future__ import annotations

import h5py
import numpy as np

from converter.export.keras_args import class_fact
from converter.export.keras_config import HARD_SIGMOID
from converter.ir import Node
from converter.layers.registry import LayerHandler, handler_for

MHA_PROJECTIONS = ("query", "key", "value", "output")
# clip(0.2 x + 0.5) == clip((1.2 x) / 6 + 0.5): Keras 2's hard_sigmoid is Keras 3's of 1.2 x.
KERAS2_HARD_SIGMOID_GAIN = 0.2 * 6.0


def _gates(node: Node) -> tuple[str, ...]:
    """The activation argument of each gate of a Keras RNN (whose weights live in its `cell`); () otherwise."""
    handler = handler_for(node)
    return () if handler is None else class_fact(handler.recurrent_gates, node.kind, ())


def var_groups(node: Node, weights: dict[str, np.ndarray] | None = None) -> list[tuple[str, list[np.ndarray]]]:
    """(sub-path below the layer's group, arrays in `vars/` order)."""
    weights = node.weights if weights is None else weights
    if _gates(node):
        return [("cell", list(weights.values()))]
    if node.kind == "Bidirectional" and node.children:
        return [(f"{side}_layer/cell", [a for k, a in weights.items() if k.startswith(side + "/")])
                for side in ("forward", "backward")]
    if node.kind == "TimeDistributed" and node.children:
        return [(f"layer/{path}".rstrip("/"), arrays) for path, arrays in var_groups(node.children[0], weights)]
    if node.kind == "MultiHeadAttention":
        return [(f"{p}_dense", [a for k, a in weights.items() if k.startswith(p + "_")]) for p in MHA_PROJECTIONS]
    return [("", list(weights.values()))]


def keras3_weights(node: Node, source_major: int) -> dict[str, np.ndarray]:
    """The node's weights with Keras 2 hard_sigmoid pre-activations rescaled for Keras 3's formula."""
    if source_major >= 3:
        return dict(node.weights)
    if node.kind == "TimeDistributed" and node.children:
        return _rescaled(node.children[0], dict(node.weights))
    if node.kind == "Bidirectional" and node.children:
        out: dict[str, np.ndarray] = {}
        for side, child in zip(("forward", "backward"), [*node.children, node.children[0]]):
            own = {k.split("/", 1)[1]: a for k, a in node.weights.items() if k.startswith(side + "/")}
            out.update({f"{side}/{k}": a for k, a in _rescaled(child, own).items()})
        return out
    return _rescaled(node, dict(node.weights))


def _rescaled(node: Node, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    gain = KERAS2_HARD_SIGMOID_GAIN
    gates = _gates(node)
    if gates:
        units = int(node.attrs["units"] if "units" in node.attrs else node.attrs["filters"])
        columns = _rnn_columns(node, gates, units)
        if columns:
            weights = {k: _scale_columns(a, columns, gain) for k, a in weights.items()}
        return weights
    if node.attrs.get("activation") != HARD_SIGMOID:
        return weights
    names = (handler_for(node) or LayerHandler).affine_weights
    return {k: (a * a.dtype.type(gain) if k in names else a) for k, a in weights.items()}


def _rnn_columns(node: Node, gates: tuple[str, ...], units: int) -> list[slice]:
    """Gate columns (blocks of `units` along the last weight axis) whose activation is a Keras 2 hard_sigmoid
    (LSTM: gates i, f, c, o, recurrent_activation on i, f, o; GRU: z, r, h, recurrent_activation on z, r)."""
    hard = {key for key in set(gates) if node.attrs.get(key) == HARD_SIGMOID}
    return [slice(i * units, (i + 1) * units) for i, key in enumerate(gates) if key in hard]


def _scale_columns(array: np.ndarray, columns: list[slice], gain: float) -> np.ndarray:
    out = np.array(array, copy=True)
    for cols in columns:
        out[..., cols] = out[..., cols] * out.dtype.type(gain)
    return out


def write_layer_vars(group: h5py.Group, node: Node | None, source_major: int) -> None:
    """Create the layer's groups (Keras writes an empty `vars` for weightless layers too)."""
    group.create_group("vars")
    if node is None or not node.weights:
        return
    for path, arrays in var_groups(node, keras3_weights(node, source_major)):
        target = group.require_group(path) if path else group
        vars_group = target.require_group("vars")
        for i, array in enumerate(arrays):
            vars_group.create_dataset(str(i), data=np.asarray(array))
