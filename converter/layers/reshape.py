"""Reshaping: Flatten, Reshape, Permute, RepeatVector.

These see the logical (Keras) layout: none of them is `channels_first_only`, so the layout pass puts
any Transpose back to channels_last before them. The batch dim stays dynamic everywhere.
"""

from __future__ import annotations

import math
from typing import Any

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import num_elements, permute
from converter.layers.builder import OpBuilder
from converter.layers.limits import check_output
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank, expect_rank
from converter.layers.windows import data_format


def _unknown(node: Node, axis: int) -> str:
    """A named symbolic dim for a size only known at run time."""
    return f"{node.name}_d{axis}"


@LAYERS.register("Flatten")
class Flatten(LayerHandler):
    """(batch, d1, ..., dn) -> (batch, d1*...*dn). With data_format=channels_first Keras first moves
    the channel axis last (keras/src/layers/reshaping/flatten.py), so the order is always NHWC's."""

    def check(self, node: Node) -> None:
        data_format(node)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_min_rank(node, shape, 1)
        total = num_elements(shape[1:])
        return [(shape[0], _unknown(node, 1) if total is None else total)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        rank = len(node.inputs[0].shape or ())
        if node.attr("data_format") == "channels_first" and rank > 2:
            x = b.transpose(x, (0, *range(2, rank), 1))
        return [b.op("Flatten", x, axis=1)]


def _target_shape(node: Node) -> list[int]:
    raw: Any = node.attrs.get("target_shape")
    if raw is None:
        raise UnsupportedLayerError(f"Reshape '{node.layer_name}' has no target_shape", layer=node.layer_name,
                                    hint="the config is incomplete")
    dims = [int(d) if d is not None else -1 for d in ([raw] if isinstance(raw, int) else raw)]
    if sum(d == -1 for d in dims) > 1 or any(d == 0 or d < -1 for d in dims):
        raise UnsupportedLayerError(f"Reshape '{node.layer_name}' has target_shape={raw!r}: at most one -1 "
                                    "and positive sizes are allowed", layer=node.layer_name,
                                    hint="Keras writes target_shape as e.g. [8, -1]")
    return dims


@LAYERS.register("Reshape")
class Reshape(LayerHandler):
    """Sample shape -> target_shape (which excludes the batch); one -1 is inferred."""

    def check(self, node: Node) -> None:
        _target_shape(node)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, target = input_shapes[0], _target_shape(node)
        total, known = num_elements(shape[1:]), math.prod(d for d in target if d != -1)
        if -1 not in target:
            if total is not None and total != known:
                raise ShapeError(f"Reshape '{node.layer_name}' cannot reshape {total} values per sample into "
                                 f"target_shape={tuple(target)} ({known} values)", layer=node.layer_name,
                                 hint="target_shape excludes the batch and must hold as many values as the input")
            return [(shape[0], *target)]
        if total is not None and total % known:
            raise ShapeError(f"Reshape '{node.layer_name}': {total} values per sample do not divide into "
                             f"target_shape={tuple(target)}", layer=node.layer_name,
                             hint="target_shape excludes the batch; its known dims must divide the input's values")
        axis = target.index(-1)
        inferred: int | str = _unknown(node, axis + 1) if total is None else total // known
        return [(shape[0], *target[:axis], inferred, *target[axis + 1:])]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        # 0 copies the batch dim from the input (allowzero=0), so the batch stays dynamic.
        return [b.reshape(inputs[0], [0, *_target_shape(node)])]

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout pass: a reshape to e.g. (1, 1, C) can produce its output channels-first directly,
        (C, 1, 1), when the permutation moves only size-1 axes past the others (same memory order)."""
        target = _target_shape(node)
        if len(node.inputs[0].shape or ()) == len(perm) or len(target) + 1 != len(perm):
            return False
        moved = [target[p - 1] for p in perm[1:]]
        if [d for d in moved if d != 1] != [d for d in target if d != 1]:
            return False
        node.attrs["target_shape"] = moved
        return True


def _permutation(node: Node, rank: int) -> tuple[int, ...]:
    dims = [int(d) for d in node.attrs.get("dims") or ()]
    if sorted(dims) != list(range(1, rank)):
        raise ShapeError(f"Permute '{node.layer_name}' has dims={tuple(dims)}, which is not a permutation of "
                         f"{tuple(range(1, rank))} for a rank-{rank} input", layer=node.layer_name,
                         hint="dims are 1-based and exclude the batch axis")
    return (0, *dims)


@LAYERS.register("Permute")
class Permute(LayerHandler):
    """Permutes the sample axes; `dims` are 1-based (the batch axis 0 never moves)."""

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        return [permute(shape, _permutation(node, len(shape)))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.transpose(inputs[0], _permutation(node, len(node.inputs[0].shape or ())))]


@LAYERS.register("RepeatVector")
class RepeatVector(LayerHandler):
    """(batch, features) -> (batch, n, features)."""

    def check(self, node: Node) -> None:
        if not isinstance(node.attrs.get("n"), int) or node.attrs["n"] < 1:
            raise UnsupportedLayerError(f"RepeatVector '{node.layer_name}' needs a positive int n, "
                                        f"got {node.attrs.get('n')!r}", layer=node.layer_name,
                                        hint="Keras writes n as e.g. 3")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 2, "(batch, features)")
        return [check_output(node, (shape[0], int(node.attrs["n"]), shape[1]), "n")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        repeats = b.ints([1, int(node.attrs["n"]), 1], "repeats")
        return [b.op("Tile", b.unsqueeze(inputs[0], [1]), repeats)]
