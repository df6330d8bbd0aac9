"""Streaming: each recurrent layer's states as graph inputs and outputs (`--streaming`).

A deployment then feeds a long sequence chunk by chunk: the initial states are inputs
`<layer>/h_in` (LSTM also `<layer>/c_in`), (batch, units), zeros for the first chunk (ONNX inputs are
required: there is no default), and the final states are outputs `<layer>/h_out` (`<layer>/c_out`),
fed back as the next chunk's initial states. With a mask the final state is the state after the
last unmasked step (a chunk with no valid step returns its initial states), as Keras returns it.

Which layers stream is the handler's to say (layers/traits.StreamsState). Any other layer that runs a
Keras recurrent call (`keras_rnn_call`) or has a `return_state` argument (Bidirectional, RNN(cell),
ConvLSTM) is refused by name: a
backward direction reads each chunk from its end, so its state cannot carry into the next chunk, and
the others do not expose their states yet. Without `--streaming` a `stateful=True` layer converts
from zero initial states, with a warning. The new inputs and outputs are not Keras layer outputs:
the layer map (value_map.py) lists them with perm None and no layer entry.
"""

from __future__ import annotations

import warnings
from typing import Any

from converter.errors import KconvertWarning, UnsupportedLayerError
from converter.ir import Graph, Node, Tensor
from converter.layers.registry import LayerHandler, handler_for
from converter.layers.traits import StreamsState

STREAMING_HINT = ("convert without --streaming, or replace the layer by single-direction LSTM / GRU / SimpleRNN / "
                  "ConvLSTM layers")


def run(graph: Graph, streaming: bool = False) -> Graph:
    for node in list(graph.nodes):
        handler = handler_for(node)
        if isinstance(handler, StreamsState):
            if streaming:
                _stream(graph, node, handler)
            elif handler.is_stateful(node):
                warnings.warn(f"{node.kind} '{node.layer_name}' is stateful: converted with zero initial states "
                              "on every run; convert with --streaming to feed its states in and out",
                              KconvertWarning, stacklevel=2)
        elif streaming:
            _refuse(node, handler)
    return graph


def _refuse(node: Node, handler: LayerHandler[Any] | None) -> None:
    # A recurrent layer is a Keras recurrent call, or a spec with Keras' return_state (RNN(cell), ConvLSTM).
    if handler is None or not (handler.keras_rnn_call or hasattr(node.spec, "return_state")):
        return
    raise UnsupportedLayerError(
        f"--streaming: {node.kind} '{node.layer_name}' cannot export its states; only single-direction "
        "LSTM, GRU, SimpleRNN, RNN(cell) and ConvLSTM layers stream (a backward direction reads each chunk "
        "from its end, so its state cannot carry into the next chunk)", layer=node.layer_name, hint=STREAMING_HINT)


def _stream(graph: Graph, node: Node, handler: StreamsState) -> None:
    """States in after the sequence (and mask), states out after the layer's outputs."""
    if handler.has_initial_states(node):
        raise UnsupportedLayerError(f"--streaming: {node.kind} '{node.layer_name}' takes its initial states from other "
                                    "tensors of the model, so they cannot be graph inputs", layer=node.layer_name,
                                    hint="convert without --streaming, or make those states model inputs in Keras")
    slots, shapes = handler.state_slots(node), handler.state_shapes(node)
    state_in = [Tensor(graph.names.unique(f"{node.layer_name}/{slot}_in"), shape) for slot, shape in zip(slots, shapes)]
    graph.inputs.extend(state_in)
    node.inputs = [*node.inputs, *state_in]
    if len(node.outputs) == 1:
        handler.return_states(node)
        node.outputs.extend(Tensor(graph.names.unique(f"{node.name}/{slot}_state"), shape, producer=node)
                            for slot, shape in zip(slots, shapes))
    graph.changed()
    graph.outputs.extend(node.outputs[1:])
    graph.output_names.extend(graph.names.unique(f"{node.layer_name}/{slot}_out") for slot in slots)
