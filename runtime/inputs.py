"""Generated inputs for --check: the right dtype, range and size per input.

- Inputs that feed an Embedding get integer ids below its `input_dim`; inputs that feed a StringLookup
  or IntegerLookup get tokens of its vocabulary and one token outside it; float inputs get N(0, 1).
- Unknown dimensions (`Input(shape=(None, None, 3))`) take the sizes the user chose (`--input-shape
  NAME=D1,D2,...`, the shape without the batch, in Keras' order: `chosen_dims`); those still unknown all
  take one size: the first of UNKNOWN_DIM_SIZES at which the converted model runs and gives non-empty
  outputs (`find_unknown_dim_size`), so a conv net whose kernels and strides need 13 pixels is checked at
  16, a sequence model at 4.
- `generated_batches` draws `samples` samples in batches: a batch of one first (a model that mishandles
  the batch axis shows there), then batches of `batch_size`. Each input draws from its own stream, so
  the samples are the same whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from converter.errors import UsageError
from converter.ir import Graph, Node, Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.ir.shape import BATCH, format_shape, permute, to_channels_first
from converter.layers.registry import handler_for
from runtime.stored import keras_shape

NUMPY_DTYPES: dict[str, Any] = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                                "int32": np.int32, "int64": np.int64, "int8": np.int8, "uint8": np.uint8,
                                "bool": np.bool_, "string": object}
UNKNOWN_DIM_SIZES = (4, 8, 16, 32, 64, 128, 256)
DEFAULT_UNKNOWN_DIM = UNKNOWN_DIM_SIZES[0]
OUT_OF_VOCABULARY = "[kconvert-out-of-vocabulary]"
Dims = dict[str, tuple[int | None, ...]]  # per input, its dims after the batch in the graph's order; None: unknown


def generate_inputs(graph: Graph, batch: int, seed: int = 0, size: int = DEFAULT_UNKNOWN_DIM,
                    dims: Dims | None = None) -> dict[str, np.ndarray]:
    """One array per graph input; `dims` where given, `size` for every other unknown non-batch dimension."""
    rng = np.random.default_rng(seed)
    return {t.name: _one_input(graph, t, _concrete_shape(t, batch, size, (dims or {}).get(t.name)), rng)
            for t in graph.inputs}


def generated_batches(graph: Graph, sizes: list[int], seed: int, size: int,
                      dims: Dims) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `sizes` samples; input k draws from the stream seeded (seed, k), so sample i is the same
    whatever the split (the draws of one stream follow each other)."""
    streams = [np.random.default_rng([seed, k]) for k in range(len(graph.inputs))]
    for batch in sizes:
        yield {t.name: _one_input(graph, t, _concrete_shape(t, batch, size, dims.get(t.name)), rng)
               for t, rng in zip(graph.inputs, streams)}


def batch_sizes(samples: int, batch_size: int, fixed: int | None = None) -> list[int]:
    """A batch of one first, then batches of `batch_size`: 4 samples are (1, 3), the check's batches
    since its start. A model whose batch dimension is fixed gets whole batches of that size."""
    if fixed is not None:
        return [fixed] * -(-samples // fixed)
    rest = samples - 1
    return [1] + [min(batch_size, rest - start) for start in range(0, rest, batch_size)]


def fixed_batch(graph: Graph) -> int | None:
    """The batch size the model declares (batch_input_shape=(8, ...)), if it declares one."""
    fixed = [t.shape[0] for t in graph.inputs if t.shape and isinstance(t.shape[0], int)]
    return fixed[0] if fixed else None


def chosen_dims(graph: Graph, given: dict[str, tuple[int, ...]]) -> Dims:
    """Each input's dims after the batch in the graph's order: the declared sizes, and `given`
    (--input-shape: the shape without the batch, in Keras' order) for the unknown ones. An unknown name,
    a wrong number of dims, or a size for a fixed dim that differs from it is a UsageError."""
    names = [t.name for t in graph.inputs]
    unknown = [name for name in given if name not in names]
    if unknown:
        raise UsageError(f"--input-shape names {', '.join(map(repr, unknown))}, and the model's inputs are "
                         f"{', '.join(map(repr, names))}", hint="give NAME=D1,D2,... for one of the model's inputs")
    return {t.name: _dims_of(t, given.get(t.name)) for t in graph.inputs}


def _dims_of(tensor: Tensor, given: tuple[int, ...] | None) -> tuple[int | None, ...]:
    declared = keras_shape(tensor)
    if given is not None:
        _check_given(tensor.name, declared, given)
    keras = (BATCH, *(given or (d if isinstance(d, int) else None for d in declared[1:])))
    if tensor.layout == CHANNELS_FIRST and len(keras) >= 3:  # --nchw-inputs: the graph takes it channels-first
        keras = permute(keras, to_channels_first(len(keras)))
    return tuple(d if isinstance(d, int) else None for d in keras[1:])


def _check_given(name: str, declared: tuple[Any, ...], given: tuple[int, ...]) -> None:
    option = f"--input-shape {name}={','.join(map(str, given))}"
    if len(given) != len(declared) - 1:
        raise UsageError(f"{option}: input '{name}' has shape {format_shape(declared)}, {len(declared) - 1} "
                         f"dims after the batch, and {len(given)} were given",
                         hint="give every dim after the batch, in Keras' order (channels last)")
    for axis, (want, got) in enumerate(zip(declared[1:], given), start=1):
        if isinstance(want, int) and want != got:
            raise UsageError(f"{option}: dim {axis} of input '{name}' is fixed at {want} "
                             f"(shape {format_shape(declared)}), and {got} was given",
                             hint=f"only the unknown (None) dims may be chosen; give {want} there")


def has_unknown_dims(graph: Graph, dims: Dims | None = None) -> bool:
    """Whether some non-batch input dim is still unknown (after `dims`, the sizes chosen)."""
    if dims is not None:
        return any(d is None for shape in dims.values() for d in shape)
    return any(not isinstance(d, int) and d != BATCH for t in graph.inputs for d in (t.shape or ())[1:])


def find_unknown_dim_size(graph: Graph, runs: Callable[[dict[str, np.ndarray]], str | None],
                          dims: Dims | None = None) -> int:
    """The first size in UNKNOWN_DIM_SIZES for the still unknown dimensions at which `runs(batch-1
    inputs)` reports no error (it returns the error's text, or None)."""
    errors = []
    for size in UNKNOWN_DIM_SIZES:
        error = runs(generate_inputs(graph, 1, seed=0, size=size, dims=dims))
        if error is None:
            return size
        errors.append(error)
    shapes = ", ".join(f"'{t.name}' {format_shape(t.shape or ())}" for t in graph.inputs)
    raise UsageError(f"the model's inputs have unknown dimensions ({shapes}), and the converted model runs at "
                     f"none of the sizes tried for them ({', '.join(map(str, UNKNOWN_DIM_SIZES))}); "
                     f"at {UNKNOWN_DIM_SIZES[-1]}: {errors[-1][:300]}",
                     hint="choose their sizes with --input-shape NAME=D1,D2,..., or check against real inputs "
                          "(--inputs) or stored Keras outputs (--reference FILE.npz)")


def _concrete_shape(tensor: Tensor, batch: int, size: int, dims: tuple[int | None, ...] | None = None
                    ) -> tuple[int, ...]:
    shape = tensor.shape or ()
    chosen = dims if dims is not None else (None,) * (len(shape) - 1)
    rest = tuple(d if isinstance(d, int) else (c if c is not None else size) for d, c in zip(shape[1:], chosen))
    return (batch if not isinstance(shape[0], int) else shape[0], *rest) if shape else ()


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


# Layers that look ids up in a table, and the config argument that sizes it.
_TABLE_SIZE = {"Embedding": "input_dim", "ReversibleEmbedding": "input_dim",
               "keras_hub>TokenAndPositionEmbedding": "vocabulary_size"}


def _vocabulary(graph: Graph, tensor: Tensor) -> int | None:
    """The smallest table of the embeddings this input reaches."""
    sizes = [int(node.attrs[_TABLE_SIZE[node.kind]]) for node in _reached(graph, tensor, tuple(_TABLE_SIZE))
             if isinstance(node.attrs.get(_TABLE_SIZE[node.kind]), int)]
    return min(sizes) if sizes else None


# Keras Hub's name for a (batch, sequence) mask of real tokens (1) and padding (0).
PADDING_MASK = "padding_mask"


def _padding_mask(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Each sequence real up to a random length (at least one token), then padding, as a tokenizer pads."""
    lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1])
    return (np.arange(shape[-1]) < lengths[..., None]).astype(dtype)


def _lookup_tokens(graph: Graph, tensor: Tensor) -> list[Any]:
    """The vocabulary tokens of the StringLookup / IntegerLookup layers this input reaches."""
    tokens: list[Any] = []
    for node in _reached(graph, tensor, ("StringLookup", "IntegerLookup")):
        vocabulary = node.attrs.get("vocabulary")
        if isinstance(vocabulary, list):
            tokens.extend(vocabulary)
    return tokens


def _one_input(graph: Graph, tensor: Tensor, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(tensor.dtype, np.float32)
    if dtype is object:
        tokens = [str(t) for t in _lookup_tokens(graph, tensor)] or ["a", "b", "c"]
        return rng.choice(np.asarray([*tokens, OUT_OF_VOCABULARY], dtype=object), size=shape)
    if tensor.name == PADDING_MASK and len(shape) == 2 and (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        return _padding_mask(shape, dtype, rng)
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
