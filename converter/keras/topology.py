"""Sequential / Functional / nested model configs -> LayerGraph.

Handles every config spelling: Sequential as a bare list or `{"layers": [...]}`, with or without an
InputLayer; Functional with `inbound_nodes` as Keras 1/2 nested lists or Keras 3 / TF 2.18
`{"args", "kwargs"}` dicts; layers shared between calls; models nested as layers (inlined, with
their layer names prefixed so names stay unique).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.errors import FormatError, UnsupportedLayerError, WeightsError
from converter.ir import Graph, Tensor
from converter.ir.graph import INPUT_SPEC_KEYS, SHAPE_KEYS
from converter.keras.artifacts import KerasArtifact
from converter.keras.assets import attach_vocabulary
from converter.keras.attach import WeightAttacher
from converter.keras.calls import TensorRef, model_refs, parse_call
from converter.keras.dialects import canonical_class, upgrade_model_config
from converter.keras.layer_configs import MODEL_CLASSES, inner_layers, layer_parts, make_node, saved_names_of
from converter.keras.legacy_config import legacy_refusal
from converter.keras.unsupported import UnsupportedEntry, unsupported_error, why_unsupported
from converter.keras.weights import LayerKey
from converter.layers.registry import handler_for


@dataclass
class _Context:
    artifact: KerasArtifact
    graph: Graph
    weights: WeightAttacher
    unsupported: list[UnsupportedEntry] = field(default_factory=list)
    node_names: set[str] = field(default_factory=set)
    weight_errors: list[WeightsError] = field(default_factory=list)


def build_graph(artifact: KerasArtifact, require_weights: bool = True) -> Graph:
    """Build the LayerGraph; report every unsupported layer at once."""
    raw = upgrade_model_config(artifact.model_config, artifact.keras_version)
    class_name, config = model_class_and_config(raw)
    name = config.get("name") if isinstance(config, dict) else None
    graph = Graph(name=str(name or artifact.path.stem))
    top_layers = list(config if isinstance(config, list) else config.get("layers") or [])
    ctx = _Context(artifact, graph, WeightAttacher(artifact, require_weights, top_layers))
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
    if inputs is None and isinstance(layer_parts(layers[0])[2].get("layers"), list):
        inputs, layers = _build_merged_branches(ctx, layers, prefix, wpath), layers[1:]
    if inputs is None:
        cls, name, first = layer_parts(layers[0])
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
    saved = saved_names_of(layers)
    for layer in layers:
        if layer_parts(layer)[0] == "InputLayer":
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
        bcls, _, bconfig = layer_parts(branch)
        outputs.extend(_build_model(ctx, bcls, bconfig, None, prefix, wpath))
    return _call_layer(ctx, merge, outputs, 0, prefix, wpath, {}, saved_names_of(layers))


def _first_consumer(layers: list[dict[str, Any]]) -> str:
    return layer_parts(layers[0])[0] if layers else "InputLayer"


def _build_functional(ctx: _Context, config: dict[str, Any], inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    layers = {layer_parts(layer)[1]: layer for layer in config["layers"]}
    saved = saved_names_of(config["layers"])
    produced: dict[tuple[str, int], list[Tensor]] = {}
    input_refs = model_refs(config.get("input_layers"))
    for i, (name, node_index, _) in enumerate(input_refs):
        if inputs is not None:
            produced[(name, node_index)] = [inputs[i]]
        else:
            first = layer_parts(layers[name])[2]
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
    return {name: 1 for name, layer in layers.items() if layer_parts(layer)[0] in MODEL_CLASSES
            and highest.get(name, -1) == len(layer.get("inbound_nodes") or [])}


def _input_consumer(layers: dict[str, dict[str, Any]], input_name: str) -> str:
    for layer in layers.values():
        for call in layer.get("inbound_nodes") or []:
            if any(r[0] == input_name for r in parse_call(call)[0]):
                return layer_parts(layer)[0]
    return "InputLayer"


def _unique(ctx: _Context, name: str) -> str:
    base, i = name, 1
    while name in ctx.node_names:
        name = f"{base}_{i}"
        i += 1
    ctx.node_names.add(name)
    return name


def _call_layer(ctx: _Context, layer: dict[str, Any], args: list[Tensor], call_index: int, prefix: str,
                wpath: tuple[LayerKey, ...], extra: dict[str, Any], saved: dict[str, str]) -> list[Tensor]:
    cls, name, config = layer_parts(layer)
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
            if inner_layers(cls, node.attrs):
                ctx.weights.attach_inner(node, wpath + (key,))
            else:
                ctx.weights.attach(node, handler.weight_names(node), wpath + (key,))
        except UnsupportedLayerError as err:
            ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, err.message))
        except WeightsError as err:
            ctx.weight_errors.append(err)  # raised after unsupported layers, which say more
        count = handler.num_outputs(node)
    node.outputs = [Tensor(name=node_name if i == 0 else f"{node_name}:{i}", producer=node) for i in range(count)]
    ctx.graph.nodes.append(node)
    return node.outputs


