"""Shapes: a tuple of dims, each an int, None (unknown), or a str (a named symbolic dim)."""

from __future__ import annotations

from typing import Union

Dim = Union[int, None, str]
Shape = tuple[Dim, ...]

BATCH = "batch"


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


def format_shape(shape: Shape, batch_as_none: bool = True) -> str:
    """Render like Keras' summary: symbolic dims print as None."""
    parts = ["None" if (d is None or isinstance(d, str)) and batch_as_none else str(d) for d in shape]
    inner = ", ".join(parts)
    return f"({inner},)" if len(parts) == 1 else f"({inner})"


def sample_shape(shape: Shape) -> Shape:
    return shape[1:]


def num_elements(dims: Shape) -> int | None:
    """Product of dims, None if any is not static."""
    total = 1
    for d in dims:
        if not isinstance(d, int):
            return None
        total *= d
    return total


def permute(shape: Shape, perm: tuple[int, ...]) -> Shape:
    return tuple(shape[p] for p in perm)


def inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation undoing `perm`: permute(permute(shape, perm), inverse(perm)) == shape."""
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


# The layout permutations, named once: `physical = transpose(keras, perm)`.
Perm = tuple[int, ...]


def to_channels_first(rank: int) -> Perm:
    """NHWC -> NCHW for any rank >= 3: the channels move from last to second."""
    return (0, rank - 1, *range(1, rank - 1))


def to_channels_last(rank: int) -> Perm:
    """NCHW -> NHWC for any rank >= 3: the channels move from second to last."""
    return (0, *range(2, rank), 1)


def identity_perm(rank: int) -> Perm:
    return tuple(range(rank))
