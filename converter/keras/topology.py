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
from converter.ir import Graph, Node, Tensor
from converter.ir.dtypes import input_dtype
from converter.ir.graph import INPUT_SPEC_KEYS, SHAPE_KEYS, KerasOutput
from converter.ir.names import NameAuthority
from converter.ir.spec import CallSite, TensorArg
from converter.keras.artifacts import KerasArtifact
from converter.keras.assets import attach_vocabulary
from converter.keras.attach import WeightAttacher
from converter.keras.calls import TensorRef, excerpt, model_refs
from converter.keras.dialects import canonical_class, upgrade_model_config
from converter.keras.hub.expand import expand_hub_models
from converter.keras.layer_configs import (
    MODEL_CLASSES,
    inner_layers,
    layer_parts,
    make_node,
    parse_node,
    saved_names_of,
)
from converter.keras.legacy_config import legacy_refusal
from converter.keras.structure import MAX_MODEL_DEPTH, check_config_tree, check_entry, model_layers
from converter.keras.unsupported import UnsupportedEntry, unsupported_error, why_unsupported
from converter.keras.weights import LayerKey
from converter.keras.wiring import plan_functional
from converter.layers.registry import LayerHandler, handler_for


@dataclass
class _Context:
    artifact: KerasArtifact
    graph: Graph
    weights: WeightAttacher
    unsupported: list[UnsupportedEntry] = field(default_factory=list)
    weight_errors: list[WeightsError] = field(default_factory=list)
    depth: int = 0  # models being built, one inside the other
    listing: bool = False  # inspect: unsupported layers are listed (with their stored arrays), not refused


def build_graph(artifact: KerasArtifact, require_weights: bool = True,
                unsupported: list[UnsupportedEntry] | None = None) -> Graph:
    """Build the LayerGraph; report every unsupported layer at once, or, given an `unsupported` list (inspect),
    add them to it and return the graph with those layers' nodes left without a handler's spec or weights."""
    check_config_tree(artifact.model_config)
    raw = expand_hub_models(upgrade_model_config(artifact.model_config, artifact.keras_version), artifact.weights)
    class_name, config = model_class_and_config(raw)
    name = config.get("name") if isinstance(config, dict) else None
    graph = Graph(name=name if isinstance(name, str) and name else artifact.path.stem,
                  keras_major=artifact.keras_major)
    top_layers = model_layers(config, graph.name)
    ctx = _Context(artifact, graph, WeightAttacher(artifact, require_weights, top_layers),
                   listing=unsupported is not None)
    graph.outputs = _build_model(ctx, class_name, config, None, "", (), graph.name)
    keys = _output_keys(config)
    graph.output_names = _distinct(keys if keys and len(keys) == len(graph.outputs) else
                                   [t.name for t in graph.outputs])
    if ctx.unsupported:
        if unsupported is None:
            raise unsupported_error(ctx.unsupported)
        unsupported.extend(ctx.unsupported)
    if ctx.weight_errors:
        raise ctx.weight_errors[0]
    graph.validate()
    return graph


def _output_keys(config: Any) -> list[str] | None:
    """A Keras 3 model returning a dict (a Keras Hub backbone's `sequence_output` / `pooled_output`): its
    outputs are named by their keys, as Keras hands them to the caller."""
    outputs = config.get("output_layers") if isinstance(config, dict) else None
    if isinstance(outputs, dict) and outputs and all(isinstance(k, str) and k for k in outputs):
        return list(outputs)
    return None


def _distinct(names: list[str]) -> list[str]:
    """A model may return one tensor twice; ONNX output names must still differ."""
    distinct = NameAuthority()
    return [distinct.unique(name) for name in names]


def model_class_and_config(raw: Any) -> tuple[str, Any]:
    """Accept `to_json()` output, `get_config()` output, or a Keras 1 bare Sequential list."""
    if isinstance(raw, list):
        return "Sequential", raw
    if not isinstance(raw, dict):
        raise FormatError("the model config is not a JSON object", hint="is this a Keras model file?")
    if "class_name" in raw and "config" in raw:
        cls = canonical_class(raw["class_name"]) if isinstance(raw["class_name"], str) else None
        if cls not in MODEL_CLASSES:
            raise FormatError(f"unknown model class {excerpt(raw['class_name'])}",
                              hint="expected Sequential, Functional or Model")
        config = raw["config"]
        if not isinstance(config, dict) and not (cls == "Sequential" and isinstance(config, list)):
            raise FormatError(f"the {cls} model's config is {excerpt(config)}, not an object",
                              hint="is this a Keras model config?")
        return cls, config
    if "layers" in raw:
        return ("Functional" if "input_layers" in raw else "Sequential"), raw
    raise FormatError("the config has neither class_name nor layers", hint="is this a Keras model config?")


def _build_model(ctx: _Context, class_name: str, config: Any, inputs: list[Tensor] | None, prefix: str,
                 wpath: tuple[LayerKey, ...], model: str) -> list[Tensor]:
    """`model`: the model's name, for messages. Models nest by recursion, so their depth is bounded."""
    if ctx.depth >= MAX_MODEL_DEPTH:
        raise FormatError(f"model '{model}' is nested more than {MAX_MODEL_DEPTH} models deep", layer=model,
                          hint="no Keras model nests this deep; the file is damaged or hostile")
    ctx.depth += 1
    try:
        build = _build_sequential if class_name == "Sequential" else _build_functional
        return build(ctx, config, inputs, prefix, wpath, model)
    finally:
        ctx.depth -= 1


def _new_input(ctx: _Context, name: str, spec: dict[str, Any]) -> Tensor:
    tensor = Tensor(name=_unique(ctx, name))
    tensor.dtype = input_dtype(tensor.name, spec.get("dtype"))
    ctx.graph.inputs.append(tensor)
    ctx.graph.input_specs[tensor.name] = spec
    return tensor


def _spec_from(config: dict[str, Any], consumer: str) -> dict[str, Any]:
    spec = {k: config[k] for k in INPUT_SPEC_KEYS if config.get(k) is not None}
    spec["consumer"] = consumer
    return spec


def _build_sequential(ctx: _Context, config: Any, inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...], model: str) -> list[Tensor]:
    layers = model_layers(config, model)
    if inputs is None:
        inputs, layers = _sequential_inputs(ctx, config, layers, prefix, wpath)
    tensors = inputs
    saved = saved_names_of(layers)
    for layer in layers:
        if layer_parts(layer)[0] == "InputLayer":
            continue
        tensors = _call_layer(ctx, layer, tensors, 0, prefix, wpath, CallSite(), saved)
    return tensors


def _sequential_inputs(ctx: _Context, config: Any, layers: list[dict[str, Any]], prefix: str,
                       wpath: tuple[LayerKey, ...]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """A top-level Sequential's input(s), and the layers left to call on them."""
    cls, name, first = layer_parts(layers[0])
    if cls == "InputLayer":
        return [_new_input(ctx, prefix + name, _spec_from(first, _first_consumer(layers[1:])))], layers[1:]
    if cls not in MODEL_CLASSES and isinstance(first.get("layers"), list):
        return _build_merged_branches(ctx, layers, prefix, wpath), layers[1:]
    # Keras 2 makes the input `<first layer>_input`, shaped like the first layer's (for a nested model
    # first: its own first input's) input; the first layer, nested model or not, is then called on it.
    spec = _spec_from(first, cls) if cls not in MODEL_CLASSES else nested_input_spec(cls, first, name)
    stated = any(k in spec for k in SHAPE_KEYS)
    if not stated and isinstance(config, dict) and config.get("build_input_shape") is not None:
        spec["batch_shape"] = config["build_input_shape"]
    return [_new_input(ctx, prefix + name + "_input", spec)], layers


def nested_input_spec(cls: str, config: dict[str, Any], model: str) -> dict[str, Any]:
    """The input spec of a model used as the first layer of a Sequential: that of its first input,
    looked for through models nested in it (a loop, bounded like the nesting itself)."""
    for _ in range(MAX_MODEL_DEPTH):
        layers = model_layers(config, model)
        if cls == "Functional":
            refs = model_refs(config.get("input_layers"), model, "input_layers")
            named = {layer_parts(layer)[1]: layer for layer in layers}
            if len(refs) != 1 or refs[0][0] not in named:
                raise FormatError(f"model '{model}' is the first layer of a Sequential, so it needs exactly one "
                                  f"input layer (input_layers holds {len(refs)})", layer=model,
                                  hint="is the config complete and undamaged?")
            layers = [named[refs[0][0]]]
        inner_cls, name, first = layer_parts(layers[0])
        if inner_cls not in MODEL_CLASSES:
            consumer = _first_consumer(layers[1:]) if inner_cls == "InputLayer" else inner_cls
            return _spec_from(first, consumer)
        cls, config, model = inner_cls, first, name
    raise FormatError(f"model '{model}' is nested more than {MAX_MODEL_DEPTH} models deep", layer=model,
                      hint="no Keras model nests this deep; the file is damaged or hostile")


def _build_merged_branches(ctx: _Context, layers: list[dict[str, Any]], prefix: str,
                           wpath: tuple[LayerKey, ...]) -> list[Tensor]:
    """A Keras 1 Sequential starting with `Merge([branch_a, branch_b])`: each branch model gets its own
    input(s), then the merge (already a canonical merge class) joins their outputs. Keras 1 saved the
    branch layers flattened into the top level of the weights file, so their weight path is unchanged."""
    merge = dict(layers[0])
    _, merge_name, merge_config = layer_parts(merge)
    branches = merge_config["layers"]
    merge["config"] = {k: v for k, v in merge_config.items() if k != "layers"}
    outputs: list[Tensor] = []
    for index, branch in enumerate(branches):
        check_entry(branch, f"branch {index} of Merge '{merge_name}'")
        bcls, bname, bconfig = layer_parts(branch)
        if bcls not in MODEL_CLASSES:
            raise FormatError(f"branch {index} of Merge '{merge_name}' is a {bcls}, not a model", layer=merge_name,
                              hint="a Keras 1 Sequential Merge joins Sequential or Model branches")
        outputs.extend(_build_model(ctx, bcls, bconfig, None, prefix, wpath, bname))
    return _call_layer(ctx, merge, outputs, 0, prefix, wpath, CallSite(), saved_names_of(layers))


def _first_consumer(layers: list[dict[str, Any]]) -> str:
    return layer_parts(layers[0])[0] if layers else "InputLayer"


def _build_functional(ctx: _Context, config: Any, inputs: list[Tensor] | None, prefix: str,
                      wpath: tuple[LayerKey, ...], model: str) -> list[Tensor]:
    entries = model_layers(config, model)
    layers = {layer_parts(layer)[1]: layer for layer in entries}
    plan = plan_functional(model, config, layers)
    if inputs is not None and len(inputs) < len(plan.inputs):
        raise FormatError(f"model '{model}' has {len(plan.inputs)} inputs but is called on {len(inputs)} tensor(s)",
                          layer=model, hint="is the config complete and undamaged?")
    saved = saved_names_of(entries)
    produced: dict[tuple[str, int], list[Tensor]] = {}
    for i, (name, node_index, _) in enumerate(plan.inputs):
        if inputs is not None:
            produced[(name, node_index)] = [inputs[i]]
        else:
            spec = _spec_from(layer_parts(layers[name])[2], plan.consumer_of(name, layers))
            produced[(name, node_index)] = [_new_input(ctx, prefix + name, spec)]
    for step in plan.steps:
        args = [_tensor_at(ctx, produced, ref) for ref in step.call.refs]
        extra = CallSite(dict(step.call.kwargs), {k: list(v) for k, v in step.call.tensor_kwargs.items()},
                         list(step.call.args), dict(step.call.arg_kwargs))
        produced[step.key] = _call_layer(ctx, layers[step.layer], args, step.index, prefix, wpath, extra, saved)
    outputs = [_tensor_at(ctx, produced, ref) for ref in plan.outputs]
    return outputs if inputs is None else _keras_flatten_order(config, outputs)


def _keras_flatten_order(config: dict[str, Any], outputs: list[Tensor]) -> list[Tensor]:
    """A nested model's outputs as its caller indexes them: Keras flattens a dict of outputs by sorted key
    (tree.flatten), whatever order the config lists them in (a Keras Hub backbone's `pooled_output` is
    output 0 of its call, `sequence_output` output 1)."""
    declared = config.get("output_layers")
    if not isinstance(declared, dict) or len(declared) != len(outputs):
        return outputs
    keys = list(declared)
    return [outputs[keys.index(key)] for key in sorted(keys)]


def _named_inputs(model_config: Any, extra: CallSite, args: list[Tensor]) -> list[Tensor]:
    """A nested model called on a dict of tensors (`backbone({"token_ids": t, "padding_mask": m})`) takes
    them by input name, in whatever order the dict lists them; any other call, by position."""
    if len(extra.args) != 1 or not isinstance(extra.args[0], dict) or not isinstance(model_config, dict):
        return args
    given = extra.args[0]
    names = [ref[0] for ref in model_refs(model_config.get("input_layers"), "model", "input_layers")]
    if sorted(names) != sorted(given) or not all(isinstance(v, TensorArg) for v in given.values()):
        return args
    return [args[given[name].index] for name in names]


def _tensor_at(ctx: _Context, produced: dict[tuple[str, int], list[Tensor]], ref: TensorRef) -> Tensor:
    """Output `ref[2]` of call `ref[1]` of layer `ref[0]` (the plan has checked that call exists). An
    unsupported layer gets one output (its count is unknown), so a reference past it means: report
    the unsupported layers."""
    outputs = produced[(ref[0], ref[1])]
    if ref[2] < len(outputs):
        return outputs[ref[2]]
    if ctx.listing and _refused_producer(ctx, outputs):
        return _grown(outputs, ref[2])
    if ctx.unsupported:
        raise unsupported_error(ctx.unsupported)
    raise FormatError(f"the config reads output {ref[2]} of layer '{ref[0]}', which has {len(outputs)}",
                      layer=ref[0], hint="is the config complete?")


def _refused_producer(ctx: _Context, outputs: list[Tensor]) -> bool:
    producer = outputs[0].producer if outputs else None
    return producer is not None and any(e.name == producer.layer_name for e in ctx.unsupported)


def _grown(outputs: list[Tensor], index: int) -> Tensor:
    """Inspect: an unsupported layer has as many outputs as the model reads from it (shapes unknown)."""
    node = outputs[0].producer
    assert node is not None
    while len(node.outputs) <= index:
        node.outputs.append(Tensor(name=f"{node.name}:{len(node.outputs)}", producer=node))
    if outputs is not node.outputs:
        outputs[len(outputs):] = node.outputs[len(outputs):]
    return node.outputs[index]


def _unique(ctx: _Context, name: str) -> str:
    return ctx.graph.names.unique(name)


def _file_handler(node: Node) -> LayerHandler[Any] | None:
    """The handler of a layer read from a file: kconvert's own node kinds (`kconvert:Transpose`, ...) are
    never a file's to instantiate, so their names are unknown classes there."""
    handler = handler_for(node)
    return None if ":" in node.kind or (handler is not None and handler.internal) else handler


def _configure(ctx: _Context, node: Node, handler: LayerHandler[Any], config: dict[str, Any],
               path: tuple[LayerKey, ...]) -> bool:
    """Parse the node's spec, check it and attach its weights; False when the layer is refused (recorded)."""
    try:
        refusal = legacy_refusal(node.kind, config)
        if refusal:
            raise UnsupportedLayerError(refusal, layer=node.layer_name)
        attach_vocabulary(ctx.artifact, node, path)  # an adapted lookup's vocabulary
        parse_node(node, ctx.artifact.keras_major)
        handler.check(node)
        if inner_layers(node.kind, node.attrs):
            ctx.weights.attach_inner(node, path)
        else:
            ctx.weights.attach(node, handler.weight_names(node), path)
    except UnsupportedLayerError as err:
        ctx.unsupported.append(UnsupportedEntry(node.layer_name, node.kind, err.message))
        return False
    except WeightsError as err:
        ctx.weight_errors.append(err)  # raised after unsupported layers, which say more
    return True


def _call_layer(ctx: _Context, layer: dict[str, Any], args: list[Tensor], call_index: int, prefix: str,
                wpath: tuple[LayerKey, ...], extra: CallSite, saved: dict[str, str]) -> list[Tensor]:
    cls, name, config = layer_parts(layer)
    key = (name, saved.get(name, name))
    if cls in MODEL_CLASSES:
        sub_prefix = f"{prefix}{name}/" if call_index == 0 else f"{prefix}{name}_call{call_index}/"
        first = len(ctx.graph.nodes)
        produced = _build_model(ctx, cls, config, _named_inputs(config, extra, args), sub_prefix, wpath + (key,),
                                prefix + name)
        if isinstance(config, dict) and config.get("trainable") is False:
            for inner in ctx.graph.nodes[first:]:  # a frozen model freezes every layer in it, as in Keras
                inner.attrs["trainable"] = False
        return _mark_keras_outputs(produced, prefix, name, cls, call_index)
    node_name = _unique(ctx, prefix + name if call_index == 0 else f"{prefix}{name}_call{call_index}")
    node = make_node(cls, node_name, config, ctx.artifact.keras_major)
    path = _shared_weights(layer, name) or (key,)
    node.layer_name = prefix + "/".join(step[0] for step in path)
    node.call = extra
    node.inputs = list(args)
    handler = _file_handler(node)
    if handler is None:
        stored = ctx.weights.stored_arrays(wpath + path) if ctx.listing else None
        ctx.unsupported.append(UnsupportedEntry(node.layer_name, cls, why_unsupported(cls, layer),
                                                None if stored is None else sum(int(a.size) for a in stored)))
    # A refused layer has no spec to count its outputs by: one output keeps the walk going, and the
    # refusal is reported with every other unsupported layer.
    parsed = handler is not None and _configure(ctx, node, handler, config, wpath + path)
    count = handler.num_outputs(node) if parsed and handler is not None else 1
    node.outputs = [Tensor(name=node_name if i == 0 else f"{node_name}:{i}", producer=node) for i in range(count)]
    ctx.graph.nodes.append(node)
    return _mark_keras_outputs(node.outputs, prefix, name, cls, call_index)


def _shared_weights(layer: dict[str, Any], name: str) -> tuple[LayerKey, ...] | None:
    """`weights_at`: a layer of a model nested in this one that this entry is (a Keras Hub causal LM calls its
    backbone's token embedding again, in reverse, at the task's level): the [layer name, saved name] steps
    from this model down to it. Its weights are that layer's, under its name; None for every other entry."""
    steps = layer.get("weights_at")
    if steps is None:
        return None
    if not (isinstance(steps, list) and 0 < len(steps) <= MAX_MODEL_DEPTH and all(
            isinstance(step, list) and len(step) == 2 and all(isinstance(part, str) and part for part in step)
            for step in steps)):
        raise FormatError(f"layer '{name}' has weights_at={excerpt(steps)}, not a list of [layer name, saved "
                          "name] steps", layer=name, hint="is the config complete and undamaged?")
    return tuple((step[0], step[1]) for step in steps)


def _mark_keras_outputs(tensors: list[Tensor], prefix: str, layer: str, cls: str, call: int) -> list[Tensor]:
    """A top-level layer's outputs say which Keras values they are (the layers `model.layers` lists; a
    nested model's inner layers are not reachable there). A nested model returning a tensor that already
    holds another layer's value (its input, passed through) keeps that one."""
    if not prefix:
        for index, tensor in enumerate(tensors):
            if tensor.origin is None:
                tensor.origin = KerasOutput(layer, cls, call, index)
    return tensors


