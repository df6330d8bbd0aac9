"""Keras' spellings of a layer call in a Functional config, read into tensor references.

- `inbound_nodes` entries: Keras 1/2 nested lists `[[name, node, tensor, kwargs], ...]` (tensor kwargs
  such as MHA's `value` written as `[name, node, tensor]` triples), or Keras 3 / TF 2.18 dicts
  `{"args": [...], "kwargs": {...}}` holding `__keras_tensor__` objects;
- `input_layers` / `output_layers`: a list of triples, one bare triple, or a dict of them.
"""

from __future__ import annotations

from typing import Any

# (layer name, call index of that layer, output index of that call)
TensorRef = tuple[str, int, int]


def model_refs(raw: Any) -> list[TensorRef]:
    """`input_layers`/`output_layers`: a list of [name, node, tensor] or one bare triple."""
    if isinstance(raw, dict):
        return [r for v in raw.values() for r in model_refs(v)]
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return [(raw[0], int(raw[1]), int(raw[2]))]
    return [r for item in raw or [] for r in model_refs(item)]


def parse_call(call: Any) -> tuple[list[TensorRef], dict[str, Any], dict[str, list[int]]]:
    """One entry of `inbound_nodes` -> (tensor refs in order, plain kwargs, tensor kwargs -> ref positions)."""
    if isinstance(call, dict) and ("args" in call or "kwargs" in call):
        refs = _keras_tensors(call.get("args", []))
        kwargs, tensor_kwargs = {}, {}
        # Keras 3 op nodes take constants positionally (`ops.not_equal(x, 0)` of a mask): keep them.
        args = call.get("args")
        constants = [a for a in args if not _keras_tensors(a)] if isinstance(args, list) else []
        if constants:
            kwargs["positional_constants"] = constants
        for key, value in (call.get("kwargs") or {}).items():
            found = _keras_tensors(value)
            if found:
                tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
                refs.extend(found)
            else:
                kwargs[key] = value
        return refs, kwargs, tensor_kwargs
    refs, kwargs, legacy_tensor_kwargs = [], {}, {}
    # tf.keras writes a TFOpLambda call on one tensor as a bare entry, `[name, node, tensor, kwargs]`.
    entries = [call] if isinstance(call, list) and call and isinstance(call[0], str) else call or []
    for entry in entries:
        refs.append((str(entry[0]), int(entry[1]), int(entry[2])))
        if len(entry) > 3 and isinstance(entry[3], dict):
            kwargs.update(entry[3])
    # Keras 2 writes tensors passed as kwargs (MHA `value`, `attention_mask`) as [layer, node, index].
    for key, value in list(kwargs.items()):
        found = _legacy_tensors(value)
        if found:
            legacy_tensor_kwargs[key] = list(range(len(refs), len(refs) + len(found)))
            refs.extend(found)
            del kwargs[key]
    return refs, kwargs, legacy_tensor_kwargs


def _legacy_tensors(value: Any) -> list[TensorRef]:
    """A Keras 2 kwarg value that is one [name, node, index] triple or a list of them (None entries skipped)."""
    if _is_triple(value):
        return [(str(value[0]), int(value[1]), int(value[2]))]
    if isinstance(value, list) and any(_is_triple(v) for v in value) and all(v is None or _is_triple(v) for v in value):
        return [(str(v[0]), int(v[1]), int(v[2])) for v in value if v is not None]
    return []


def _is_triple(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:]))


def _keras_tensors(value: Any) -> list[TensorRef]:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            return [(str(history[0]), int(history[1]), int(history[2]))]
        return [r for v in value.values() for r in _keras_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _keras_tensors(v)]
    return []
