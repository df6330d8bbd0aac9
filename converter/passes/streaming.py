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

import json
import warnings
from typing import Any

from converter.errors import KconvertError, KconvertWarning, UnsupportedLayerError
from converter.ir import Graph, Node, Shape, Tensor
from converter.layers.registry import LayerHandler, handler_for
from converter.layers.traits import StreamsState
from converter.passes import shape_inference

# Graph metadata (an ONNX metadata_props entry): the state inputs and outputs, paired in order, so a check
# or `kconvert verify` tells them from the Keras model's own (runtime/streamed.py).
STREAMING_KEY = "kconvert.streaming"
STREAMING_HINT = ("convert without --streaming, or replace the layer by single-direction LSTM / GRU / SimpleRNN / "
                  "ConvLSTM layers")


def run(graph: Graph, streaming: bool = False) -> Graph:
    declared = free_dims(graph, [node for node in graph.nodes if isinstance(handler_for(node), StreamsState)]
                         ) if streaming else {}
    states: list[dict[str, str]] = []
    for node in list(graph.nodes):
        handler = handler_for(node)
        if isinstance(handler, StreamsState):
            if streaming:
                states.extend(_stream(graph, node, handler))
            elif handler.is_stateful(node):
                warnings.warn(f"{node.kind} '{node.layer_name}' is stateful: converted with zero initial states "
                              "on every run; convert with --streaming to feed its states in and out",
                              KconvertWarning, stacklevel=2)
        elif streaming:
            _refuse(node, handler)
    if states:  # "declared": the freed inputs' shapes in the file, which the Keras model still takes
        graph.metadata[STREAMING_KEY] = json.dumps({"states": states, "declared": declared})
    return graph


def _refuse(node: Node, handler: LayerHandler[Any] | None) -> None:
    # A recurrent layer is a Keras recurrent call, or a spec with Keras' return_state (RNN(cell), ConvLSTM).
    if handler is None or not (handler.keras_rnn_call or hasattr(node.spec, "return_state")):
        return
    raise UnsupportedLayerError(
        f"--streaming: {node.kind} '{node.layer_name}' cannot export its states; only single-direction "
        "LSTM, GRU, SimpleRNN, RNN(cell) and ConvLSTM layers stream (a backward direction reads each chunk "
        "from its end, so its state cannot carry into the next chunk)", layer=node.layer_name, hint=STREAMING_HINT)


def _stream(graph: Graph, node: Node, handler: StreamsState) -> list[dict[str, str]]:
    """States in after the sequence (and mask), states out after the layer's outputs; returns each state's
    layer, input and output name."""
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
    graph.outputs.extend(node.outputs[-len(slots):])
    outputs = [graph.names.unique(f"{node.layer_name}/{slot}_out") for slot in slots]
    graph.output_names.extend(outputs)
    return [{"layer": node.layer_name, "input": t.name, "output": name} for t, name in zip(state_in, outputs)]


def free_dims(graph: Graph, streamed: list[Node]) -> dict[str, list[int | None]]:
    """Free the batch and time axes (0 and 1) of the inputs feeding the streamed layers, so chunks of any
    length run: a stateful Keras model must declare its batch_input_shape, usually with the time fixed.
    Kept only where shape inference with the dims freed succeeds and every layer between such an input and
    a streamed layer keeps the time axis free (a Reshape or Flatten that folds time in needs the length);
    otherwise the batch alone is freed, or nothing, with a warning. Returns the freed inputs' shapes as
    they were."""
    feeding = [t for t in _inputs_reaching(graph, streamed) if len(t.shape or ()) >= 2]
    if not any(isinstance(d, int) for t in feeding for d in (t.shape or ())[:2]):
        return {}
    declared = {t.name: [d if isinstance(d, int) else None for d in t.shape or ()] for t in feeding}
    timed = [t for t in feeding if isinstance((t.shape or ())[1], int)]
    reason = _try_freeing(graph, feeding, (0, 1), streamed) if timed else None
    if reason is not None:
        fixed = ", ".join(f"'{t.name}' ({(t.shape or ())[1]} steps)" for t in timed)
        warnings.warn(f"--streaming: the time length of {fixed} stays fixed: {reason}; every chunk must have "
                      "that length", KconvertWarning, stacklevel=3)
    if not timed or reason is not None:
        _try_freeing(graph, feeding, (0,), streamed)
    return {name: shape for name, shape in declared.items() if shape != list(graph_input(graph, name).shape or ())}


def graph_input(graph: Graph, name: str) -> Tensor:
    return next(t for t in graph.inputs if t.name == name)


def _inputs_reaching(graph: Graph, targets: list[Node]) -> list[Tensor]:
    """The graph inputs some target node depends on."""
    wanted = {id(node) for node in targets}
    reaching: dict[int, bool] = {}  # tensor id -> reaches a target
    for node in reversed(graph.nodes):
        hit = id(node) in wanted or any(reaching.get(id(t), False) for t in node.outputs)
        for tensor in node.inputs:
            reaching[id(tensor)] = reaching.get(id(tensor), False) or hit
    return [t for t in graph.inputs if reaching.get(id(t), False)]


def _try_freeing(graph: Graph, inputs: list[Tensor], axes: tuple[int, ...], streamed: list[Node]) -> str | None:
    """Free `axes` of `inputs` and infer every shape again; None when that holds, else why not (and every
    shape is back as it was)."""
    tensors = [*graph.inputs, *(t for node in graph.nodes for t in node.outputs)]
    before: dict[int, Shape | None] = {id(t): t.shape for t in tensors}
    for tensor in inputs:
        shape = tensor.shape or ()
        tensor.shape = tuple(None if axis in axes else d for axis, d in enumerate(shape))
    try:
        shape_inference.run(graph)
        reason = _time_kept(graph, inputs, before, streamed) if 1 in axes else None
    except KconvertError as err:
        reason = f"shape inference fails with it free ({err})"
    if reason is not None:
        for tensor in tensors:
            tensor.shape = before[id(tensor)]
    graph.changed()
    return reason


def _time_kept(graph: Graph, inputs: list[Tensor], before: dict[int, Shape | None],
               streamed: list[Node]) -> str | None:
    """Why the freed time axis cannot stay free: a layer fed a time-carrying tensor whose outputs do not
    carry the time axis on (only a streamed layer may end it: its last output or states)."""
    carrying = {id(t) for t in inputs}
    ends = {id(node) for node in streamed}
    for node in graph.nodes:
        if not any(id(t) in carrying for t in node.inputs):
            continue
        carried = [t for t in node.outputs if _frees_time(before.get(id(t)), t.shape)]
        if id(node) not in ends and len(carried) != len(node.outputs):
            return f"{node.kind} '{node.layer_name}' needs the fixed length"
        carrying.update(id(t) for t in carried)
    return None


def _frees_time(old: Shape | None, new: Shape | None) -> bool:
    return bool(old and new and len(old) >= 2 and len(new) == len(old) and new[1] is None)
