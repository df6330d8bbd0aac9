"""Bidirectional(SimpleRNN | GRU | LSTM) as one ONNX op with direction="bidirectional".

Keras runs the forward layer on x and the backward layer (go_backwards=True) on x, flips the backward
outputs back into time order when returning sequences, and merges them (concat / sum / ave / mul, or
None: two outputs). ONNX's reverse direction already writes its outputs in time order, so Y of a
bidirectional op is exactly [forward, flipped backward]. Each direction keeps its own activations
(tf2onnx drops them), so a backward_layer with other activations converts too. Outputs: the merged
output(s), then with return_state the forward states and the backward states (LSTM: h, c each).

Masks: the input is compacted once (see `rnn_emit.py`); with sequence_lens the reverse direction walks
the valid steps last to first, as Keras' backward layer does. Keras forces zero_output_for_mask on
both layers when returning sequences, so masked steps output zeros.

An `RNN(LSTMCell | GRUCell | SimpleRNNCell)` child stands for the layer of its cell (`rnn_wrapper.py`).
Children: `node.children[0]` is the forward layer config; `node.children[1]` the backward_layer when
the file has one (Keras 3 always writes it), else the forward config with go_backwards flipped.
Weights are stored forward first, then backward.

Bidirectional(ConvLSTM1D / 2D / 3D) has no ONNX op of its own: two Scans, see `bidirectional_conv.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.bidirectional_conv import (
    check_conv,
    conv_children,
    conv_num_outputs,
    conv_output_shapes,
    conv_weight_names,
    conv_weight_shapes,
    emit_conv,
)
from converter.layers.builder import OpBuilder
from converter.layers.recurrent import (
    SEQUENCE_MEANING,
    features_of,
    mask_input,
    state_inputs,
    static_time,
)
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.rnn_cells import CellParams, RecurrentSpec, cell_params, cell_weight_names, cell_weight_shapes
from converter.layers.rnn_emit import (
    compact,
    expand,
    final_states,
    initial_states,
    recurrent_op,
    to_time_major,
)
from converter.layers.rnn_wrapper import single_cell
from converter.layers.spec import Config, LayerSpec

SIDES = ("forward", "backward")
MERGE_REDUCE = {"sum": "ReduceSum", "ave": "ReduceMean", "mul": "ReduceProd"}
MERGE_MODES = ("concat", "sum", "ave", "mul", None)


@dataclass(frozen=True)
class BidirectionalSpec(LayerSpec):
    """The wrapper's own argument; the wrapped layers are `node.children`, parsed by their handlers."""

    merge_mode: str | None = "concat"  # None: the two directions are two outputs


def _recurrent(child: Node) -> RecurrentSpec:
    spec = single_cell(child.spec)
    if spec is None:
        raise UnsupportedLayerError(f"'{child.layer_name}' wraps a {child.kind}, not a SimpleRNN, GRU or LSTM",
                                    layer=child.layer_name, hint="only the built-in recurrent layers convert")
    return spec


def directions(node: Node) -> tuple[RecurrentSpec, RecurrentSpec]:
    if not node.children:
        raise UnsupportedLayerError(f"Bidirectional '{node.layer_name}' has no wrapped layer config",
                                    layer=node.layer_name, hint="is the config complete?")
    forward = _recurrent(node.children[0])
    if len(node.children) > 1:
        return forward, _recurrent(node.children[1])
    return forward, forward.replace(go_backwards=not forward.go_backwards)


def _check_directions(node: Node, forward: RecurrentSpec, backward: RecurrentSpec) -> None:
    if forward.cell_kind != backward.cell_kind or forward.units != backward.units:
        raise UnsupportedLayerError(
            f"Bidirectional '{node.layer_name}' pairs a {forward.cell_kind}({forward.units}) with a "
            f"{backward.cell_kind}({backward.units}): one ONNX op needs one cell type and size",
            layer=node.layer_name, hint="use the same layer class and units for both directions")
    if forward.go_backwards or not backward.go_backwards:
        raise UnsupportedLayerError(
            f"Bidirectional '{node.layer_name}' wraps a forward layer with go_backwards=True",
            layer=node.layer_name, hint="wrap a layer with go_backwards=False")


@LAYERS.register("Bidirectional")
class Bidirectional(LayerHandler[BidirectionalSpec]):
    keras3_args = "layer merge_mode backward_layer"
    keras_rnn_call = True
    consumes_mask = True
    consumes_sequence = True

    required_arguments = ("layer",)

    def mask_carrying_outputs(self, node: Node) -> int:
        """layers/traits.MaskedSequences: the sequence output(s), two for merge_mode=None."""
        if conv_children(node) or not directions(node)[0].return_sequences:
            return 0
        return 2 if self.spec(node).merge_mode is None else 1

    def parse(self, config: Config) -> BidirectionalSpec:
        # A missing merge_mode is Keras' default; an explicit null means two outputs.
        mode = config.raw.get("merge_mode", "concat")
        if mode not in MERGE_MODES:
            raise UnsupportedLayerError(f"Bidirectional '{config.ctx.layer_name}' has merge_mode={mode!r}",
                                        layer=config.ctx.layer_name, hint="use concat, sum, ave, mul or None")
        return BidirectionalSpec(merge_mode=mode)

    def check(self, node: Node) -> None:
        # The children are parsed on their own; whether they pair into one ONNX op is the wrapper's question.
        if conv_children(node):
            check_conv(node)
            return
        _check_directions(node, *directions(node))

    def weight_names(self, node: Node) -> list[str]:
        if conv_children(node):
            return conv_weight_names(node)
        return [f"{side}/{name}" for side, cell in zip(SIDES, directions(node)) for name in cell_weight_names(cell)]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        if conv_children(node):
            return conv_weight_shapes(node, input_shapes)
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        features = features_of(input_shapes[0])
        return {f"{side}/{name}": shape for side, cell in zip(SIDES, directions(node))
                for name, shape in cell_weight_shapes(cell, features).items()}

    def num_outputs(self, node: Node) -> int:
        # The graph builder asks also when the parse or check refused the node (one output then).
        spec = node.spec
        if not isinstance(spec, BidirectionalSpec):
            return 1
        merged = 2 if spec.merge_mode is None else 1
        if conv_children(node):
            return conv_num_outputs(node, merged)
        forward = single_cell(node.children[0].spec) if node.children else None
        return merged + (2 * forward.num_states if forward is not None and forward.return_state else 0)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if conv_children(node):
            return conv_output_shapes(node, input_shapes, self.spec(node).merge_mode)
        shape = input_shapes[0]
        expect_rank(node, shape, 3, SEQUENCE_MEANING)
        forward, mode = directions(node)[0], self.spec(node).merge_mode
        width = 2 * forward.units if mode == "concat" else forward.units
        lead = (shape[0], shape[1]) if forward.return_sequences else (shape[0],)
        merged = 2 if mode is None else 1
        return [(*lead, width)] * merged + [(shape[0], forward.units)] * (self.num_outputs(node) - merged)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        if conv_children(node):
            return emit_conv(node, b, inputs, self.spec(node).merge_mode)
        forward = directions(node)[0]
        cells = _cells(node)
        count = cells[0].num_states
        init = initial_states(b, state_inputs(node, inputs), count, 2)
        mask = mask_input(node, inputs)
        packed = None if mask is None else compact(b, inputs[0], mask, static_time(node))
        x_tbf = to_time_major(b, inputs[0]) if packed is None else packed.x_tbf
        outs = recurrent_op(b, x_tbf, cells, "bidirectional", init, None if packed is None else packed.seq_lens)
        mode = self.spec(node).merge_mode
        if forward.return_sequences:
            y = b.transpose(outs[0], [2, 0, 1, 3])  # (batch, time, 2, units)
            if packed is not None:
                y = expand(b, y, 4, packed.steps, mask)
            merged = _merge(b, mode, y, axis=2)
        else:
            merged = _merge(b, mode, outs[1], axis=0)
        if not forward.return_state:
            return merged
        kept = final_states(b, outs[1:1 + count], init, None if packed is None else packed.seq_lens)
        states = [_pick(b, state, d) for d in (0, 1) for state in kept]
        return [*merged, *states]


def _cells(node: Node) -> list[CellParams]:
    cells = []
    for side, cell in zip(SIDES, directions(node)):
        own = {key.split("/", 1)[1]: value for key, value in node.weights.items() if key.startswith(side + "/")}
        cells.append(cell_params(cell, own))
    return cells


def _pick(b: OpBuilder, x: str, index: int, axis: int = 0) -> str:
    return b.op("Gather", x, b.ints(index, "direction"), axis=axis)


def _merge(b: OpBuilder, mode: str | None, y: str, axis: int) -> list[str]:
    """y holds both directions along `axis` (2 for sequences (b, t, 2, u), 0 for Y_h (2, b, u))."""
    if mode is None:
        return [_pick(b, y, 0, axis), _pick(b, y, 1, axis)]
    if mode in MERGE_REDUCE:
        return [b.reduce(MERGE_REDUCE[mode], y, [axis], keepdims=False)]
    if axis == 0:
        y = b.transpose(y, [1, 0, 2])
        return [b.reshape(y, [0, -1])]
    return [b.reshape(y, [0, 0, -1])]

