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

from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError, WeightsError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.recurrent import SEQUENCE_MEANING, Recurrent, features_of, mask_input, state_inputs
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.rnn_cells import cell_weight_names, cell_weight_shapes
from converter.layers.rnn_emit import reverse_time

CELL_KINDS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
LAYER_FLAGS = ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask", "stateful")
RECURRENT = Recurrent()


def _cell_entries(node: Node) -> list[dict[str, Any]]:
    cell = node.attrs.get("cell")
    if not isinstance(cell, dict) or "class_name" not in cell:
        raise UnsupportedLayerError(f"RNN '{node.layer_name}' has no cell config", layer=node.layer_name,
                                    hint="is the config complete?")
    if cell["class_name"] == "StackedRNNCells":
        return list((cell.get("config") or {}).get("cells") or [])
    return [cell]


def cells(node: Node) -> list[Node]:
    """One view node per cell (SimpleRNN / GRU / LSTM), the last one carrying the RNN's flags."""
    entries = _cell_entries(node)
    views = []
    for k, entry in enumerate(entries):
        cls = str(entry.get("class_name"))
        if cls not in CELL_KINDS:
            raise UnsupportedLayerError(f"RNN '{node.layer_name}' wraps a {cls}", layer=node.layer_name,
                                        hint="cells that convert: " + ", ".join(sorted(CELL_KINDS)) +
                                        " (and StackedRNNCells of them)")
        attrs = dict(entry.get("config") or {})
        if cls == "GRUCell":
            attrs.setdefault("reset_after", False)  # cells from before Keras 2.1.3 behave as False
        first, last = k == 0, k == len(entries) - 1
        attrs.update({
            "return_sequences": node.attr("return_sequences", False) if last else True,
            "return_state": node.attr("return_state", False),
            "go_backwards": node.attr("go_backwards", False) if first else False,
            "zero_output_for_mask": node.attr("zero_output_for_mask", False),
        })
        views.append(Node(kind=CELL_KINDS[cls], name=node.name, attrs=attrs, inputs=node.inputs,
                          outputs=node.outputs, layer_name=node.layer_name))
    return views


def single_cell_view(node: Node) -> Node:
    """An RNN layer of one cell as its SimpleRNN / GRU / LSTM view (a wrapper's child); others unchanged."""
    if node.kind != "RNN" or len(_cell_entries(node)) != 1:
        return node
    return cells(node)[0]


def _names(view: Node, k: int) -> list[str]:
    return [f"cell{k}/{name}" for name in cell_weight_names(view)]


def _own(node: Node, k: int) -> dict[str, np.ndarray]:
    prefix = f"cell{k}/"
    return {key[len(prefix):]: value for key, value in node.weights.items() if key.startswith(prefix)}


def _num_states(view: Node) -> int:
    return 2 if view.kind == "LSTM" else 1


def _expected(views: list[Node], features: int | None) -> list[list[tuple[int | None, ...]]]:
    shapes = []
    for view in views:
        wanted = cell_weight_shapes(view, features)
        shapes.append([wanted[name] for name in cell_weight_names(view)])
        features = int(view.attrs["units"])
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
    counts = [len(cell_weight_names(views[k])) for k in order]
    starts = np.cumsum([0, *counts])
    per_cell = {k: arrays[starts[i]:starts[i + 1]] for i, k in enumerate(order)}
    node.weights = {name: a for k, view in enumerate(views) for name, a in zip(_names(view, k), per_cell[k])}


@LAYERS.register("RNN")
class GenericRNN(LayerHandler):
    """RNN(cell) as the matching SimpleRNN / GRU / LSTM op(s); see the module docstring."""

    def check(self, node: Node) -> None:
        if node.attr("time_major", False):
            raise UnsupportedLayerError(f"RNN '{node.layer_name}' is time_major", layer=node.layer_name,
                                        hint="only batch-major (time_major=False) RNN layers convert")
        for view in cells(node):
            RECURRENT.check(view)

    def weight_names(self, node: Node) -> list[str]:
        return [name for k, view in enumerate(cells(node)) for name in _names(view, k)]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        views = cells(node)
        settle_cell_order(node, views, features_of(input_shapes[0]))
        expected = _expected(views, features_of(input_shapes[0]))
        return {name: shape for k, view in enumerate(views) for name, shape in zip(_names(view, k), expected[k])}

    def num_outputs(self, node: Node) -> int:
        views = cells(node)
        return 1 + (sum(_num_states(v) for v in views) if node.attr("return_state", False) else 0)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_rank(node, input_shapes[0], 3, SEQUENCE_MEANING)
        views = cells(node)
        out = RECURRENT.output_shapes(views[-1], input_shapes)[0]
        batch = input_shapes[0][0]
        states: list[Shape] = [(batch, int(v.attrs["units"])) for v in views for _ in range(_num_states(v))]
        return [out, *states] if node.attr("return_state", False) else [out]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        views = cells(node)
        mask = mask_input(node, inputs)
        given = state_inputs(node, inputs)
        later_mask = reverse_time(b, mask) if mask is not None and node.attr("go_backwards", False) else mask
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
