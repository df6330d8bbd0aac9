"""Generated inputs for --check: the right dtype, range and size per input.

- Inputs that feed an Embedding get integer ids below its `input_dim`; inputs that feed a StringLookup
  or IntegerLookup get tokens of its vocabulary and one token outside it; float inputs get N(0, 1).
- Unknown dimensions (`Input(shape=(None, None, 3))`) all take one size: the first of UNKNOWN_DIM_SIZES
  at which the converted model runs and gives non-empty outputs (`find_unknown_dim_size`), so a conv net
  whose kernels and strides need 13 pixels is checked at 16, a sequence model at 4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from converter.errors import UsageError
from converter.ir import Graph, Node, Tensor
from converter.ir.shape import BATCH, format_shape
from converter.layers.registry import handler_for

NUMPY_DTYPES: dict[str, Any] = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                                "int32": np.int32, "int64": np.int64, "int8": np.int8, "uint8": np.uint8,
                                "bool": np.bool_, "string": object}
UNKNOWN_DIM_SIZES = (4, 8, 16, 32, 64, 128, 256)
DEFAULT_UNKNOWN_DIM = UNKNOWN_DIM_SIZES[0]
OUT_OF_VOCABULARY = "[kconvert-out-of-vocabulary]"


def generate_inputs(graph: Graph, batch: int, seed: int = 0,
                    size: int = DEFAULT_UNKNOWN_DIM) -> dict[str, np.ndarray]:
    """One array per graph input; `size` for every unknown non-batch dimension."""
    rng = np.random.default_rng(seed)
    return {t.name: _one_input(graph, t, batch, size, rng) for t in graph.inputs}


def has_unknown_dims(graph: Graph) -> bool:
    return any(not isinstance(d, int) and d != BATCH for t in graph.inputs for d in (t.shape or ())[1:])


def find_unknown_dim_size(graph: Graph, runs: Callable[[dict[str, np.ndarray]], str | None]) -> int:
    """The first size in UNKNOWN_DIM_SIZES for the unknown dimensions at which `runs(batch-1 inputs)`
    reports no error (it returns the error's text, or None)."""
    errors = []
    for size in UNKNOWN_DIM_SIZES:
        error = runs(generate_inputs(graph, 1, seed=0, size=size))
        if error is None:
            return size
        errors.append(error)
    shapes = ", ".join(f"'{t.name}' {format_shape(t.shape or ())}" for t in graph.inputs)
    raise UsageError(f"the model's inputs have unknown dimensions ({shapes}), and the converted model runs at "
                     f"none of the sizes tried for them ({', '.join(map(str, UNKNOWN_DIM_SIZES))}); "
                     f"at {UNKNOWN_DIM_SIZES[-1]}: {errors[-1][:300]}",
                     hint="check against stored Keras inputs and outputs instead: --reference FILE.npz")


def _concrete_shape(tensor: Tensor, batch: int, size: int) -> tuple[int, ...]:
    shape = tensor.shape or ()
    return tuple(batch if d == BATCH else (d if isinstance(d, int) else size) for d in shape)


def _reached(graph: Graph, tensor: Tensor, kinds: tuple[str, ...]) -> list[Node]:
    """The nodes of `kinds` this input reaches, through shape-only layers."""
    frontier, found, seen = [tensor], [], set()
    while frontier:
        current = frontier.pop()
        for node in graph.consumers(current):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.kind in kinds:
                found.append(node)
            elif _shape_only(node):
                frontier.extend(node.outputs)
    return found


def _shape_only(node: Node) -> bool:
    """The layer only moves values (Reshape, Flatten, ...): ids and tokens pass through it unchanged."""
    handler = handler_for(node)
    return handler is not None and handler.shape_only


def _vocabulary(graph: Graph, tensor: Tensor) -> int | None:
    """The smallest input_dim of the Embeddings this input reaches."""
    sizes = [int(node.attrs["input_dim"]) for node in _reached(graph, tensor, ("Embedding",))]
    return min(sizes) if sizes else None


def _lookup_tokens(graph: Graph, tensor: Tensor) -> list[Any]:
    """The vocabulary tokens of the StringLookup / IntegerLookup layers this input reaches."""
    tokens: list[Any] = []
    for node in _reached(graph, tensor, ("StringLookup", "IntegerLookup")):
        vocabulary = node.attrs.get("vocabulary")
        if isinstance(vocabulary, list):
            tokens.extend(vocabulary)
    return tokens


def _one_input(graph: Graph, tensor: Tensor, batch: int, size: int, rng: np.random.Generator) -> np.ndarray:
    shape = _concrete_shape(tensor, batch, size)
    dtype = NUMPY_DTYPES.get(tensor.dtype, np.float32)
    if dtype is object:
        tokens = [str(t) for t in _lookup_tokens(graph, tensor)] or ["a", "b", "c"]
        return rng.choice(np.asarray([*tokens, OUT_OF_VOCABULARY], dtype=object), size=shape)
    vocabulary = _vocabulary(graph, tensor)
    if vocabulary is not None:
        return rng.integers(0, vocabulary, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        known = [int(t) for t in _lookup_tokens(graph, tensor) if isinstance(t, (int, float))]
        if known:  # the vocabulary's ids and one id outside it
            return rng.choice(np.asarray([*known, max(known) + 1]), size=shape).astype(dtype)
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(size=shape).astype(dtype)
