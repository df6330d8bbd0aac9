"""The generic `RNN(cell)` layer with LSTMCell / GRUCell / SimpleRNNCell, or StackedRNNCells of them.

`RNN(LSTMCell(u), ...)` computes exactly `LSTM(u, ...)` (Keras' LSTM *is* RNN(LSTMCell)), so each cell
becomes a view node of the matching layer class (the cell's config plus the RNN's return_sequences,
return_state, go_backwards, zero_output_for_mask) emitted by the SimpleRNN / GRU / LSTM handler:
one ONNX op per cell. StackedRNNCells feeds each cell's output sequence to the next cell at the same
step, which is the same as a chain of layers returning sequences, where all see the same mask and,
with go_backwards, the first walks the input from its end and the others walk its (already reversed)
output forward. Outputs: the last cell's output (sequence or last step), then with return_state
every cell's final states in cell order (LSTM: h, c). Initial states are taken in the same order.

Weights: legacy HDF5 lists them in cell order. A Keras 3 `.keras` file stores stacked cells as child
groups named by class (`gru_cell`, `lstm_cell`, `lstm_cell_1`, ...), which reach this handler sorted
by name; `settle_cell_order` takes whichever of the two orders fits the cells' weight shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from converter.errors import UnsupportedLayerError, WeightsError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.recurrent import SEQUENCE_MEANING, Recurrent, features_of, mask_input, state_inputs
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.rnn_cells import RecurrentSpec, cell_weight_names, cell_weight_shapes, parse_cell
from converter.layers.rnn_emit import reverse_time
from converter.layers.spec import Config, LayerSpec, ParseContext, parse_fields

CELL_KINDS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
RECURRENT = Recurrent()


@dataclass(frozen=True)
class RNNSpec(LayerSpec):
    """RNN(cell): each cell's spec with the RNN's flags folded in (see `_cell_spec`), plus the flags."""

    cells: tuple[RecurrentSpec, ...]
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    zero_output_for_mask: bool = False
    stateful: bool = False
    unroll: bool = False
    time_major: bool = False


def _cell_entries(config: Config) -> list[dict[str, Any]]:
    cell = config.value("cell")
    if not isinstance(cell, dict) or "class_name" not in cell:
        raise UnsupportedLayerError(f"RNN '{config.ctx.layer_name}' has no cell config", layer=config.ctx.layer_name,
                                    hint="is the config complete?")
    if cell["class_name"] == "StackedRNNCells":
        return list((cell.get("config") or {}).get("cells") or [])
    return [cell]


def _cell_spec(config: Config, flags: RNNSpec, entry: dict[str, Any], first: bool, last: bool) -> RecurrentSpec:
    """One cell as the SimpleRNN / GRU / LSTM layer it computes: the cell's config plus the RNN's flags
    (only the last cell returns the RNN's choice of sequence, only the first walks backwards)."""
    layer = config.ctx.layer_name
    cls = str(entry.get("class_name"))
    if cls not in CELL_KINDS:
        raise UnsupportedLayerError(f"RNN '{layer}' wraps a {cls}", layer=layer,
                                    hint="cells that convert: " + ", ".join(sorted(CELL_KINDS)) +
                                    " (and StackedRNNCells of them)")
    attrs = dict(entry.get("config") or {})
    attrs.update({
        "return_sequences": flags.return_sequences if last else True,
        "return_state": flags.return_state,
        "go_backwards": flags.go_backwards if first else False,
        "zero_output_for_mask": flags.zero_output_for_mask,
    })
    return parse_cell(Config(attrs, ParseContext(CELL_KINDS[cls], layer, config.ctx.keras_major)))


def parse_rnn(config: Config) -> RNNSpec:
    flags = parse_fields(RNNSpec, config, cells=())
    if flags.time_major:
        raise UnsupportedLayerError(f"RNN '{config.ctx.layer_name}' is time_major", layer=config.ctx.layer_name,
                                    hint="only batch-major (time_major=False) RNN layers convert")
    entries = _cell_entries(config)
    cells = tuple(_cell_spec(config, flags, entry, k == 0, k == len(entries) - 1) for k, entry in enumerate(entries))
    return flags.replace(cells=cells)


def cells(node: Node) -> list[Node]:
    """One view node per cell (SimpleRNN / GRU / LSTM), each with its cell's spec."""
    spec = cast(RNNSpec, node.spec)
    return [Node(kind=cell.cell_kind, name=node.name, spec=cell, inputs=node.inputs, outputs=node.outputs,
                 layer_name=node.layer_name) for cell in spec.cells]


def single_cell(spec: LayerSpec) -> RecurrentSpec | None:
    """A SimpleRNN / GRU / LSTM spec, or that of an RNN of one cell (a wrapper's child); else None."""
    if isinstance(spec, RNNSpec) and len(spec.cells) == 1:
        return spec.cells[0]
    return spec if isinstance(spec, RecurrentSpec) else None


def _num_states(view: Node) -> int:
    return RECURRENT.spec(view).num_states


def _names(view: Node, k: int) -> list[str]:
    return [f"cell{k}/{name}" for name in cell_weight_names(RECURRENT.spec(view))]


def _own(node: Node, k: int) -> dict[str, np.ndarray]:
    prefix = f"cell{k}/"
    return {key[len(prefix):]: value for key, value in node.weights.items() if key.startswith(prefix)}


def _expected(views: list[Node], features: int | None) -> list[list[tuple[int | None, ...]]]:
    shapes = []
    for view in views:
        spec = RECURRENT.spec(view)
        wanted = cell_weight_shapes(spec, features)
        shapes.append([wanted[name] for name in cell_weight_names(spec)])
        features = spec.units
    return shapes


def _fits(arrays: list[np.ndarray], shapes: list[tuple[int | None, ...]]) -> bool:
    return len(arrays) == len(shapes) and all(
        a.ndim == len(s) and all(w is None or w == d for w, d in zip(s, a.shape)) for a, s in zip(arrays, shapes))


def saved_order(views: list[Node]) -> list[int]:
    """Cell indices in the order a Keras 3 weights file lists them: by their saved names, which are the
    snake-cased class name, numbered `_1`, `_2`, ... among cells of the same class."""
    seen: dict[str, int] = {}
    names = []
    for view in views:
        base = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}[view.kind]
        count = seen.get(base, -1) + 1
        seen[base] = count
        names.append(base if count == 0 else f"{base}_{count}")
    return sorted(range(len(views)), key=lambda k: names[k])


def settle_cell_order(node: Node, views: list[Node], features: int | None) -> None:
    """Re-key node.weights to cell order when they arrived in a Keras 3 file's saved-name order."""
    if len(views) < 2 or not node.weights:
        return
    arrays = list(node.weights.values())
    expected = _expected(views, features)
    in_list = _fits(arrays, [s for shapes in expected for s in shapes])
    order = saved_order(views)
    in_saved = _fits(arrays, [s for k in order for s in expected[k]])
    if in_list and (not in_saved or order == sorted(order)):
        return
    if not in_saved:
        return  # neither fits: the weight shape check names the first misfit
    if in_list:
        raise WeightsError(f"RNN '{node.layer_name}': the stacked cells' weights fit both the cell order and the "
                           "saved-name order, which differ", layer=node.layer_name,
                           hint="save the model as a legacy .h5 (weights in cell order)")
    counts = [len(cell_weight_names(RECURRENT.spec(views[k]))) for k in order]
    starts = np.cumsum([0, *counts])
    per_cell = {k: arrays[starts[i]:starts[i + 1]] for i, k in enumerate(order)}
    node.weights = {name: a for k, view in enumerate(views) for name, a in zip(_names(view, k), per_cell[k])}


@LAYERS.register("RNN")
class GenericRNN(LayerHandler[RNNSpec]):
    """RNN(cell) as the matching SimpleRNN / GRU / LSTM op(s); see the module docstring."""

    consumes_mask = True
    consumes_sequence = True

    required_arguments = ("cell",)
    cell_layers = CELL_KINDS  # an LSTMCell's config is checked like an LSTM's

    def mask_carrying_outputs(self, node: Node) -> int:
        """layers/traits.MaskedSequences: the sequence output carries the mask on."""
        return 1 if self.spec(node).return_sequences else 0

    def parse(self, config: Config) -> RNNSpec:
        return parse_rnn(config)

    # layers/traits.StreamsState: every cell's states, in the order return_state lists them
    def state_slots(self, node: Node) -> tuple[str, ...]:
        spec = self.spec(node)
        # One cell streams like the layer it computes (LAYER/h_in); stacked cells say whose state it is.
        prefixes = [""] if len(spec.cells) == 1 else [f"cell{k}/" for k in range(len(spec.cells))]
        return tuple(f"{prefix}{slot}" for prefix, cell in zip(prefixes, spec.cells)
                     for slot in ("h", "c")[:cell.num_states])

    def state_shapes(self, node: Node) -> list[Shape]:
        batch = (node.inputs[0].shape or (None,))[0]
        return [(batch, cell.units) for cell in self.spec(node).cells for _ in range(cell.num_states)]

    def is_stateful(self, node: Node) -> bool:
        return self.spec(node).stateful

    def has_initial_states(self, node: Node) -> bool:
        return bool(state_inputs(node, [t.name for t in node.inputs]))

    def return_states(self, node: Node) -> None:
        spec = self.spec(node)
        node.spec = spec.replace(return_state=True, cells=tuple(cell.replace(return_state=True) for cell in spec.cells))

    def weight_names(self, node: Node) -> list[str]:
        return [name for k, view in enumerate(cells(node)) for name in _names(view, k)]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        views = cells(node)
        settle_cell_order(node, views, features_of(input_shapes[0]))
        expected = _expected(views, features_of(input_shapes[0]))
        return {name: shape for k, view in enumerate(views) for name, shape in zip(_names(view, k), expected[k])}

    def num_outputs(self, node: Node) -> int:
        # A node whose parse was refused keeps a bare spec; the graph builder still asks (one output then).
        spec = node.spec
        if not isinstance(spec, RNNSpec) or not spec.return_state:
            return 1
        return 1 + sum(cell.num_states for cell in spec.cells)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        views = cells(node)
        out = RECURRENT.output_shapes(views[-1], input_shapes)[0]
        batch = input_shapes[0][0]
        states: list[Shape] = [(batch, cell.units) for cell in self.spec(node).cells for _ in range(cell.num_states)]
        return [out, *states] if self.spec(node).return_state else [out]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        views = cells(node)
        mask = mask_input(node, inputs)
        given = state_inputs(node, inputs)
        later_mask = reverse_time(b, mask) if mask is not None and self.spec(node).go_backwards else mask
        x, offset = inputs[0], 0
        states: list[str] = []
        for k, view in enumerate(views):
            view.weights = _own(node, k)
            count = _num_states(view) if given else 0
            args = [x, *given[offset:offset + count]]
            offset += count
            cell_mask = mask if k == 0 else later_mask
            if cell_mask is not None:
                view.call.tensor_kwargs = {"mask": [len(args)]}
                args.append(cell_mask)
            outs = RECURRENT.emit(view, b, args)
            x, states = outs[0], [*states, *outs[1:]]
        return [x, *states]
