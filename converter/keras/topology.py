"""Sequential / Functional / nested model configs -> LayerGraph.

Handles every config spelling: Sequential as a bare list or `{"layers": [...]}`, with or without an
InputLayer; Functional with `inbound_nodes` as Keras 1/2 nested lists or Keras 3 / TF 2.18
`{"args", "kwargs"}` dicts; layers shared between calls; models nested as layers (inlined, with
their layer names prefixed so names stay unique).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converter.errors import FormatError, UnsupportedLayerError, WeightsError
from converter.ir import Graph, Node, Tensor
from converter.ir.graph import INPUT_SPEC_KEYS, SHAPE_KEYS
from converter.keras.artifacts import KerasArtifact
from converter.keras.dialects import canonical_class, canonical_config
from converter.keras.weights import LayerKey, saved_names
from converter.layers import LAYERS

MODEL_CLASSES = frozenset({"Sequential", "Functional"})
TensorRef = tuple[str, int, int]


@dataclass
class UnsupportedEntry:
    name: str
    class_name: str
    reason: str


@dataclass
class _Context:
    artifact: KerasArtifact
    graph: Graph
    unsupported: list[UnsupportedEntry] = field(default_factory=list)
    node_names: set[str] = field(default_factory=set)


def build_graph(artifact: KerasArtifact) -> Graph:
    """Build the LayerGraph; report every unsupported layer at once."""
    class_name, config = model_class_and_config(artifact.model_config)
    graph = Graph(name=str(config.get("name") or artifact.path.stem) if isinstance(config, dict) else artifact.path.stem)
    ctx = _Context(artifact, graph)
    graph.outputs = _build_model(ctx, class_name, config, None, "", ())
    graph.output_names = [t.name for t in graph.outputs]
    if ctx.unsupported:
        raise unsupported_error(ctx.unsupported)
    graph.validate()
    return graph


def model_class_and_config(raw: Any) -> tuple[str, Any]:
    """Accept `to_json()` output, `get_config()` output, or a Keras 1 bare Sequential list."""
    if isinstance(raw, list):
        return "Sequential", raw
    if not isinstance(raw, dict):
        raise FormatError("the model config is not a JSON object", hint="is this a Keras model file?")
    if "class_name" in raw and "config" in raw:
        return canonical_class(str(raw["class_name"])), raw["config"]
    if "layers" in raw:
        return ("Functional" if "input_layers" in raw else "Sequential"), raw
    raise FormatError("the config has neither class_name nor layers", hint="is this a Keras model config?")


def unsupported_error(entries: list[UnsupportedEntry]) -> UnsupportedLayerError:
    lines = "; ".join(f"'{e.name}' ({e.class_name}): {e.reason}" for e in entries)
    return UnsupportedLayerError(
        f"{len(entries)} layer(s) cannot be converted: {lines}",
        layer=entries[0].name,
        hint="register a handler for them (see README, 'Custom layers'); supported classes: "
        + ", ".join(LAYERS.public_names()),
    )


def _build_model(ctx: _Context, class_name: str, config: Any, inputs: list[Tensor] | None, prefix: str,
                 wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    if class_name == "Sequential":
        return _build_sequential(ctx, config, inputs, prefix, wpath)
    if class_name == "Functional":
        return _build_functional(ctx, config, inputs, prefix, wpath)
    raise FormatError(f"unknown model class {class_name!r}", hint="expected Sequential, Functional or Model")


def _layer_parts(layer: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    cls = canonical_class(str(layer.get("class_name")))
    config = layer.get("config") if isinstance(layer.get("config"), (dict, list)) else {}
    if isinstance(config, list):  # a nested Keras 1 Sequential
        config = {"layers": config}
    name = str(layer.get("name") or config.get("name") or cls.lower())
    return cls, name, config


def _new_input(ctx: _Context, name: str, spec: dict[str, Any]) -> Tensor:
    tensor = Tensor(name=_unique(ctx, name), dtype=str(spec.get("dtype") or "float32"))
    ctx.graph.inputs.append(tensor)
    ctx.graph.input_specs[tensor.name] = spec
    return tensor


def _spec_from(config: dict[str, Any], consumer: str) -> dict[str, Any]:
    spec = {k: config[k] for k in INPUT_SPEC_KEYS if config.get(k) is not None}
    spec["consumer"] = consumer
    return spec


def _build_sequential(ctx: _Context, config: Any, inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    layers = config if isinstance(config, list) else list(config.get("layers", []))
    if not layers:
        raise FormatError("the Sequential model has no layers", hint="is the config complete?")
    if inputs is None:
        cls, name, first = _layer_parts(layers[0])
        if cls == "InputLayer":
            inputs = [_new_input(ctx, prefix + name, _spec_from(first, _first_consumer(layers[1:])))]
            layers = layers[1:]
        else:
            spec = _spec_from(first, cls)
            if not any(k in spec for k in SHAPE_KEYS) and isinstance(config, dict):
                if config.get("build_input_shape") is not None:
                    spec["batch_shape"] = config["build_input_shape"]
            inputs = [_new_input(ctx, prefix + name + "_input", spec)]
    tensors = inputs
    saved = _saved_names(layers)
    for layer in layers:
        if _layer_parts(layer)[0] == "InputLayer":
            continue
        tensors = _call_layer(ctx, layer, tensors, 0, prefix, wpath, {}, saved)
    return tensors


def _saved_names(layers: list[dict[str, Any]]) -> dict[str, str]:
    return saved_names([(_layer_parts(layer)[1], str(layer.get("class_name"))) for layer in layers])


def _first_consumer(layers: list[dict[str, Any]]) -> str:
    return _layer_parts(layers[0])[0] if layers else "InputLayer"


def _refs(raw: Any) -> list[TensorRef]:
    """`input_layers`/`output_layers`: a list of [name, node, tensor] or one bare triple."""
    if isinstance(raw, dict):
        return [r for v in raw.values() for r in _refs(v)]
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return [(raw[0], int(raw[1]), int(raw[2]))]
    return [r for item in raw or [] for r in _refs(item)]


def _build_functional(ctx: _Context, config: dict[str, Any], inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    layers = {_layer_parts(layer)[1]: layer for layer in config["layers"]}
    saved = _saved_names(config["layers"])
    produced: dict[tuple[str, int], list[Tensor]] = {}
    input_refs = _refs(config.get("input_layers"))
    for i, (name, node_index, _) in enumerate(input_refs):
        if inputs is not None:
            produced[(name, node_index)] = [inputs[i]]
        else:
            first = _layer_parts(layers[name])[2]
            produced[(name, node_index)] = [_new_input(ctx, prefix + name, _spec_from(first, _input_consumer(layers, name)))]
    pending = [(name, k, call) for name, layer in layers.items()
               for k, call in enumerate(layer.get("inbound_nodes") or [])]
    while pending:
        remaining = []
        for name, k, call in pending:
            refs, kwargs, tensor_kwargs = parse_call(call)
            if all((r[0], r[1]) in produced for r in refs):
                args = [produced[(r[0], r[1])][r[2]] for r in refs]
                produced[(name, k)] = _call_layer(ctx, layers[name], args, k, prefix, wpath,
                                                  {"call_kwargs": kwargs, "tensor_kwargs": tensor_kwargs}, saved)
            else:
                remaining.append((name, k, call))
        if len(remaining) == len(pending):
            missing = sorted({r[0] for _, _, c in remaining for r in parse_call(c)[0]} - set(layers))
            raise FormatError(f"the functional graph cannot be wired (unknown or cyclic inputs: {missing})",
                              layer=remaining[0][0], hint="is the config complete?")
        pending = remaining
    return [produced[(n, k)][t] for n, k, t in _refs(config.get("output_layers"))]


def _input_consumer(layers: dict[str, dict[str, Any]], input_name: str) -> str:
    for name, layer in layers.items():
        for call in layer.get("inbound_nodes") or []:
            if any(r[0] == input_name for r in parse_call(call)[0]):
                return _layer_parts(layer)[0]
    return "InputLayer"


def parse_call(call: Any) -> tuple[list[TensorRef], dict[str, Any], dict[str, list[int]]]:
    """One entry of `inbound_nodes` -> (tensor refs in order, plain kwargs, tensor kwargs -> ref positions)."""
    if isinstance(call, dict) and ("args" in call or "kwargs" in call):
        refs = _keras_tensors(call.get("args", []))
        kwargs, tensor_kwargs = {}, {}
        for key, value in (call.get("kwargs") or {}).items():
            found = _keras_tensors(value)
            if found:
                tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
                refs.extend(found)
            else:
                kwargs[key] = value
        return refs, kwargs, tensor_kwargs
    refs, kwargs = [], {}
    for entry in call or []:
        refs.append((str(entry[0]), int(entry[1]), int(entry[2])))
        if len(entry) > 3 and isinstance(entry[3], dict):
            kwargs.update(entry[3])
    return refs, kwargs, {}


def _keras_tensors(value: Any) -> list[TensorRef]:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            return [(str(history[0]), int(history[1]), int(history[2]))]
        return [r for v in value.values() for r in _keras_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _keras_tensors(v)]
    return []


def _unique(ctx: _Context, name: str) -> str:
    base, i = name, 1
    while name in ctx.node_names:
        name = f"{base}_{i}"
        i += 1
    ctx.node_names.add(name)
    return name


def make_node(cls: str, name: str, config: dict[str, Any]) -> Node:
    """A node with canonical attributes; wrapped layers (TimeDistributed, Bidirectional) become children."""
    attrs = canonical_config(cls, config)
    node = Node(kind=cls, name=name, attrs=attrs)
    for key in ("layer", "backward_layer"):
        inner = attrs.get(key)
        if isinstance(inner, dict) and "class_name" in inner:
            inner_cls, inner_name, inner_config = _layer_parts(inner)
            node.children.append(make_node(inner_cls, inner_name, inner_config))
    return node


def _call_layer(ctx: _Context, layer: dict[str, Any], args: list[Tensor], call_index: int, prefix: str,
                wpath: tuple[LayerKey, ...], extra: dict[str, Any], saved: dict[str, str]) -> list[Tensor]:
    cls, name, config = _layer_parts(layer)
    key = (name, saved.get(name, name))
    if cls in MODEL_CLASSES:
        sub_prefix = f"{prefix}{name}/" if call_index == 0 else f"{prefix}{name}_call{call_index}/"
        return _build_model(ctx, cls, config, args, sub_prefix, wpath + (key,))
    node_name = _unique(ctx, prefix + name if call_index == 0 else f"{prefix}{name}_call{call_index}")
    node = make_node(cls, node_name, config)
    node.layer_name = prefix + name
    node.attrs.update({k: v for k, v in extra.items() if v})
    node.inputs = list(args)
    handler = LAYERS.get(cls)
    if handler is None:
        ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, _why_unsupported(cls, layer)))
        count = 1
    else:
        try:
            handler.check(node)
            _attach_weights(ctx, node, handler.weight_names(node), wpath + (key,))
        except UnsupportedLayerError as err:
            ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, err.message))
        count = handler.num_outputs(node)
    node.outputs = [Tensor(name=node_name if i == 0 else f"{node_name}:{i}", producer=node) for i in range(count)]
    ctx.graph.nodes.append(node)
    return node.outputs


def _why_unsupported(cls: str, layer: dict[str, Any]) -> str:
    if cls == "Lambda":
        return "a Lambda layer holds Python code, which kconvert never runs"
    if cls == "TFOpLambda" or cls.startswith("TF"):
        return "a raw TensorFlow op, not a Keras layer"
    if layer.get("registered_name") and "Custom>" in str(layer.get("registered_name")):
        return "a custom layer class"
    return "not a layer class kconvert knows"


def _attach_weights(ctx: _Context, node: Node, names: list[str], path: tuple[LayerKey, ...]) -> None:
    if not names:
        return
    source = ctx.artifact.weights
    if source is None:
        raise WeightsError(f"no weights for layer '{node.layer_name}': the file holds only the architecture",
                           layer=node.layer_name, hint="pass the weights file with --weights")
    arrays = source.layer_weights(path)
    if arrays is None:
        raise WeightsError(f"the weights file has no entry for layer '{node.layer_name}'",
                           layer=node.layer_name, hint="is this the weights file saved from this model?")
    if len(arrays) != len(names):
        raise WeightsError(
            f"layer '{node.layer_name}' ({node.kind}) expects {len(names)} weight arrays ({', '.join(names)}) "
            f"but the file holds {len(arrays)}", layer=node.layer_name,
            hint="is this the weights file saved from this model?")
    node.weights = {n: np.asarray(a) for n, a in zip(names, arrays)}
