"""Checking a streamed model (`--streaming`, converter/passes/streaming.py) against Keras and against itself.

The streamed ONNX model has state inputs and outputs the Keras model lacks. A check feeds the state inputs
zeros, which is where Keras starts a sequence (a freshly loaded stateful model included), gives Keras the
other inputs, and compares the model's own outputs with Keras'. The final states are not compared with
Keras (a Keras model does not return them unless it was built to); the chunked self-check covers them:
the sequence split in two chunks, the first chunk's final states fed to the second, must give what the
whole sequence gives (its sequence outputs joined in time, its other outputs and states those of the last
chunk), within the check's tolerance. Its results are extra outputs in the report, "NAME (2 chunks vs
whole)". Inputs whose time axis is fixed in the file cannot be chunked: then there is no self-check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from converter.ir import Graph, Tensor
from converter.passes.streaming import STREAMING_KEY
from runtime.compare import OutputDiff, Tolerance, compare_output

Batch = dict[str, np.ndarray]
Runner = Callable[[Batch], Batch]  # feeds -> every output by name
CHUNKED = " (2 chunks vs whole)"


@dataclass(frozen=True)
class StreamStates:
    """The state inputs and the state outputs of a streamed model, paired in order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def stream_states(metadata: dict[str, str]) -> StreamStates | None:
    """The states the streaming pass recorded in the graph's (or the ONNX file's) metadata; None when the
    model was not streamed."""
    text = metadata.get(STREAMING_KEY)
    if text is None:
        return None
    states = json.loads(text)["states"]
    return StreamStates(tuple(s["input"] for s in states), tuple(s["output"] for s in states))


def declared_dims(graph: Graph, dims: dict[str, tuple[int | None, ...]]) -> tuple[dict[str, tuple[int | None, ...]],
                                                                                  int | None]:
    """The generated check's dims after the batch, and the batch, for a streamed graph whose inputs'
    fixed dims were freed: the sizes the file declares, which the Keras model still requires."""
    text = graph.metadata.get(STREAMING_KEY)
    declared: dict[str, list[int | None]] = json.loads(text).get("declared", {}) if text else {}
    chosen = dict(dims)
    for name, shape in declared.items():
        chosen[name] = tuple(d if isinstance(d, int) else old for d, old in zip(shape[1:], chosen[name]))
    batch = next((shape[0] for shape in declared.values() if isinstance(shape[0], int)), None)
    return chosen, batch


def keras_io(graph: Graph) -> tuple[list[Tensor], list[Tensor], list[str]]:
    """The inputs, outputs and output names the Keras model has: a streamed graph's state I/O left out."""
    states = stream_states(graph.metadata)
    names = list(graph.output_names)
    if states is None:
        return list(graph.inputs), list(graph.outputs), names
    inputs = [t for t in graph.inputs if t.name not in states.inputs]
    kept = [k for k, name in enumerate(names) if name not in states.outputs]
    return inputs, [graph.outputs[k] for k in kept], [names[k] for k in kept]


def with_zero_states(feeds: Batch, graph: Graph) -> Batch:
    """The feeds with every state input zero (Keras' start), sized to the batch of the other inputs."""
    states = stream_states(graph.metadata)
    if states is None:
        return feeds
    batch = next(int(a.shape[0]) for name, a in feeds.items() if name not in states.inputs and np.ndim(a))
    tensors = {t.name: t for t in graph.inputs}
    shapes = {name: tuple(d if isinstance(d, int) else 1 for d in (tensors[name].shape or ())[1:])
              for name in states.inputs}
    return {**{k: v for k, v in feeds.items() if k not in states.inputs}, **zero_states(shapes, batch)}


def zero_states(shapes: dict[str, tuple[int, ...]], batch: int) -> Batch:
    """Each state input zero (Keras' start), given its shape after the batch."""
    return {name: np.zeros((batch, *shape), np.float32) for name, shape in shapes.items()}


def chunked_diffs(run: Runner, feeds: Batch, whole: Batch, graph: Graph, tolerance: Tolerance) -> list[OutputDiff]:
    """The self-check: `feeds` (states zero) split in two chunks along time, run in turn with the states
    fed across, against `whole` (the run on `feeds`). Empty when the model is not streamed or no input
    has a free time axis of two steps or more."""
    states = stream_states(graph.metadata)
    timed = _time_inputs(graph, feeds, states)
    if states is None or not timed:
        return []
    steps = int(feeds[timed[0]].shape[1])
    first_len = max(1, steps // 3)  # unequal chunks: a sequence output is told by its chunk lengths
    first = run({k: v[:, :first_len] if k in timed else v for k, v in feeds.items()})
    carried = dict(zip(states.inputs, (first[name] for name in states.outputs)))
    second = run({**{k: v[:, first_len:] if k in timed else v for k, v in feeds.items()}, **carried})
    diffs = []
    for name, expected in whole.items():
        a, b = first[name], second[name]
        sequence = expected.ndim >= 2 and (a.shape[1], b.shape[1], expected.shape[1]) == (
            first_len, steps - first_len, steps)
        joined = np.concatenate([a, b], axis=1) if sequence else b
        diffs.append(compare_output(name + CHUNKED, joined, expected, tolerance))
    return diffs


def _time_inputs(graph: Graph, feeds: Batch, states: StreamStates | None) -> list[str]:
    """The non-state inputs whose time axis (1) is free (None or a named dim) in the graph and at least two
    steps long in `feeds`."""
    if states is None:
        return []
    return [t.name for t in graph.inputs if t.name not in states.inputs and len(t.shape or ()) >= 2
            and not isinstance((t.shape or ())[1], int) and np.ndim(feeds[t.name]) >= 2 and feeds[t.name].shape[1] >= 2]
