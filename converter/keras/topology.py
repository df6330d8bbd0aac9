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
from converter.keras.assets import attach_vocabulary
from converter.keras.calls import TensorRef, model_refs, parse_call
from converter.keras.dialects import canonical_class, canonical_config, is_keras1, upgrade_model_config
from converter.keras.legacy_config import legacy_refusal
from converter.keras.legacy_weights import WeightOrigin, upgrade_weights
from converter.keras.unsupported import UnsupportedEntry, unsupported_error, why_unsupported
from converter.keras.weight_matching import match_by_order
from converter.keras.weights import LayerKey, saved_names
from converter.layers.registry import handler_for

MODEL_CLASSES = frozenset({"Sequential", "Functional"})


@dataclass
class _Context:
    artifact: KerasArtifact
    graph: Graph
    unsupported: list[UnsupportedEntry] = field(default_factory=list)
    node_names: set[str] = field(default_factory=set)
    # False for an architecture-only view (inspect of a JSON without weights): weights are not attached.
    require_weights: bool = True
    top_layers: list[Any] = field(default_factory=list)
    order_matched: bool = False
    weight_errors: list[WeightsError] = field(default_factory=list)


def build_graph(artifact: KerasArtifact, require_weights: bool = True) -> Graph:
    """Build the LayerGraph; report every unsupported layer at once."""
    raw = upgrade_model_config(artifact.model_config, artifact.keras_version)
    class_name, config = model_class_and_config(raw)
    name = config.get("name") if isinstance(config, dict) else None
    graph = Graph(name=str(name or artifact.path.stem))
    ctx = _Context(artifact, graph, require_weights=require_weights)
    ctx.top_layers = list(config if isinstance(config, list) else config.get("layers") or [])
    graph.outputs = _build_model(ctx, class_name, config, None, "", ())
    graph.output_names = _distinct([t.name for t in graph.outputs])
    if ctx.unsupported:
        raise unsupported_error(ctx.unsupported)
    if ctx.weight_errors:
        raise ctx.weight_errors[0]
    graph.validate()
    return graph


def _distinct(names: list[str]) -> list[str]:
    """A model may return one tensor twice; ONNX output names must still differ."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, i = name, 1
        while candidate in seen:
            candidate, i = f"{name}_{i}", i + 1
        seen.add(candidate)
        out.append(candidate)
    return out


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


def _build_model(ctx: _Context, class_name: str, config: Any, inputs: list[Tensor] | None, prefix: str,
                 wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    if class_name == "Sequential":
        return _build_sequential(ctx, config, inputs, prefix, wpath)
    if class_name == "Functional":
        return _build_functional(ctx, config, inputs, prefix, wpath)
    raise FormatError(f"unknown model class {class_name!r}", hint="expected Sequential, Functional or Model")


def _layer_parts(layer: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    cls = canonical_class(str(layer.get("class_name")))
    raw = layer.get("config")
    # A nested Keras 1 Sequential's config is its bare list of layers.
    config: dict[str, Any] = raw if isinstance(raw, dict) else {"layers": raw} if isinstance(raw, list) else {}
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
    if inputs is None and isinstance(_layer_parts(layers[0])[2].get("layers"), list):
        inputs, layers = _build_merged_branches(ctx, layers, prefix, wpath), layers[1:]
    if inputs is None:
        cls, name, first = _layer_parts(layers[0])
        if cls == "InputLayer":
            inputs = [_new_input(ctx, prefix + name, _spec_from(first, _first_consumer(layers[1:])))]
            layers = layers[1:]
        else:
            spec = _spec_from(first, cls)
            has_shape = any(k in spec for k in SHAPE_KEYS)
            if not has_shape and isinstance(config, dict) and config.get("build_input_shape") is not None:
                spec["batch_shape"] = config["build_input_shape"]
            inputs = [_new_input(ctx, prefix + name + "_input", spec)]
    tensors = inputs
    saved = _saved_names(layers)
    for layer in layers:
        if _layer_parts(layer)[0] == "InputLayer":
            continue
        tensors = _call_layer(ctx, layer, tensors, 0, prefix, wpath, {}, saved)
    return tensors


def _build_merged_branches(ctx: _Context, layers: list[dict[str, Any]], prefix: str,
                           wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    """A Keras 1 Sequential starting with `Merge([branch_a, branch_b])`: each branch model gets its own
    input(s), then the merge (already a canonical merge class) joins their outputs. Keras 1 saved the
    branch layers flattened into the top level of the weights file, so their weight path is unchanged."""
    merge = dict(layers[0])
    branches = merge["config"]["layers"]
    merge["config"] = {k: v for k, v in merge["config"].items() if k != "layers"}
    outputs: list[Tensor] = []
    for branch in branches:
        bcls, _, bconfig = _layer_parts(branch)
        outputs.extend(_build_model(ctx, bcls, bconfig, None, prefix, wpath))
    return _call_layer(ctx, merge, outputs, 0, prefix, wpath, {}, _saved_names(layers))


def _saved_names(layers: list[dict[str, Any]]) -> dict[str, str]:
    return saved_names([(_layer_parts(layer)[1], str(layer.get("class_name"))) for layer in layers])


def _first_consumer(layers: list[dict[str, Any]]) -> str:
    return _layer_parts(layers[0])[0] if layers else "InputLayer"


def _build_functional(ctx: _Context, config: dict[str, Any], inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    layers = {_layer_parts(layer)[1]: layer for layer in config["layers"]}
    saved = _saved_names(config["layers"])
    produced: dict[tuple[str, int], list[Tensor]] = {}
    input_refs = model_refs(config.get("input_layers"))
    for i, (name, node_index, _) in enumerate(input_refs):
        if inputs is not None:
            produced[(name, node_index)] = [inputs[i]]
        else:
            first = _layer_parts(layers[name])[2]
            spec = _spec_from(first, _input_consumer(layers, name))
            produced[(name, node_index)] = [_new_input(ctx, prefix + name, spec)]
    pending = [(name, k, call) for name, layer in layers.items()
               for k, call in enumerate(layer.get("inbound_nodes") or [])]
    offsets = _node_offsets(config, layers)
    while pending:
        remaining = []
        for name, k, call in pending:
            refs, kwargs, tensor_kwargs = parse_call(call)
            if all((r[0], r[1]) in produced for r in refs):
                args = [_tensor_at(ctx, produced, r) for r in refs]
                produced[(name, k + offsets.get(name, 0))] = _call_layer(
                    ctx, layers[name], args, k, prefix, wpath,
                    {"call_kwargs": kwargs, "tensor_kwargs": tensor_kwargs}, saved)
            else:
                remaining.append((name, k, call))
        if len(remaining) == len(pending):
            missing = sorted({r[0] for _, _, c in remaining for r in parse_call(c)[0]} - set(layers))
            raise FormatError(f"the functional graph cannot be wired (unknown or cyclic inputs: {missing})",
                              layer=remaining[0][0], hint="is the config complete?")
        pending = remaining
    return [_tensor_at(ctx, produced, ref) for ref in model_refs(config.get("output_layers"))]


def _tensor_at(ctx: _Context, produced: dict[tuple[str, int], list[Tensor]], ref: TensorRef) -> Tensor:
    """Output `ref[2]` of call `ref[1]` of layer `ref[0]`. An unsupported layer gets one output (its
    count is unknown), so a reference past it means: report the unsupported layers."""
    outputs = produced[(ref[0], ref[1])]
    if ref[2] < len(outputs):
        return outputs[ref[2]]
    if ctx.unsupported:
        raise unsupported_error(ctx.unsupported)
    raise FormatError(f"the config reads output {ref[2]} of layer '{ref[0]}', which has {len(outputs)}",
                      layer=ref[0], hint="is the config complete?")


def _node_offsets(config: dict[str, Any], layers: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Nested models whose saved calls are numbered from 1: Keras 2 counts the nested model's own
    Input -> output node as node 0 and omits it from `inbound_nodes` (Keras 3 does so only for some).
    The references tell which: every saved call is referenced, so the highest index is the last call."""
    highest: dict[str, int] = {}
    calls = [call for layer in layers.values() for call in layer.get("inbound_nodes") or []]
    refs = [r for call in calls for r in parse_call(call)[0]] + model_refs(config.get("output_layers"))
    for name, node_index, _ in refs:
        highest[name] = max(node_index, highest.get(name, 0))
    return {name: 1 for name, layer in layers.items() if _layer_parts(layer)[0] in MODEL_CLASSES
            and highest.get(name, -1) == len(layer.get("inbound_nodes") or [])}


def _input_consumer(layers: dict[str, dict[str, Any]], input_name: str) -> str:
    for layer in layers.values():
        for call in layer.get("inbound_nodes") or []:
            if any(r[0] == input_name for r in parse_call(call)[0]):
                return _layer_parts(layer)[0]
    return "InputLayer"


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
    for inner in _inner_layers(cls, attrs):  # a layer holding a list of layers (keras.layers.Pipeline)
        inner_cls, inner_name, inner_config = _layer_parts(inner)
        node.children.append(make_node(inner_cls, inner_name, inner_config))
    return node


def _inner_layers(cls: str, attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer configs of a non-model layer whose config holds a `layers` list (Pipeline)."""
    inner = attrs.get("layers")
    if cls in MODEL_CLASSES or not isinstance(inner, list) or not inner:
        return []
    return inner if all(isinstance(e, dict) and "class_name" in e for e in inner) else []


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
    handler = handler_for(node)
    if handler is None:
        ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, why_unsupported(cls, layer)))
        count = 1
    else:
        try:
            refusal = legacy_refusal(cls, config)
            if refusal:
                raise UnsupportedLayerError(refusal, layer=node.layer_name)
            attach_vocabulary(ctx.artifact, node, wpath + (key,))  # an adapted lookup's vocabulary
            handler.check(node)
            if _inner_layers(cls, node.attrs):
                _attach_inner_weights(ctx, node, wpath + (key,))
            else:
                _attach_weights(ctx, node, handler.weight_names(node), wpath + (key,))
        except UnsupportedLayerError as err:
            ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, err.message))
        except WeightsError as err:
            ctx.weight_errors.append(err)  # raised after unsupported layers, which say more
        count = handler.num_outputs(node)
    node.outputs = [Tensor(name=node_name if i == 0 else f"{node_name}:{i}", producer=node) for i in range(count)]
    ctx.graph.nodes.append(node)
    return node.outputs


def _attach_weights(ctx: _Context, node: Node, names: list[str], path: tuple[LayerKey, ...]) -> None:
    if not names:
        return
    source = ctx.artifact.weights
    if source is None and not ctx.require_weights:
        return
    if source is not None and len(path) == 1 and not ctx.order_matched:
        ctx.artifact.weights = source = match_by_order(source, _weighted_top_layers(ctx))
        ctx.order_matched = True
    if source is None:
        raise WeightsError(f"no weights for layer '{node.layer_name}': the file holds only the architecture",
                           layer=node.layer_name, hint="pass the weights file with --weights")
    arrays = source.layer_weights(path)
    if arrays is not None:
        origin = WeightOrigin(ctx.artifact.keras_version, ctx.artifact.backend,
                              is_keras1(ctx.artifact.model_config, ctx.artifact.keras_version))
        arrays = upgrade_weights(node, arrays, origin)
    if arrays is None:
        raise WeightsError(f"the weights file has no entry for layer '{node.layer_name}'",
                           layer=node.layer_name, hint="is this the weights file saved from this model?")
    if len(arrays) != len(names):
        raise WeightsError(
            f"layer '{node.layer_name}' ({node.kind}) expects {len(names)} weight arrays ({', '.join(names)}) "
            f"but the file holds {len(arrays)}", layer=node.layer_name,
            hint="is this the weights file saved from this model?")
    node.weights = {n: np.asarray(a) for n, a in zip(names, arrays)}


def _attach_inner_weights(ctx: _Context, node: Node, path: tuple[LayerKey, ...]) -> None:
    """A Pipeline's layers keep their own weights (Keras 3: `<pipeline>/layers/<saved name>/vars`; legacy
    h5: names with the layer's name as a path component), so each is read by its own path, then handed
    to the container as `<index>/<name>` (what its handler's weight_names lists)."""
    saved = _saved_names(_inner_layers(node.kind, node.attrs))
    weights: dict[str, np.ndarray] = {}
    for i, child in enumerate(node.children):
        handler = handler_for(child)
        if handler is None:
            continue  # the container's check() has refused it
        child.layer_name = f"{node.layer_name}/{child.name}"
        _attach_weights(ctx, child, handler.weight_names(child), path + ((child.name, saved.get(child.name,
                                                                                             child.name)),))
        weights.update({f"{i}/{name}": array for name, array in child.weights.items()})
    node.weights = weights


def _weighted_top_layers(ctx: _Context) -> list[LayerKey]:
    """The model's top-level layers that hold weights, in config order (what Keras matches by order)."""
    names: list[LayerKey] = []
    saved = _saved_names(ctx.top_layers)
    for layer in ctx.top_layers:
        cls, name, config = _layer_parts(layer)
        node = make_node(cls, name, config)
        handler = handler_for(node)
        if cls in MODEL_CLASSES:
            names.append((name, saved.get(name, name)))
        if handler is None:
            continue
        try:
            if handler.weight_names(node):
                names.append((name, saved.get(name, name)))
        except (KeyError, TypeError, ValueError, UnsupportedLayerError):
            continue  # a layer that cannot be converted is reported on its own; it cannot be matched
    return names
