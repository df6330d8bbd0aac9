"""Keras' spellings of a layer call in a Functional config, read into checked tensor references.

- `inbound_nodes` entries: Keras 1/2 nested lists `[[name, node, tensor, kwargs], ...]` (tensor kwargs
  such as MHA's `value` written as `[name, node, tensor]` triples), tf.keras bare entries
  `[name, node, tensor, kwargs]`, or Keras 3 / TF 2.18 dicts `{"args": [...], "kwargs": {...}}` holding
  `__keras_tensor__` objects;
- `input_layers` / `output_layers`: a list of triples, one bare triple, or a dict of them.

Every reference is checked where it is read: a layer name (str) and two indices (ints >= 0; Keras
accepts integral floats such as 2.0). The walks over nested values are iterative: a file's nesting
depth never becomes Python recursion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converter.errors import FormatError

# (layer name, call index of that layer, output index of that call)
TensorRef = tuple[str, int, int]

# No model has 2**31 calls of one layer or outputs of one call; larger indices are damage.
MAX_INDEX = 2**31 - 1

_REF_HINT = "a reference is [layer name, call index, output index]; is the config complete and undamaged?"


@dataclass
class Call:
    """One call of a layer: its tensor arguments in order, plain kwargs, and tensor kwargs -> ref positions."""

    refs: list[TensorRef]
    kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_kwargs: dict[str, list[int]] = field(default_factory=dict)


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
                          layer=layer, hint=_REF_HINT)
    return parsed


def _legacy_call(call: Any, layer: str) -> Call:
    # tf.keras writes a TFOpLambda call on one tensor as a bare entry, `[name, node, tensor, kwargs]`.
    entries = [call] if isinstance(call, list) and call and isinstance(call[0], str) else call
    if not isinstance(entries, list):
        raise FormatError(f"inbound_nodes of layer '{layer}' holds the call {excerpt(call)}, not a list of "
                          "references or an {args, kwargs} object", layer=layer, hint=_REF_HINT)
    refs, kwargs = [], {}
    for entry in entries:
        refs.append(tensor_ref(entry, layer, "inbound_nodes"))
        extra = entry[3] if len(entry) > 3 else None
        if len(entry) > 4 or not isinstance(extra, (dict, type(None))):
            raise FormatError(f"inbound_nodes of layer '{layer}' holds {excerpt(entry)}: the 4th entry of a "
                              "reference must be a kwargs object", layer=layer, hint=_REF_HINT)
        kwargs.update(extra or {})
    # Keras 2 writes tensors passed as kwargs (MHA `value`, `attention_mask`) as [layer, node, index].
    tensor_kwargs = {}
    for key, value in list(kwargs.items()):
        found = _legacy_tensors(value, layer)
        if found:
            tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
            refs.extend(found)
            del kwargs[key]
    return Call(refs, kwargs, tensor_kwargs)


def _keras3_call(call: dict[str, Any], layer: str) -> Call:
    args, raw_kwargs = call.get("args", []), call.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(raw_kwargs, dict):
        raise FormatError(f"inbound_nodes of layer '{layer}' holds a call whose args/kwargs are "
                          f"{excerpt(args)} / {excerpt(raw_kwargs)}, not a list and an object",
                          layer=layer, hint=_REF_HINT)
    refs = keras_tensors(args, layer)
    kwargs: dict[str, Any] = {}
    tensor_kwargs: dict[str, list[int]] = {}
    # Keras 3 op nodes take constants positionally (`ops.not_equal(x, 0)` of a mask): keep them.
    constants = [a for a in args if not keras_tensors(a, layer)]
    if constants:
        kwargs["positional_constants"] = constants
    for key, value in raw_kwargs.items():
        found = keras_tensors(value, layer)
        if found:
            tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
            refs.extend(found)
        else:
            kwargs[key] = value
    return Call(refs, kwargs, tensor_kwargs)


def _legacy_tensors(value: Any, layer: str) -> list[TensorRef]:
    """A Keras 2 kwarg value that is one [name, node, index] triple or a list of them (None entries skipped)."""
    if _is_triple(value):
        return [tensor_ref(value, layer, "inbound_nodes")]
    if isinstance(value, list) and any(_is_triple(v) for v in value) and all(v is None or _is_triple(v) for v in value):
        return [tensor_ref(v, layer, "inbound_nodes") for v in value if v is not None]
    return []


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
