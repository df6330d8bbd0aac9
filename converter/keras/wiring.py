"""Wiring a Functional config: which call of which layer runs when, checked before anything is built.

Every reference (a call's input, an `input_layers` / `output_layers` entry) must name a layer of the
model and a call of that layer which exists; the calls are then ordered so that each runs after the
calls it reads (layers may be listed in any order), and a cycle, which Keras cannot build, is refused
with the layers on it. Ordering is linear in the number of calls: a damaged file cannot make it hang.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from converter.errors import FormatError
from converter.keras.calls import Call, TensorRef, inbound_calls, model_refs
from converter.keras.layer_configs import MODEL_CLASSES, layer_parts

# (layer name, call number as references count it)
CallKey = tuple[str, int]

_HINT = "is the config complete and undamaged?"


@dataclass
class Step:
    layer: str
    index: int  # position in the layer's inbound_nodes
    key: CallKey
    call: Call


@dataclass
class Plan:
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    steps: list[Step]  # each after the steps it reads

    def consumer_of(self, input_name: str, layers: dict[str, dict[str, Any]]) -> str:
        """The class of the first layer reading a model input (input_dim means something else per class)."""
        for step in self.steps:
            if any(ref[0] == input_name for ref in step.call.refs):
                return layer_parts(layers[step.layer])[0]
        return "InputLayer"


def plan_functional(model: str, config: dict[str, Any], layers: dict[str, dict[str, Any]]) -> Plan:
    inputs = model_refs(config.get("input_layers"), model, "input_layers")
    outputs = model_refs(config.get("output_layers"), model, "output_layers")
    for refs, what in ((inputs, "inputs (input_layers)"), (outputs, "outputs (output_layers)")):
        if not refs:
            raise FormatError(f"Functional model '{model}' has no {what}", layer=model, hint=_HINT)
    calls = {name: inbound_calls(entry.get("inbound_nodes"), name) for name, entry in layers.items()}
    input_keys = _input_keys(model, inputs, layers, calls)
    offsets = _node_offsets(layers, calls, outputs)
    steps = [Step(name, k, (name, k + offsets.get(name, 0)), call)
             for name, layer_calls in calls.items() for k, call in enumerate(layer_calls)]
    produced = input_keys | {step.key for step in steps}
    for step in steps:
        for ref in step.call.refs:
            _check_ref(model, ref, (f"layer '{step.layer}'", step.layer), layers, calls, produced)
    for ref in outputs:
        _check_ref(model, ref, ("output_layers", model), layers, calls, produced)
    return Plan(inputs, outputs, _ordered(model, steps, input_keys))


def _input_keys(model: str, inputs: list[TensorRef], layers: dict[str, dict[str, Any]],
                calls: dict[str, list[Call]]) -> set[CallKey]:
    keys: set[CallKey] = set()
    for name, node, _ in inputs:
        if name not in layers:
            raise FormatError(f"input_layers of model '{model}' names layer '{name}', which the model does not have",
                              layer=model, hint=_HINT)
        if calls[name]:
            raise FormatError(f"layer '{name}' of model '{model}' is a model input (input_layers) and is also "
                              "called on other layers (inbound_nodes)", layer=name, hint=_HINT)
        if (name, node) in keys:
            raise FormatError(f"input_layers of model '{model}' names '{name}' twice", layer=name, hint=_HINT)
        keys.add((name, node))
    return keys


def _node_offsets(layers: dict[str, dict[str, Any]], calls: dict[str, list[Call]],
                  outputs: list[TensorRef]) -> dict[str, int]:
    """Nested models whose saved calls are numbered from 1: Keras 2 counts the nested model's own
    Input -> output node as node 0 and omits it from `inbound_nodes` (Keras 3 does so only for some).
    The references tell which: every saved call is referenced, so the highest index is the last call."""
    highest: dict[str, int] = {}
    refs = [r for layer_calls in calls.values() for call in layer_calls for r in call.refs] + outputs
    for name, node_index, _ in refs:
        highest[name] = max(node_index, highest.get(name, 0))
    return {name: 1 for name, layer in layers.items()
            if layer_parts(layer)[0] in MODEL_CLASSES and calls[name] and highest.get(name, -1) == len(calls[name])}


def _check_ref(model: str, ref: TensorRef, reader: tuple[str, str], layers: dict[str, dict[str, Any]],
               calls: dict[str, list[Call]], produced: set[CallKey]) -> None:
    """`reader`: who reads the reference, in words and as the layer an error names."""
    name, node, _ = ref
    if name not in layers:
        raise FormatError(f"{reader[0]} of model '{model}' reads layer '{name}', which the model does not have",
                          layer=reader[1], hint=_HINT)
    if (name, node) not in produced:
        count = len(calls[name]) or 1  # an input layer has its one implicit call
        raise FormatError(f"{reader[0]} of model '{model}' reads call {node} of layer '{name}', which is called "
                          f"{count} time(s)", layer=name, hint=_HINT)


def _ordered(model: str, steps: list[Step], input_keys: set[CallKey]) -> list[Step]:
    """Kahn's topological order, taking the earliest listed ready step first (so a config listed in
    order keeps its order); steps left over lie on or behind a cycle."""
    position = {step.key: i for i, step in enumerate(steps)}
    waiting: list[set[int]] = [set() for _ in steps]
    dependents: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for name, node, _ in step.call.refs:
            j = position.get((name, node))
            if j is not None and j not in waiting[i]:
                waiting[i].add(j)
                dependents[j].append(i)
    ready = [i for i, deps in enumerate(waiting) if not deps]
    heapq.heapify(ready)
    order: list[Step] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(steps[i])
        for d in dependents[i]:
            waiting[d].discard(i)
            if not waiting[d]:
                heapq.heappush(ready, d)
    if len(order) < len(steps):
        raise _cycle_error(model, steps, waiting)
    return order


def _cycle_error(model: str, steps: list[Step], waiting: list[set[int]]) -> FormatError:
    """Follow unmet inputs from the first blocked step until a step repeats: that loop is a cycle."""
    i = min(j for j, deps in enumerate(waiting) if deps)
    seen: dict[int, int] = {}
    path: list[int] = []
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = min(waiting[i])
    cycle = list(reversed(path[seen[i]:]))  # in the direction data flows
    start = cycle.index(min(cycle))  # from the layer listed first
    loop = [steps[j].layer for j in cycle[start:] + cycle[:start]]
    shown = " -> ".join([*loop, loop[0]])
    return FormatError(f"the layers of model '{model}' read each other's outputs in a cycle: {shown}",
                       layer=loop[0], hint="a layer cannot depend on its own output; the file is damaged")
