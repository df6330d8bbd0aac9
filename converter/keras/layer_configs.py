"""Layer entries of a model config: their parts, their Keras 3 saved names, and the nodes they become."""

from __future__ import annotations

from typing import Any

from converter.errors import FormatError
from converter.ir import Node
from converter.keras.config_fields import validate_fields
from converter.keras.dialects import canonical_class, canonical_config
from converter.keras.weights import saved_names
from converter.layers.registry import LAYERS, handler_for
from converter.layers.spec import Config, ParseContext

MODEL_CLASSES = frozenset({"Sequential", "Functional"})


def layer_parts(layer: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(canonical class, name, config) of one `{"class_name", "config"}` entry."""
    if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str):
        shown = repr(layer if not isinstance(layer, dict) else layer.get("class_name"))[:60]
        raise FormatError(f"the model config holds a layer entry without a class name: {shown}",
                          hint='Keras writes each layer as {"class_name": "Dense", "config": {...}}; the file\'s '
                               "config is damaged")
    cls = op_node_kind(layer) or hub_layer_kind(layer) or canonical_class(layer["class_name"])
    raw = layer.get("config")
    # A nested Keras 1 Sequential's config is its bare list of layers.
    config: dict[str, Any] = raw if isinstance(raw, dict) else {"layers": raw} if isinstance(raw, list) else {}
    name = str(layer.get("name") or config.get("name") or cls.lower())
    return cls, name, config


def hub_layer_kind(layer: dict[str, Any]) -> str | None:
    """A Keras Hub layer is handled under its registered name (`keras_hub>RMSNormalization`): some share a
    class name with a Keras layer of other meaning (Gemma's RMSNormalization scales by 1 + scale)."""
    registered = layer.get("registered_name")
    if isinstance(registered, str) and registered.startswith("keras_hub>") and registered in LAYERS:
        return registered
    # Layers Keras Hub never registers (GemmaDecoderBlock, Gemma's RMSNormalization, ViT's and MobileNet's
    # blocks) are saved under their bare class name: only their keras_hub module tells them apart.
    module, cls = layer.get("module"), layer.get("class_name")
    if isinstance(module, str) and module.startswith("keras_hub.") and isinstance(cls, str) \
            and f"keras_hub>{cls}" in LAYERS:
        return f"keras_hub>{cls}"
    return None


# Keras 3 records a `keras.ops` call in a functional model as a node of the op's class, in these modules.
OP_MODULE_PREFIXES = ("keras.src.ops.", "keras.ops.")


def op_node_kind(layer: dict[str, Any]) -> str | None:
    """The node kind of a Keras 3 op node whose class name is also a layer's with other arguments (the op
    `Reshape(newshape)` beside the layer `Reshape(target_shape)`): `ops.<class>`, where a handler is
    registered under that name; None for every other entry."""
    module = layer.get("module")
    if not (isinstance(module, str) and module.startswith(OP_MODULE_PREFIXES) or _legacy_h5_op_node(layer)):
        return None
    kind = f"ops.{layer['class_name']}"
    return kind if kind in LAYERS else None


def _legacy_h5_op_node(layer: dict[str, Any]) -> bool:
    """Keras 3's legacy .h5 writes no `module`; an op node is told from a layer by its config (an op's holds
    its name and constructor arguments, a layer's always `trainable`) in a Keras 3 call
    (`{"args", "kwargs"}` inbound nodes)."""
    config, calls = layer.get("config"), layer.get("inbound_nodes")
    if not ("module" not in layer and isinstance(config, dict) and "trainable" not in config
            and isinstance(calls, list) and bool(calls) and all(isinstance(call, dict) for call in calls)):
        return False
    # A class that is also a layer's (Subtract, Average, Softmax): the layer is called on one list of
    # inputs (merge layers) or with a mask; the op on its operands. Where the op's config has an argument
    # the layer's never has (Reshape's `newshape`, the layer's `target_shape`), that decides.
    if layer["class_name"] not in LAYERS:
        return True
    telling = OP_ONLY_KEYS.get(layer["class_name"])
    return any(key in config for key in telling) if telling else all(_op_call(call) for call in calls)


# Config keys only the op of a class shared with a layer writes.
OP_ONLY_KEYS = {"Reshape": ("newshape",)}


def _op_call(call: dict[str, Any]) -> bool:
    args, kwargs = call.get("args"), call.get("kwargs")
    return (isinstance(args, list) and bool(args) and not isinstance(args[0], list)
            and not (isinstance(kwargs, dict) and "mask" in kwargs))


def saved_names_of(layers: list[dict[str, Any]]) -> dict[str, str]:
    """Keras 3 saved names; a Keras Hub model expanded to a Functional (keras/hub/expand.py) keeps the saved
    name of its own class (`saved_class`)."""
    return saved_names([(layer_parts(layer)[1], str(layer.get("saved_class") or layer.get("class_name")))
                        for layer in layers])


def make_node(cls: str, name: str, config: dict[str, Any], keras_major: int) -> Node:
    """A node with canonical attributes, checked by `config_fields`; wrapped layers (TimeDistributed,
    Bidirectional) become children."""
    attrs = canonical_config(cls, config, keras_major)
    if is_builtin(cls):
        validate_fields(cls, name, attrs)
    node = Node(kind=cls, name=name, attrs=attrs)
    for key in ("layer", "backward_layer"):
        inner = attrs.get(key)
        if isinstance(inner, dict) and "class_name" in inner:
            inner_cls, inner_name, inner_config = layer_parts(inner)
            node.children.append(make_node(inner_cls, inner_name, inner_config, keras_major))
    for inner in inner_layers(cls, attrs):  # a layer holding a list of layers (keras.layers.Pipeline)
        inner_cls, inner_name, inner_config = layer_parts(inner)
        node.children.append(make_node(inner_cls, inner_name, inner_config, keras_major))
    return node


def inner_layers(cls: str, attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer configs of a non-model layer whose config holds a `layers` list (Pipeline)."""
    inner = attrs.get("layers")
    if cls in MODEL_CLASSES or not isinstance(inner, list) or not inner:
        return []
    return inner if all(isinstance(e, dict) and "class_name" in e for e in inner) else []


def is_builtin(cls: str) -> bool:
    """A Keras class kconvert converts itself, whose arguments it reads. A custom (or user-registered)
    class's arguments mean what its author says; an inference-time identity's (Dropout, the Random*
    augmentations, whose `scale` or `factor` mean something else in each) are never read."""
    handler = LAYERS.get(cls)
    return handler is not None and type(handler).__module__.startswith("converter.layers.") \
        and not handler.inference_identity


def parse_node(node: Node, keras_major: int) -> None:
    """Give the node (and its wrapped children) the typed spec its handler parses from the config:
    once, here at the boundary. Raises UnsupportedLayerError for values the family cannot convert."""
    for child in node.children:
        parse_node(child, keras_major)
    handler = handler_for(node)
    if handler is not None:
        node.spec = handler.parse(Config(node.attrs, ParseContext(node.kind, node.layer_name, keras_major)))
