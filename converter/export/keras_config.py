"""One LayerGraph node -> its Keras 3 layer entry (`module`, `class_name`, `config`, `registered_name`).

Node attributes are the canonical (Keras 3) spelling already; what remains is to keep only the
arguments the Keras 3 class accepts (keras_args), rebuild initializers/regularizers/constraints
(keras_objects), rebuild wrapped layers from the node's children, and map the few Keras 2 classes
Keras 3 dropped onto the Keras 3 layer that computes the same function at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.export.keras_args import class_fact, keras3_args, op_args, op_module
from converter.export.keras_objects import keras3_object, object_kind
from converter.ir import Node
from converter.layers.quantized import quantization_mode
from converter.layers.registry import handler_for
from converter.layers.windows import KERAS_FORMAT

LAYER_MODULE = "keras.layers"
HARD_SIGMOID = "hard_sigmoid"
# Call arguments only Keras 1/2 passed; Keras 3 layers do not take them.
_STALE_CALL_KWARGS = frozenset({"positional_constants"})


@dataclass
class Notes:
    """What the writer changed or left out, per layer, for the report."""

    lines: list[str] = field(default_factory=list)

    def add(self, layer: str, text: str) -> None:
        self.lines.append(f"{layer}: {text}")


def serialized(class_name: str, config: dict[str, Any], module: str = LAYER_MODULE,
               registered_name: str | None = None) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": registered_name}


def keras3_class(node: Node) -> tuple[str, dict[str, Any]]:
    """The Keras 3 class and arguments computing what the node computes at inference."""
    attrs = dict(node.attrs)
    if node.kind == "ThresholdedReLU":
        # x if x > theta else 0; ReLU(threshold=theta) differs only at x == theta exactly.
        return "ReLU", {"name": attrs.get("name"), "threshold": float(node.attr("theta", 1.0))}
    if node.kind == "BatchNormalization" and attrs.get("mode") == 2:
        # Keras 1's batch statistics at inference: no Keras 3 argument says so, and dropping `mode` would
        # write a layer normalising with the unused running statistics.
        raise UnsupportedLayerError(
            f"layer '{node.layer_name}' (BatchNormalization) uses Keras 1's mode=2 (the batch's own statistics "
            "at inference), which no Keras 3 layer computes", layer=node.layer_name,
            hint="convert it to ONNX instead, or rebuild the layer without mode=2")
    if node.kind in ("RandomHeight", "RandomWidth"):
        return "Identity", {"name": attrs.get("name")}  # inference-time identities that Keras 3 removed
    return node.kind, attrs


def layer_entry(node: Node, name: str, source_major: int, notes: Notes) -> dict[str, Any]:
    """The serialised layer (without `name`/`inbound_nodes`); raises UnsupportedLayerError."""
    module = op_module(node.kind)
    if module is not None:
        own = op_args(node.kind)
        return serialized(node.kind, {"name": name, **{k: v for k, v in node.attrs.items() if k in own}},
                          module, node.kind)
    class_name, attrs = keras3_class(node)
    accepted = keras3_args(class_name)
    if node.kind == "Lambda":
        raise UnsupportedLayerError(
            f"layer '{node.layer_name}' (Lambda) holds Python code, which kconvert never writes into an archive",
            layer=node.layer_name, hint="replace the Lambda with built-in layers before upgrading")
    mode = quantization_mode(node.attrs.get("dtype"))
    if mode is not None:
        # The writer re-serialises float weights; a quantized layer's int8 values and scales it would write wrong.
        raise UnsupportedLayerError(
            f"layer '{node.layer_name}' ({node.kind}) is quantized (mode '{mode}'), which the Keras 3 writer "
            "does not write", layer=node.layer_name,
            hint="a quantized layer comes from Keras 3 already: keep using the source file")
    if accepted is None:
        raise UnsupportedLayerError(
            f"layer '{node.layer_name}' ({node.kind}) has no Keras 3 built-in equivalent",
            layer=node.layer_name, hint="a .keras archive can hold only Keras 3 built-in layers")
    _check_activations(node, source_major)
    config: dict[str, Any] = {"name": name}
    dropped = []
    for key, value in attrs.items():
        if key in ("name", "call_kwargs", "tensor_kwargs", "layer", "backward_layer"):
            continue
        if key not in accepted:
            dropped.append(key)
            continue
        expressible, value = _value(class_name, key, value)
        if not expressible:
            notes.add(node.layer_name, f"left out {key}={attrs[key]!r} (Keras 3 has no such object)")
            continue
        config[key] = value
    config.update(_wrapped(node, source_major, notes))
    if any(not _benign(class_name, k, attrs[k]) for k in dropped):
        notes.add(node.layer_name, "left out Keras 1/2-only argument(s) " + ", ".join(sorted(dropped)))
    return serialized(class_name, config)


def _benign(kind: str, key: str, value: Any) -> bool:
    """Arguments whose absence changes nothing: input shapes live on the InputLayer (or are the
    build shapes Keras 3 takes from the call), the rest chose an implementation or a training-only
    behaviour Keras 3 decides itself."""
    if key == "groups" and value == 1:  # tf.keras wrote groups=1 on DepthwiseConv and Conv*Transpose
        return True
    if kind.startswith("SeparableConv") and key.startswith("kernel_"):  # tf.keras wrote unused kernel_*
        return True
    return key in ("trainable", "input_dim", "input_length", "input_shape", "batch_input_shape", "batch_size",
                   "implementation", "time_major", "fused", "virtual_batch_size", "adjustment", "weights",
                   "autocast", "build_config", "module", "registered_name", "shared_object_id", KERAS_FORMAT,
                   "query_shape", "key_shape", "value_shape")


def _value(class_name: str, key: str, value: Any) -> tuple[bool, Any]:
    kind = object_kind(key)
    if kind is not None:
        return keras3_object(kind, value)
    if class_name == "BatchNormalization" and key == "axis" and isinstance(value, list) and len(value) == 1:
        return True, int(value[0])  # tf.keras wrote the axis as a one-element list
    if key == "dtype" and not (isinstance(value, str) and "float" in value):  # float32, mixed_float16, ...
        # Keras 1's `input_dtype` (now `dtype`) was the input's dtype, which lives on the InputLayer;
        # a layer computes in floats (an int32 Embedding could not even initialise its weights).
        return True, None
    return True, value


def _wrapped(node: Node, source_major: int, notes: Notes) -> dict[str, Any]:
    """TimeDistributed `layer`, Bidirectional `layer` / `backward_layer`, from the node's children."""
    if node.kind not in ("TimeDistributed", "Bidirectional") or not node.children:
        return {}
    keys = ("layer", "backward_layer")[: len(node.children)]
    out: dict[str, Any] = {}
    for key, child in zip(keys, node.children):
        name = str(child.attrs.get("name") or child.name)
        out[key] = layer_entry(child, name, source_major, notes)
    return out


def _check_activations(node: Node, source_major: int) -> None:
    """A Keras 2 hard_sigmoid is expressible only where it follows an affine map of the layer's weights."""
    if source_major >= 3:
        return
    uses = [k for k in ("activation", "recurrent_activation") if node.attrs.get(k) == HARD_SIGMOID]
    if not uses:
        return
    handler = handler_for(node)
    affine = () if handler is None else class_fact(handler.affine_activations, node.kind, ())
    fits = all(use in affine for use in uses)
    if not fits:
        raise UnsupportedLayerError(
            f"layer '{node.layer_name}' ({node.kind}) uses the Keras 2 hard_sigmoid (clip(0.2 x + 0.5)) as "
            f"{uses[0]}, which no Keras 3 activation computes", layer=node.layer_name,
            hint="Keras 3's hard_sigmoid is clip(x / 6 + 0.5); convert to ONNX instead")


def inbound_kwargs(node: Node) -> dict[str, Any]:
    """Plain (non-tensor) call arguments worth keeping."""
    kwargs = dict(node.call.kwargs)
    return {k: v for k, v in kwargs.items() if k not in _STALE_CALL_KWARGS}
