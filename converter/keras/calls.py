"""Keras' spellings of a layer call in a Functional config, read into checked tensor references.

- `inbound_nodes` entries: Keras 1/2 nested lists `[[name, node, tensor, kwargs], ...]` (tensor kwargs
  such as MHA's `value` written as `[name, node, tensor]` triples), tf.keras bare entries
  `[name, node, tensor, kwargs]`, or Keras 3 / TF 2.18 dicts `{"args": [...], "kwargs": {...}}` holding
  `__keras_tensor__` objects;
- `input_layers` / `output_layers`: a list of triples, one bare triple, or a dict of them.

Every reference is checked where it is read: a layer name (str) and two indices (ints >= 0; Keras
accepts integral floats such as 2.0). The walks that only collect references are iterative; the ones
that rebuild a call's arguments recurse, over a config whose depth `structure.check_config_tree` bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.errors import FormatError
from converter.ir.spec import TensorArg

# (layer name, call index of that layer, output index of that call)
TensorRef = tuple[str, int, int]

# No model has 2**31 calls of one layer or outputs of one call; larger indices are damage.
MAX_INDEX = 2**31 - 1

_REF_HINT = "a reference is [layer name, call index, output index]; is the config complete and undamaged?"


@dataclass
class Call:
    """One call of a layer: its tensor arguments in order, plain kwargs, and tensor kwargs -> ref positions;
    `args` / `arg_kwargs` are the arguments as written, tensors replaced by `TensorArg(ref position)`."""

    refs: list[TensorRef]
    kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_kwargs: dict[str, list[int]] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    arg_kwargs: dict[str, Any] = field(default_factory=dict)


def _index(value: Any, what: str, layer: str, field_name: str) -> int:
    integral = isinstance(value, float) and value.is_integer()
    if (not isinstance(value, int) or isinstance(value, bool)) and not integral:
        raise FormatError(f"{field_name} of layer '{layer}' holds {what} {value!r}, not an integer",
                          layer=layer, hint=_REF_HINT)
    if not 0 <= value <= MAX_INDEX:
        raise FormatError(f"{field_name} of layer '{layer}' holds {what} {value!r}, outside 0..{MAX_INDEX}",
                          layer=layer, hint=_REF_HINT)
    return int(value)


def tensor_ref(raw: Any, layer: str, field_name: str) -> TensorRef:
    """One `[name, call index, output index]` reference (Keras 1/2 add a kwargs dict as a 4th entry)."""
    if not isinstance(raw, list) or len(raw) < 3 or not isinstance(raw[0], str) or not raw[0]:
        raise FormatError(f"{field_name} of layer '{layer}' holds {excerpt(raw)}, not a [layer, call, output] "
                          "reference", layer=layer, hint=_REF_HINT)
    return raw[0], _index(raw[1], "call index", layer, field_name), _index(raw[2], "output index", layer, field_name)


def model_refs(raw: Any, model: str, field_name: str) -> list[TensorRef]:
    """`input_layers`/`output_layers`: a list of [name, node, tensor], one bare triple, or a dict of them."""
    out: list[TensorRef] = []
    stack = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and item and isinstance(item[0], str):
            if len(item) != 3:
                raise FormatError(f"{field_name} of model '{model}' holds {excerpt(item)}, not a [layer, call, "
                                  "output] triple", layer=model, hint=_REF_HINT)
            out.append(tensor_ref(item, model, field_name))
        elif isinstance(item, (list, dict)):
            values = list(item.values()) if isinstance(item, dict) else item
            stack.extend(reversed(values))
        else:
            raise FormatError(f"{field_name} of model '{model}' holds {excerpt(item)}, not a [layer, call, output] "
                              "reference", layer=model, hint=_REF_HINT)
    return out


def inbound_calls(raw: Any, layer: str) -> list[Call]:
    """A layer's `inbound_nodes` (missing or null: the layer is never called)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise FormatError(f"inbound_nodes of layer '{layer}' is {excerpt(raw)}, not a list of calls",
                          layer=layer, hint=_REF_HINT)
    return [parse_call(call, layer) for call in raw]


def parse_call(call: Any, layer: str) -> Call:
    """One entry of `inbound_nodes` -> its tensor refs in order, plain kwargs, and tensor kwargs."""
    parsed = _keras3_call(call, layer) if isinstance(call, dict) else _legacy_call(call, layer)
    if not parsed.refs:  # every layer call of a functional graph reads at least one tensor
        raise FormatError(f"inbound_nodes of layer '{layer}' holds a call without input tensors",
                          layer=layer, hint=_REF_HINT + "; tf.keras does not save tensors passed to a TensorFlow "
                          "function as *args (tf.einsum's operands), so such a model cannot be read back from its "
                          "file: save it with Keras 3 (keras.ops.einsum) or replace the call with a layer")
    return parsed


def _legacy_call(call: Any, layer: str) -> Call:
    # tf.keras writes a TFOpLambda call on one tensor as a bare entry, `[name, node, tensor, kwargs]`, and a
    # constant first argument (`1.0 - x`) as `["_CONSTANT_VALUE", -1, value, kwargs]`.
    bare = isinstance(call, list) and bool(call) and isinstance(call[0], str)
    entries = [call] if bare else call
    if not isinstance(entries, list):
        raise FormatError(f"inbound_nodes of layer '{layer}' holds the call {excerpt(call)}, not a list of "
                          "references or an {args, kwargs} object", layer=layer, hint=_REF_HINT)
    refs: list[TensorRef] = []
    first: list[Any] = []
    kwargs: dict[str, Any] = {}
    for entry in entries:
        if _is_constant_entry(entry):
            first.append(entry[2])
        else:
            first.append(TensorArg(len(refs)))
            refs.append(tensor_ref(entry, layer, "inbound_nodes"))
        kwargs.update(_entry_kwargs(entry, layer))
    # Keras 2 writes tensors passed as kwargs (MHA `value`, `attention_mask`, tf.math.subtract's `y`) as
    # [layer, node, index], possibly inside lists and objects (a slice bound).
    tensor_kwargs, arg_kwargs = {}, {}
    for key, value in list(kwargs.items()):
        found: list[TensorRef] = []
        arg_kwargs[key] = _replace_legacy_tensors(value, layer, len(refs), found)
        if found:
            tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
            refs.extend(found)
            del kwargs[key]
    args = [first[0]] if bare else [first]
    return Call(refs, kwargs, tensor_kwargs, args, arg_kwargs)


def _is_constant_entry(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) in (3, 4) and entry[0] == "_CONSTANT_VALUE" and entry[1] == -1


def _entry_kwargs(entry: Any, layer: str) -> dict[str, Any]:
    extra = entry[3] if isinstance(entry, list) and len(entry) > 3 else None
    if not isinstance(entry, list) or len(entry) > 4 or not isinstance(extra, (dict, type(None))):
        raise FormatError(f"inbound_nodes of layer '{layer}' holds {excerpt(entry)}: the 4th entry of a "
                          "reference must be a kwargs object", layer=layer, hint=_REF_HINT)
    return extra or {}


def _keras3_call(call: dict[str, Any], layer: str) -> Call:
    args, raw_kwargs = call.get("args", []), call.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(raw_kwargs, dict):
        raise FormatError(f"inbound_nodes of layer '{layer}' holds a call whose args/kwargs are "
                          f"{excerpt(args)} / {excerpt(raw_kwargs)}, not a list and an object",
                          layer=layer, hint=_REF_HINT)
    refs: list[TensorRef] = []
    written_args = _replace_keras_tensors(args, layer, refs)
    kwargs: dict[str, Any] = {}
    tensor_kwargs: dict[str, list[int]] = {}
    # Keras 3 op nodes take constants positionally (`ops.not_equal(x, 0)` of a mask): keep them.
    constants = [a for a in args if not keras_tensors(a, layer)]
    if constants:
        kwargs["positional_constants"] = constants
    arg_kwargs: dict[str, Any] = {}
    for key, value in raw_kwargs.items():
        before = len(refs)
        arg_kwargs[key] = _replace_keras_tensors(value, layer, refs)
        if len(refs) > before:
            tensor_kwargs[key] = list(range(before, len(refs)))
        else:
            kwargs[key] = value
    return Call(refs, kwargs, tensor_kwargs, written_args, arg_kwargs)


# The replacing walks recurse: the config's nesting depth is bounded before any walk (structure.py).
def _replace_legacy_tensors(value: Any, layer: str, start: int, found: list[TensorRef]) -> Any:
    """`value` with each [name, node, index] triple replaced by a TensorArg (positions from `start`)."""
    if _is_triple(value):
        found.append(tensor_ref(value, layer, "inbound_nodes"))
        return TensorArg(start + len(found) - 1)
    if isinstance(value, list):
        return [_replace_legacy_tensors(v, layer, start, found) for v in value]
    if isinstance(value, dict):
        return {k: _replace_legacy_tensors(v, layer, start, found) for k, v in value.items()}
    return value


def _replace_keras_tensors(value: Any, layer: str, refs: list[TensorRef]) -> Any:
    """`value` with each `__keras_tensor__` replaced by a TensorArg at the position it is appended to `refs`."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        config = value.get("config")
        history = config.get("keras_history") if isinstance(config, dict) else None
        refs.append(tensor_ref(history, layer, "inbound_nodes keras_history"))
        return TensorArg(len(refs) - 1)
    if isinstance(value, list):
        return [_replace_keras_tensors(v, layer, refs) for v in value]
    if isinstance(value, dict):
        return {k: _replace_keras_tensors(v, layer, refs) for k, v in value.items()}
    return value


def _is_triple(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:]))


def keras_tensors(value: Any, layer: str) -> list[TensorRef]:
    """Every `__keras_tensor__` in a (nested) call argument, in order."""
    out: list[TensorRef] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict) and item.get("class_name") == "__keras_tensor__":
            config = item.get("config")
            history = config.get("keras_history") if isinstance(config, dict) else None
            out.append(tensor_ref(history, layer, "inbound_nodes keras_history"))
        elif isinstance(item, (dict, list)):
            stack.extend(reversed(list(item.values()) if isinstance(item, dict) else item))
    return out


def excerpt(value: Any) -> str:
    """A value for an error message, cut short (a damaged file may hold megabytes in one place)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
