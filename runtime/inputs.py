"""Generated inputs for --check: the right dtype and range per input.

Inputs that feed an Embedding get integer ids below its `input_dim`; float inputs get N(0, 1).
"""

from __future__ import annotations

import numpy as np

from converter.ir import Graph, Tensor
from converter.ir.shape import BATCH

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int32": np.int32,
                "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}
DEFAULT_SYMBOLIC_DIM = 4


def generate_inputs(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: _one_input(graph, t, batch, rng) for t in graph.inputs}


def _concrete_shape(tensor: Tensor, batch: int) -> tuple[int, ...]:
    shape = tensor.shape or ()
    return tuple(batch if d == BATCH else (d if isinstance(d, int) else DEFAULT_SYMBOLIC_DIM) for d in shape)


def _vocabulary(graph: Graph, tensor: Tensor) -> int | None:
    """The smallest input_dim of the Embeddings this input reaches (through shape-only layers)."""
    frontier, sizes, seen = [tensor], [], set()
    while frontier:
        current = frontier.pop()
        for node in graph.consumers(current):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.kind == "Embedding":
                sizes.append(int(node.attrs["input_dim"]))
            elif node.kind in ("Reshape", "Flatten", "Permute", "RepeatVector", "InputLayer"):
                frontier.extend(node.outputs)
    return min(sizes) if sizes else None


def _one_input(graph: Graph, tensor: Tensor, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = _concrete_shape(tensor, batch)
    dtype = NUMPY_DTYPES.get(tensor.dtype, np.float32)
    vocabulary = _vocabulary(graph, tensor)
    if vocabulary is not None or np.issubdtype(dtype, np.integer):
        return rng.integers(0, vocabulary if vocabulary is not None else 10, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(size=shape).astype(dtype)
