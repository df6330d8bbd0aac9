"""SimpleRNN, GRU and LSTM as one ONNX RNN / GRU / LSTM op each (never a Loop).

Cell parameters and activations: `rnn_cells.py`; layout and masks: `rnn_emit.py`; Bidirectional:
`bidirectional.py`. Outputs follow Keras: the sequence (`return_sequences`) or the last output, then
with `return_state` the final states (LSTM: h, c; GRU / SimpleRNN: h). With `go_backwards` Keras
walks the sequence from its end and returns the outputs in that (reversed) order.

Inputs: the sequence first; initial states follow, from Keras 2 (`inbound_nodes` list them after the
sequence) or Keras 3 (`initial_state=` tensor kwargs); a mask is the input named by
`tensor_kwargs["mask"]`, given explicitly or attached by the masking pass.

Streaming (`--streaming`, passes/streaming.py through the StreamsState trait below): the initial
states become graph inputs `<layer>/h_in` (`<layer>/c_in`) appended after the sequence and mask, and
the final states graph outputs `<layer>/h_out` (`<layer>/c_out`), so a deployment feeds a long
sequence chunk by chunk, each chunk's final states the next chunk's initial states (zeros first).
Without `--streaming`, `stateful=True` converts as a stateless layer whose initial states are zeros
(Keras does not save the states, so a freshly loaded stateful model predicts from zero states), with
a warning pointing at `--streaming`.
"""

from __future__ import annotations

from dataclasses import replace

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.rnn_cells import (
    CellParams,
    RecurrentSpec,
    cell_params,
    cell_weight_names,
    cell_weight_shapes,
    parse_cell,
)
from converter.layers.rnn_emit import (
    compact,
    expand,
    final_states,
    initial_states,
    recurrent_op,
    reverse_time,
    to_time_major,
)
from converter.layers.spec import Config

SEQUENCE_MEANING = "(batch, timesteps, features)"


def tensor_kwarg_indices(node: Node, key: str) -> list[int]:
    kwargs = node.call.tensor_kwargs
    return list(kwargs.get(key) or [])


def mask_input(node: Node, inputs: list[str]) -> str | None:
    found = tensor_kwarg_indices(node, "mask")
    return inputs[found[0]] if found else None


def state_inputs(node: Node, inputs: list[str]) -> list[str]:
    """Everything after the sequence that is not the mask: the initial states, in Keras order."""
    skip = {0, *tensor_kwarg_indices(node, "mask")}
    return [name for i, name in enumerate(inputs) if i not in skip]


def static_time(node: Node) -> int | None:
    shape = node.inputs[0].shape or ()
    return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None


def features_of(shape: Shape) -> int | None:
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def batch_major(b: OpBuilder, y: str) -> str:
    """ONNX Y of one direction (time, 1, batch, units) -> (batch, time, units)."""
    return b.transpose(b.squeeze(y, [1]), [1, 0, 2])


def last_step_mask(b: OpBuilder, mask: str) -> str:
    return b.op("Cast", b.slice(mask, [-1], [INT64_MAX], [1]), to=1)


INT64_MAX = 2**63 - 1


@LAYERS.register("SimpleRNN", "GRU", "LSTM")
class Recurrent(LayerHandler[RecurrentSpec]):
    """One ONNX op of the same name; see the module docstring for inputs, outputs and masks."""

    keras3_args = {
        "GRU": ("units activation recurrent_activation use_bias kernel_initializer "
                "recurrent_initializer bias_initializer kernel_regularizer recurrent_regularizer "
                "bias_regularizer kernel_constraint recurrent_constraint bias_constraint dropout "
                "recurrent_dropout seed return_sequences return_state go_backwards stateful unroll "
                "reset_after use_cudnn zero_output_for_mask"),
        "LSTM": ("units activation recurrent_activation use_bias kernel_initializer "
                 "recurrent_initializer bias_initializer unit_forget_bias kernel_regularizer "
                 "recurrent_regularizer bias_regularizer kernel_constraint recurrent_constraint "
                 "bias_constraint dropout recurrent_dropout seed return_sequences return_state "
                 "go_backwards stateful unroll use_cudnn zero_output_for_mask"),
        "SimpleRNN": ("units activation use_bias kernel_initializer recurrent_initializer "
                      "bias_initializer kernel_regularizer recurrent_regularizer bias_regularizer "
                      "kernel_constraint recurrent_constraint bias_constraint dropout "
                      "recurrent_dropout return_sequences return_state go_backwards stateful unroll "
                      "seed zero_output_for_mask"),
    }
    keras_rnn_call = True
    recurrent_gates = {
        "GRU": ("recurrent_activation", "recurrent_activation", "activation"),
        "LSTM": ("recurrent_activation", "recurrent_activation", "activation", "recurrent_activation"),
        "SimpleRNN": ("activation",),
    }
    affine_activations = {
        "GRU": ("activation", "recurrent_activation"),
        "LSTM": ("recurrent_activation",),
        "SimpleRNN": ("activation",),
    }

    consumes_mask = True
    consumes_sequence = True

    required_arguments = ("units",)  # also of their cells (GenericRNN.cell_layers)

    def mask_carrying_outputs(self, node: Node) -> int:
        """layers/traits.MaskedSequences: the sequence output carries the mask on."""
        return 1 if self.spec(node).return_sequences else 0

    def parse(self, config: Config) -> RecurrentSpec:
        return parse_cell(config)

    # layers/traits.StreamsState
    def state_slots(self, node: Node) -> tuple[str, ...]:
        return ("h", "c")[:self.spec(node).num_states]

    def state_shapes(self, node: Node) -> list[Shape]:
        batch = (node.inputs[0].shape or (None,))[0]
        return [(batch, self.spec(node).units)] * self.spec(node).num_states

    def is_stateful(self, node: Node) -> bool:
        return self.spec(node).stateful

    def has_initial_states(self, node: Node) -> bool:
        return bool(state_inputs(node, [t.name for t in node.inputs]))

    def return_states(self, node: Node) -> None:
        node.spec = replace(self.spec(node), return_state=True)

    def weight_names(self, node: Node) -> list[str]:
        return cell_weight_names(self.spec(node))

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        # The rank error explains a wrong input_shape better than the weight mismatch it causes.
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        return cell_weight_shapes(self.spec(node), features_of(input_shapes[0]))

    def num_outputs(self, node: Node) -> int:
        # A node whose parse was refused keeps a bare spec; the graph builder still asks (one output then).
        spec = node.spec
        return 1 + spec.num_states if isinstance(spec, RecurrentSpec) and spec.return_state else 1

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 3, SEQUENCE_MEANING)
        spec = self.spec(node)
        out: Shape = (shape[0], shape[1], spec.units) if spec.return_sequences else (shape[0], spec.units)
        state: Shape = (shape[0], spec.units)
        return [out] + [state] * (self.num_outputs(node) - 1)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        cell = cell_params(spec, node.weights)
        init = initial_states(b, state_inputs(node, inputs), cell.num_states, 1)
        mask = mask_input(node, inputs)
        if mask is None:
            y, outs = _unmasked(spec, b, inputs[0], cell, init)
            states = outs[1:]
        else:
            y, outs, seq_lens = _masked(spec, b, inputs[0], mask, cell, init, static_time(node))
            states = final_states(b, outs[1:], init, seq_lens)
        if not spec.return_state:
            return [y]
        return [y, *(b.squeeze(state, [0]) for state in states)]


def _unmasked(spec: RecurrentSpec, b: OpBuilder, x: str, cell: CellParams,
              init: list[str]) -> tuple[str, list[str]]:
    go_backwards = spec.go_backwards
    outs = recurrent_op(b, to_time_major(b, x), [cell], "reverse" if go_backwards else "forward", init, None)
    if not spec.return_sequences:
        return b.squeeze(outs[1], [0]), outs
    y_tb = b.squeeze(outs[0], [1])
    # Keras returns the outputs in processing order: reversed time for go_backwards.
    return b.transpose(reverse_time(b, y_tb, axis=0) if go_backwards else y_tb, [1, 0, 2]), outs


def _masked(spec: RecurrentSpec, b: OpBuilder, x: str, mask: str, cell: CellParams,
            init: list[str], time_len: int | None) -> tuple[str, list[str], str]:
    if spec.go_backwards:
        x, mask = reverse_time(b, x), reverse_time(b, mask)
    packed = compact(b, x, mask, time_len)
    outs = recurrent_op(b, packed.x_tbf, [cell], "forward", init, packed.seq_lens)
    zero_masked = spec.zero_output_for_mask
    if spec.return_sequences:
        y = expand(b, batch_major(b, outs[0]), 3, packed.steps, mask if zero_masked else None)
    else:
        y = b.squeeze(outs[1], [0])
        if zero_masked:
            y = b.op("Mul", y, last_step_mask(b, mask))
    return y, outs, packed.seq_lens
