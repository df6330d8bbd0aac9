"""Shape semantics: every way Keras lets a model state its input shape -> one canonical shape.

Rule: `batch_shape` / `batch_input_shape` include the batch; `shape` / `input_shape` exclude it
(the batch is `batch_size` or symbolic); `input_dim` (+ `input_length`) is the Keras 1/2 shorthand,
whose meaning depends on the consuming layer: features for Dense, (timesteps, features) for
recurrent and 1-D convolution layers, and for Embedding `input_dim` is the vocabulary, not a shape.
Unknown dims become named symbolic dims: the batch is "batch", others `<input>_d<axis>`.

The spec comes from the file, so every value is checked here, where it is read: dims are ints
(integral floats such as 3.0 pass, as ints; bools, NaN and strings do not) or None; a dim is at least
1 (Keras builds a model on a 0-sized input, but it computes nothing, and the arithmetic of every
later shape rule assumes dims >= 1); a tensor holds at most MAX_ELEMENTS static elements and has at
most MAX_RANK axes, so no later step allocates or loops from an absurd declaration.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError
from converter.ir import Graph, Shape
from converter.ir.shape import BATCH
from converter.layers.registry import LAYERS

# TensorFlow's own kernels index with int32 in many places: no Keras model holds a larger tensor.
MAX_ELEMENTS = 2**31 - 1
# Keras sets no limit, but no real model comes near; a long dims list is damage.
MAX_RANK = 16


def run(graph: Graph) -> Graph:
    for tensor in graph.inputs:
        spec = graph.input_specs.get(tensor.name, {})
        tensor.shape = _symbolic(canonical_input_shape(tensor.name, spec), tensor.name)
    return graph


def canonical_input_shape(name: str, spec: dict[str, Any]) -> tuple[int | None, ...]:
    shape = _stated_shape(name, spec)
    _check_size(name, shape)
    return shape


def _stated_shape(name: str, spec: dict[str, Any]) -> tuple[int | None, ...]:
    consumer = LAYERS.get(str(spec.get("consumer", "")))  # the first layer reading the input
    for key in ("batch_shape", "batch_input_shape"):
        if spec.get(key) is not None:
            dims = _dims(spec[key], name, key)
            if not dims:
                raise ShapeError(f"model input '{name}' has {key}=[]: it must include the batch dim", layer=name,
                                 hint=f"fix {key} in the model config, e.g. [null, 3]")
            return dims
    batch = _dim(spec.get("batch_size"), name, "batch_size")
    for key in ("shape", "input_shape"):
        if spec.get(key) is not None:
            return (batch, *_dims(spec[key], name, key))
    length = _dim(spec.get("input_length"), name, "input_length")
    if consumer is not None and consumer.takes_token_ids:
        return (batch, length)
    dim = _dim(spec.get("input_dim"), name, "input_dim")
    if dim is not None:
        return (batch, length, dim) if length is not None or (consumer is not None and consumer.consumes_sequence) \
            else (batch, dim)
    raise ShapeError(
        f"model input '{name}' has no shape: none of batch_shape, batch_input_shape, input_shape, shape "
        "or input_dim is given",
        layer=name,
        hint="give the first layer input_shape=(...) (without the batch), or start with keras.Input(shape=...)",
    )


def _shape_list(raw: Any) -> Any:
    """tf.keras serialises a TensorShape as {"class_name": "TensorShape", "items": [...]} and Keras 3 a
    tuple as {"class_name": "__tuple__", "config": {"value": [...]}}; a bare int is a 1-D shape."""
    if isinstance(raw, dict) and raw.get("class_name") == "TensorShape":
        return raw.get("items")
    if isinstance(raw, dict) and raw.get("class_name") == "__tuple__" and isinstance(raw.get("config"), dict):
        return raw["config"].get("value")
    return [raw] if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw


def _dims(raw: Any, name: str, key: str) -> tuple[int | None, ...]:
    values = _shape_list(raw)
    if not isinstance(values, list):
        raise ShapeError(f"model input '{name}' has {key}={_excerpt(raw)}: a shape is a list of dims",
                         layer=name, hint=f"fix {key} in the model config")
    if len(values) > MAX_RANK:
        raise ShapeError(f"model input '{name}' has {key} of rank {len(values)}: kconvert reads at most "
                         f"{MAX_RANK} dims", layer=name, hint=f"fix {key} in the model config")
    return tuple(_dim(value, name, key, raw) for value in values)


def _dim(value: Any, name: str, key: str, whole: Any = None) -> int | None:
    """One dim (or batch_size, input_dim, input_length): an int >= 1, or None for unknown."""
    if value is None:
        return None
    integral = isinstance(value, float) and value.is_integer()
    if ((isinstance(value, int) and not isinstance(value, bool)) or integral) and 1 <= value <= MAX_ELEMENTS:
        return int(value)
    shown = _excerpt(value if whole is None else whole)
    raise ShapeError(f"model input '{name}' has {key}={shown}: dims must be ints from 1 to {MAX_ELEMENTS}, "
                     "or None for unknown", layer=name, hint=f"fix {key} in the model config")


def _check_size(name: str, shape: tuple[int | None, ...]) -> None:
    total = 1
    for dim in shape:
        total *= dim or 1
    if total > MAX_ELEMENTS:
        raise ShapeError(f"model input '{name}' is declared with shape {shape}: {total} elements, more than the "
                         f"{MAX_ELEMENTS} a tensor may hold", layer=name,
                         hint="fix the input shape in the model config")


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _symbolic(shape: tuple[int | None, ...], name: str) -> Shape:
    return tuple(
        (BATCH if axis == 0 else f"{name}_d{axis}") if dim is None else dim for axis, dim in enumerate(shape)
    )
