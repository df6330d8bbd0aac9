"""Shape semantics: every way Keras lets a model state its input shape -> one canonical shape.

Rule: `batch_shape` / `batch_input_shape` include the batch; `shape` / `input_shape` exclude it
(the batch is `batch_size` or symbolic); `input_dim` (+ `input_length`) is the Keras 1/2 shorthand,
whose meaning depends on the consuming layer: features for Dense, (timesteps, features) for
recurrent and 1-D convolution layers, and for Embedding `input_dim` is the vocabulary, not a shape.
Unknown dims become named symbolic dims: the batch is "batch", others `<input>_d<axis>`.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError
from converter.ir import Graph, Shape
from converter.ir.shape import BATCH

SEQUENCE_CONSUMERS = frozenset({
    "SimpleRNN", "GRU", "LSTM", "Conv1D", "Bidirectional", "MaxPooling1D", "AveragePooling1D",
    "TimeDistributed", "ConvLSTM1D",
})


def run(graph: Graph) -> Graph:
    for tensor in graph.inputs:
        spec = graph.input_specs.get(tensor.name, {})
        tensor.shape = _symbolic(canonical_input_shape(tensor.name, spec), tensor.name)
    return graph


def canonical_input_shape(name: str, spec: dict[str, Any]) -> tuple[int | None, ...]:
    consumer = str(spec.get("consumer", ""))
    for key in ("batch_shape", "batch_input_shape"):
        if spec.get(key) is not None:
            return _dims(spec[key], name, key)
    batch = spec.get("batch_size")
    for key in ("shape", "input_shape"):
        if spec.get(key) is not None:
            return (batch, *_dims(spec[key], name, key))
    length = spec.get("input_length")
    if consumer == "Embedding":
        return (batch, length)
    if spec.get("input_dim") is not None:
        dim = int(spec["input_dim"])
        return (batch, length, dim) if length is not None or consumer in SEQUENCE_CONSUMERS else (batch, dim)
    raise ShapeError(
        f"model input '{name}' has no shape: none of batch_shape, batch_input_shape, input_shape, shape "
        "or input_dim is given",
        layer=name,
        hint="give the first layer input_shape=(...) (without the batch), or start with keras.Input(shape=...)",
    )


def _dims(raw: Any, name: str, key: str) -> tuple[int | None, ...]:
    values = [raw] if isinstance(raw, int) else list(raw)
    dims: list[int | None] = []
    for value in values:
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ShapeError(f"model input '{name}' has {key}={raw!r}: dims must be positive ints or None",
                             layer=name, hint=f"fix {key} in the model config")
        dims.append(value)
    return tuple(dims)


def _symbolic(shape: tuple[int | None, ...], name: str) -> Shape:
    return tuple(
        (BATCH if axis == 0 else f"{name}_d{axis}") if dim is None else dim for axis, dim in enumerate(shape)
    )
