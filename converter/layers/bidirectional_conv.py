"""Bidirectional(ConvLSTM1D / 2D / 3D): two ONNX Scans (conv_lstm.py), one per direction, merged as Keras merges.

ONNX's bidirectional RNN op has no convolutional form, so each direction is the ConvLSTM handler's own
emission on a view node (the child's spec and its half of the weights). Facts from Keras'
`layers/rnn/bidirectional.py`:
- the backward layer runs with go_backwards=True, so its sequence comes out last step first; the wrapper
  flips it back along time (axis 1) when returning sequences, and keeps the last h when not;
- the merge joins the two outputs on the LAST axis (`ops.concatenate(..., axis=-1)`), whatever the
  data_format: a channels_first ConvLSTM2D(3) on (b, t, 2, 6, 5) gives (b, t, 3, 6, 10), the last
  spatial axis doubled, not the channels. sum / mul / ave (`(y + y_rev) / 2`) are elementwise; None
  returns both outputs;
- `initial_state` is split in halves: [h, c] of the forward layer, then [h, c] of the backward one, and
  with return_state the final states come in the same order after the merged output(s).
Masks are refused, as for a ConvLSTM alone.
"""

from __future__ import annotations

from typing import TypeVar

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.conv_lstm import CONV_LSTM, ConvLSTM, ConvLSTMSpec
from converter.layers.recurrent import state_inputs
from converter.layers.rnn_emit import reverse_time

SIDES = ("forward", "backward")
T = TypeVar("T")


def conv_children(node: Node) -> bool:
    """True when the wrapper holds a ConvLSTM (then this module handles it, whatever its pair)."""
    return bool(node.children) and isinstance(node.children[0].spec, ConvLSTMSpec)


def conv_directions(node: Node) -> tuple[ConvLSTMSpec, ConvLSTMSpec]:
    forward = node.children[0].spec
    assert isinstance(forward, ConvLSTMSpec)
    if len(node.children) == 1:
        return forward, forward.replace(go_backwards=not forward.go_backwards)
    backward = node.children[1].spec
    if not isinstance(backward, ConvLSTMSpec):
        raise UnsupportedLayerError(
            f"Bidirectional '{node.layer_name}' pairs a ConvLSTM{forward.rank}D with a {node.children[1].kind}",
            layer=node.layer_name, hint="use a ConvLSTM of the same rank as backward_layer")
    return forward, backward


def check_conv(node: Node) -> None:
    forward, backward = conv_directions(node)
    name = node.layer_name
    if "mask" in node.call.tensor_kwargs:
        raise UnsupportedLayerError(f"Bidirectional '{name}' wraps a ConvLSTM and is called with a mask",
                                    layer=name, hint="masked ConvLSTM layers do not convert")
    if forward.go_backwards or not backward.go_backwards:
        raise UnsupportedLayerError(f"Bidirectional '{name}' wraps a forward layer with go_backwards=True",
                                    layer=name, hint="wrap a layer with go_backwards=False")
    for field in ("rank", "data_format", "return_sequences", "return_state"):
        if getattr(forward, field) != getattr(backward, field):
            raise UnsupportedLayerError(
                f"Bidirectional '{name}': the forward and backward ConvLSTM differ in {field} "
                f"({getattr(forward, field)!r} vs {getattr(backward, field)!r})", layer=name,
                hint=f"give both directions the same {field}, as Keras requires")


def _handler(spec: ConvLSTMSpec) -> ConvLSTM:
    return CONV_LSTM[spec.rank]


def _view(node: Node, side: str, spec: ConvLSTMSpec) -> Node:
    """The direction as a ConvLSTM node of its own: its spec, its weights, the wrapper's sequence input."""
    prefix = side + "/"
    own = {key[len(prefix):]: value for key, value in node.weights.items() if key.startswith(prefix)}
    return Node(kind=f"ConvLSTM{spec.rank}D", name=f"{node.name}/{side}", spec=spec, weights=own,
                inputs=node.inputs[:1], layer_name=node.layer_name)


def conv_weight_names(node: Node) -> list[str]:
    return [f"{side}/{name}" for side, spec in zip(SIDES, conv_directions(node))
            for name in _handler(spec).weight_names(_view(node, side, spec))]


def conv_weight_shapes(node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
    return {f"{side}/{name}": shape for side, spec in zip(SIDES, conv_directions(node))
            for name, shape in _handler(spec).weight_shapes(_view(node, side, spec), input_shapes[:1]).items()}


def conv_num_outputs(node: Node, merged: int) -> int:
    spec = node.children[0].spec
    return merged + (4 if isinstance(spec, ConvLSTMSpec) and spec.return_state else 0)


def _halves(items: list[T]) -> tuple[list[T], list[T]]:
    half = len(items) // 2
    return items[:half], items[half:]


def conv_output_shapes(node: Node, input_shapes: list[Shape], mode: str | None) -> list[Shape]:
    sequence = input_shapes[0]
    per_side = [_handler(spec).output_shapes(_view(node, side, spec), [sequence, *given])
                for side, spec, given in zip(SIDES, conv_directions(node), _halves(input_shapes[1:]))]
    forward, backward = per_side
    return [*_merged_shapes(node, mode, forward[0], backward[0]), *forward[1:], *backward[1:]]


def _merged_shapes(node: Node, mode: str | None, forward: Shape, backward: Shape) -> list[Shape]:
    if mode is None:
        return [forward, backward]
    same_lead = tuple(forward[:-1]) == tuple(backward[:-1])
    if not same_lead or (mode != "concat" and forward[-1] != backward[-1]):
        how = "on the last axis" if mode == "concat" else "elementwise"
        raise ShapeError(f"Bidirectional '{node.layer_name}' cannot merge ({mode}) outputs of shapes "
                         f"{tuple(forward)} and {tuple(backward)} {how}", layer=node.layer_name,
                         hint="give both directions the same geometry")
    if mode != "concat":
        return [forward]
    last_f, last_b = forward[-1], backward[-1]
    joined = last_f + last_b if isinstance(last_f, int) and isinstance(last_b, int) else None
    return [(*forward[:-1], joined)]


def emit_conv(node: Node, b: OpBuilder, inputs: list[str], mode: str | None) -> list[str]:
    """Each direction's Scan, the backward sequence flipped back into time order, then the merge."""
    forward_states, backward_states = _halves(state_inputs(node, inputs))
    outs = []
    for side, spec, given in zip(SIDES, conv_directions(node), (forward_states, backward_states)):
        view = _view(node, side, spec)
        b.enter(view)  # the direction's weights and names: `<wrapper>/forward/...`
        outs.append(_handler(spec).emit(view, b, [inputs[0], *given]))
    b.enter(node)
    y, y_rev = outs[0][0], outs[1][0]
    if conv_directions(node)[0].return_sequences:
        y_rev = reverse_time(b, y_rev)
    return [*_merge(b, mode, y, y_rev), *outs[0][1:], *outs[1][1:]]


def _merge(b: OpBuilder, mode: str | None, y: str, y_rev: str) -> list[str]:
    if mode is None:
        return [y, y_rev]
    if mode == "concat":
        return [b.op("Concat", y, y_rev, axis=-1)]
    if mode == "sum":
        return [b.op("Add", y, y_rev)]
    if mode == "mul":
        return [b.op("Mul", y, y_rev)]
    return [b.op("Div", b.op("Add", y, y_rev), b.const(2.0, "two"))]  # ave, as Keras: (y + y_rev) / 2
