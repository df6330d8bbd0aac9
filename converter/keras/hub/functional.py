"""A Keras 3 Functional config, built call by call the way a Keras Hub constructor builds its graph.

A recipe calls layers on symbolic tensors (`Ref`s) as the constructor does in Python; `build()` writes
the config Keras itself would write for that graph: `inbound_nodes` as `{"args", "kwargs"}` with
`__keras_tensor__` references, and the layers in **Keras' own `model.layers` order** (keras/src/ops/
function.py `map_graph`: operations by decreasing depth, ties by first DFS visit from the outputs). That
order is what the weights file's saved names (`conv2d`, `conv2d_1`, ...) count in, so a recipe may call
its layers in any order its author finds clearest and still bind every weight to the right layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.keras.weights import saved_object_name

# The dtype policy every layer of a float32 Keras Hub model carries.
FLOAT32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


@dataclass(frozen=True)
class Ref:
    """A symbolic tensor: output `index` of call `node` of layer `layer`."""

    layer: str
    node: int = 0
    index: int = 0


@dataclass
class _Layer:
    entry: dict[str, Any]
    calls: list[dict[str, Any]] = field(default_factory=list)
    call_inputs: list[list[Ref]] = field(default_factory=list)  # per call, in Keras' flatten order
    is_input: bool = False


class FunctionalBuilder:
    """Layers called on Refs; `build(outputs)` -> a Functional config (the dict under `"config"`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._layers: dict[str, _Layer] = {}
        self._inputs: list[Ref] = []
        self.input_specs: list[tuple[str, tuple[int | None, ...], str]] = []  # (name, shape, dtype) in order
        self._auto: dict[str, int] = {}

    # -- inputs and layers ------------------------------------------------------------------------
    def input(self, name: str, shape: tuple[int | None, ...], dtype: str = "float32") -> Ref:
        """A model input; `shape` without the batch dimension."""
        config = {"batch_shape": [None, *shape], "dtype": dtype, "sparse": False, "ragged": False, "name": name}
        self._add(name, {"module": "keras.layers", "class_name": "InputLayer", "config": config,
                         "registered_name": None, "name": name}, is_input=True)
        ref = Ref(name)
        self._inputs.append(ref)
        self.input_specs.append((name, tuple(shape), dtype))
        return ref

    def layer(self, class_name: str, name: str, config: dict[str, Any], *args: Any,
              registered_name: str | None = None, module: str = "keras.layers", **kwargs: Any) -> Ref:
        """Create layer `name` (first call) or call it again (a shared layer: `config` must be the same
        object or equal); returns its first output of this call (`outputs()` gives the others)."""
        if name not in self._layers:
            entry = {"module": module, "class_name": class_name,
                     "config": {"name": name, "trainable": True, "dtype": FLOAT32, **config},
                     "registered_name": registered_name, "name": name}
            self._add(name, entry)
        return self._call(name, args, kwargs)

    def hub_layer(self, class_name: str, name: str, config: dict[str, Any], *args: Any, **kwargs: Any) -> Ref:
        """A Keras Hub layer class (registered as `keras_hub>Class`)."""
        return self.layer(class_name, name, config, *args, registered_name=f"keras_hub>{class_name}",
                          module="keras_hub.src.layers", **kwargs)

    def op(self, class_name: str, config: dict[str, Any], *args: Any, **kwargs: Any) -> Ref:
        """A Keras 3 op node (`keras.ops.*` called on a symbolic tensor), named as Keras names it."""
        base = saved_object_name(class_name)
        count = self._auto.get(base, 0)
        self._auto[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        entry = {"module": "keras.src.ops.numpy", "class_name": class_name, "config": {"name": name, **config},
                 "registered_name": class_name, "name": name}
        self._add(name, entry)
        return self._call(name, args, kwargs)

    def model(self, entry: dict[str, Any], *args: Any) -> Ref:
        """Call a nested model (an expanded Keras Hub entry, see expand.py) on `args`."""
        name = entry["name"]
        self._add(name, dict(entry))
        return self._call(name, args, {})

    def config_of(self, name: str) -> dict[str, Any]:
        """Layer `name`'s config (to call the same layer from an enclosing model's graph)."""
        return dict(self._layers[name].entry["config"])

    def share_weights(self, name: str, steps: list[tuple[str, str]]) -> None:
        """Layer `name` is a layer of a model nested in this one, called again here: its weights are at
        `steps` ([layer name, saved name] from this model down; topology reads `weights_at`)."""
        self._layers[name].entry["weights_at"] = [list(step) for step in steps]

    def outputs(self, ref: Ref, count: int) -> list[Ref]:
        return [Ref(ref.layer, ref.node, i) for i in range(count)]

    # -- the config -------------------------------------------------------------------------------
    def build(self, outputs: Ref | list[Ref] | dict[str, Ref]) -> dict[str, Any]:
        flat = list(outputs.values()) if isinstance(outputs, dict) else \
            [outputs] if isinstance(outputs, Ref) else list(outputs)
        layers = []
        for name in self._keras_order(_keras_flatten(outputs)):
            layer = self._layers[name]
            layers.append({**layer.entry, "inbound_nodes": list(layer.calls)})
        return {"name": self.name, "trainable": True, "layers": layers,
                "input_layers": [_triple(ref) for ref in self._inputs],
                "output_layers": {k: _triple(v) for k, v in outputs.items()} if isinstance(outputs, dict)
                else [_triple(ref) for ref in flat]}

    def _add(self, name: str, entry: dict[str, Any], is_input: bool = False) -> None:
        if name in self._layers:
            raise ValueError(f"recipe bug: two layers named {name!r}")
        self._layers[name] = _Layer(entry, is_input=is_input)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ref:
        layer = self._layers[name]
        layer.calls.append({"args": [_serialise(a) for a in args],
                            "kwargs": {k: _serialise(v) for k, v in kwargs.items()}})
        # Keras flattens a node's arguments as tree.flatten((args, kwargs)): positional first, then the
        # keyword arguments by sorted key.
        layer.call_inputs.append(_refs_in(list(args)) + _refs_in([kwargs[k] for k in sorted(kwargs)]))
        return Ref(name, len(layer.calls) - 1)

    def _keras_order(self, outputs: list[Ref]) -> list[str]:
        """keras.src.ops.function.map_graph: depth-first from the outputs (an operation's index is its
        first visit), node depths propagated from the outputs back, operations by decreasing depth."""
        visit_index: dict[str, int] = {}
        finished: set[tuple[str, int]] = set()
        order: list[tuple[str, int]] = []  # nodes, inputs first (post-order)
        for out in outputs:
            stack: list[tuple[tuple[str, int], int]] = [((out.layer, out.node), 0)]
            while stack:
                node, next_input = stack.pop()
                if next_input == 0:
                    if node in finished:
                        continue
                    visit_index.setdefault(node[0], len(visit_index))
                inputs = self._node_inputs(node)
                if next_input < len(inputs):
                    stack.append((node, next_input + 1))
                    child = inputs[next_input]
                    stack.append(((child.layer, child.node), 0))
                elif node not in finished:
                    finished.add(node)
                    order.append(node)
        node_depth: dict[tuple[str, int], int] = {}
        layer_depth: dict[str, int] = {}
        for node in reversed(order):
            depth = max(node_depth.setdefault(node, 0), layer_depth.get(node[0], 0))
            layer_depth[node[0]] = node_depth[node] = depth
            for parent in self._node_inputs(node):
                key = (parent.layer, parent.node)
                node_depth[key] = max(depth + 1, node_depth.get(key, 0))
        for ref in self._inputs:  # an input no output depends on is still a layer of the model
            if ref.layer not in layer_depth:
                layer_depth[ref.layer], visit_index[ref.layer] = 0, -1
        return sorted(layer_depth, key=lambda name: (-layer_depth[name], visit_index[name]))

    def _node_inputs(self, node: tuple[str, int]) -> list[Ref]:
        layer = self._layers[node[0]]
        return [] if layer.is_input else layer.call_inputs[node[1]]


def _keras_flatten(outputs: Ref | list[Ref] | dict[str, Ref]) -> list[Ref]:
    """tree.flatten: a dict's values by sorted key."""
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    return [outputs] if isinstance(outputs, Ref) else list(outputs)


def _triple(ref: Ref) -> list[Any]:
    return [ref.layer, ref.node, ref.index]


def _refs_in(values: list[Any]) -> list[Ref]:
    found: list[Ref] = []
    for value in values:
        if isinstance(value, Ref):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(_refs_in(list(value)))
        elif isinstance(value, dict):
            found.extend(_refs_in([value[k] for k in sorted(value)]))
    return found


def _serialise(value: Any) -> Any:
    """A call argument as Keras 3 writes it."""
    if isinstance(value, Ref):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": None, "dtype": None, "keras_history": _triple(value)}}
    if isinstance(value, slice):
        return {"class_name": "__slice__", "config": {"start": value.start, "stop": value.stop, "step": value.step}}
    if value is Ellipsis:
        return {"class_name": "__ellipsis__", "config": {}}
    if isinstance(value, (list, tuple)):
        return [_serialise(v) for v in value]
    if isinstance(value, dict):
        return {k: _serialise(v) for k, v in value.items()}
    return value


