"""Emission of one ONNX RNN / GRU / LSTM op for a Keras recurrent layer, masks included.

Layout: onnxruntime runs recurrent ops only with `layout=0` (time-major), so the input is
transposed (batch, time, features) -> (time, batch, features) once and `Y` back; `Y_h` / `Y_c` need
only a Squeeze.

Masks (Keras semantics, `keras/src/backend/tensorflow/rnn.py`): at a masked step the states are
carried over unchanged and the step's output is the previous step's output (zeros before the first
valid step), or zeros when `zero_output_for_mask` (Bidirectional forces it when returning sequences).
The states after the last step are therefore the states after the last *valid* step, and the output
at step t is the cell output after the k(t) = cumsum(mask)[t] valid steps so far.
ONNX `sequence_lens` only cuts a suffix, which matches post-padding alone. The exact formulation
used here, for any mask (pre-, post-padding, holes):
1. compact: per sample, gather the valid steps to the front, in order (TopK over the distinct keys
   mask * T - t gives valid steps by increasing t, then the masked ones);
2. run the ONNX op on the compacted sequence with sequence_lens = number of valid steps, so the
   backward direction of a bidirectional op also walks exactly the valid steps, last to first;
3. expand: prepend one zero step to Y and gather, per sample and step, row k(t) (or row 0, the zero
   row, at masked steps when outputs are zeroed). Y_h / Y_c are already the last valid states.
go_backwards reverses inputs and mask first (Keras processes, and returns, the reversed sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError
from converter.layers.builder import OpBuilder
from converter.layers.rnn_cells import CellParams

INT64_MIN = -(2**63)


@dataclass
class Compacted:
    """The compacted (time-major) input plus what expanding the outputs back needs."""

    x_tbf: str
    seq_lens: str
    steps: str  # (batch, time) int64: k(t), valid steps so far


def to_time_major(b: OpBuilder, x: str) -> str:
    return b.transpose(x, [1, 0, 2])


def reverse_time(b: OpBuilder, x: str, axis: int = 1) -> str:
    return b.slice(x, [-1], [INT64_MIN], [axis], [-1])


def _time_length(b: OpBuilder, x: str, static: int | None) -> str:
    if static is not None:
        return b.ints([static], "time_len")
    return b.slice(b.op("Shape", x), [1], [2], [0])


def compact(b: OpBuilder, x: str, mask: str, time_len: int | None) -> Compacted:
    """Valid steps of each sample to the front (order kept); see the module docstring."""
    m = b.op("Cast", mask, to=7)  # int64
    steps = b.op("CumSum", m, b.ints(1, "time_axis"))
    lens = b.op("Cast", b.reduce("ReduceSum", m, [1], keepdims=False), to=6)  # int32
    t_len = _time_length(b, x, time_len)
    t_float = b.op("Cast", t_len, to=1)
    arange = b.op("Range", b.scalar(0.0, "zero"), b.squeeze(t_float, [0]), b.scalar(1.0, "one"))
    key = b.op("Sub", b.op("Mul", b.op("Cast", m, to=1), t_float), arange)
    _, order = b.multi("TopK", key, t_len, axis=1, largest=1, sorted=1, outputs=2)
    gathered = b.op("GatherND", x, b.unsqueeze(order, [2]), batch_dims=1)
    return Compacted(to_time_major(b, gathered), lens, steps)


def expand(b: OpBuilder, y_bt: str, rank: int, steps: str, mask: str | None) -> str:
    """Batch-major outputs (batch, time, ...) of the compacted run -> one row per original step.

    With `mask` given (zero_output_for_mask), masked steps read the prepended zero row.
    """
    pads = [0, 1] + [0] * (rank - 2) + [0] * rank
    padded = b.op("Pad", y_bt, b.ints(pads, "pads"))
    index = steps if mask is None else b.op("Mul", steps, b.op("Cast", mask, to=7))
    return b.op("GatherND", padded, b.unsqueeze(index, [2]), batch_dims=1)


def initial_states(b: OpBuilder, states: list[str] | None, count: int, directions: int) -> list[str]:
    """Keras (batch, units) states, forward first -> ONNX (directions, batch, units) per state kind."""
    if not states:
        return []
    if len(states) != count * directions:
        raise ShapeError(f"'{b.scope}' is called with {len(states)} initial state tensors; it takes "
                         f"{count * directions} ({count} per direction)", layer=b.scope,
                         hint="pass initial_state with one (batch, units) tensor per state, as Keras does")
    per_dir = [states[d * count:(d + 1) * count] for d in range(directions)]
    out = []
    for k in range(count):
        parts = [b.unsqueeze(per_dir[d][k], [0]) for d in range(directions)]
        out.append(parts[0] if directions == 1 else b.op("Concat", *parts, axis=0))
    return out


def recurrent_op(b: OpBuilder, x_tbf: str, cells: list[CellParams], direction: str,
                 init: list[str], seq_lens: str | None) -> list[str]:
    """One ONNX op over all directions; returns [Y, Y_h] (+ [Y_c] for LSTM)."""
    first = cells[0]
    w = b.weight("W", np.stack([c.W for c in cells]))
    r = b.weight("R", np.stack([c.R for c in cells]))
    bias = b.weight("B", np.stack([c.B for c in cells]))
    inputs = [x_tbf, w, r, bias, "" if seq_lens is None else seq_lens, *init]
    while inputs and inputs[-1] == "":
        inputs.pop()
    alphas = [a for c in cells for a in c.alphas]
    betas = [v for c in cells for v in c.betas]
    return list(b.multi(
        first.op, *inputs, outputs=1 + first.num_states, hidden_size=first.units, direction=direction,
        activations=[a for c in cells for a in c.activations], activation_alpha=alphas or None,
        activation_beta=betas or None, linear_before_reset=first.linear_before_reset))


def sequence_batch_major(b: OpBuilder, y: str) -> str:
    """ONNX Y (time, directions, batch, units) -> (batch, time, directions, units)."""
    return b.transpose(y, [2, 0, 1, 3])


def final_states(b: OpBuilder, states: list[str], init: list[str], seq_lens: str | None) -> list[str]:
    """ONNX returns zero states for a sample with no valid step; Keras keeps its initial states."""
    if seq_lens is None or not init:
        return states
    some = b.unsqueeze(b.op("Greater", seq_lens, b.const(0, "zero_steps", np.int32)), [0, 2])
    return [b.op("Where", some, state, start) for state, start in zip(states, init)]
