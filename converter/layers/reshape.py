"""Reshaping: Flatten, Reshape, Permute, RepeatVector.

These see the logical (Keras) layout: none of them is `channels_first_only`, so the layout pass puts
any Transpose back to channels_last before them. The batch dim stays dynamic everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.graph import CHANNELS_FIRST, CHANNELS_LAST
from converter.ir.shape import num_elements, permute, to_channels_last
from converter.layers.builder import OpBuilder
from converter.layers.limits import check_output
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank, expect_rank
from converter.layers.spec import Config, LayerSpec
from converter.layers.windows import parse_data_format


def _unknown(node: Node, axis: int) -> str:
    """A named symbolic dim for a size only known at run time."""
    return f"{node.name}_d{axis}"


@dataclass(frozen=True)
class FlattenSpec(LayerSpec):
    data_format: str = CHANNELS_LAST


@LAYERS.register("Flatten")
class Flatten(LayerHandler[FlattenSpec]):
    """(batch, d1, ..., dn) -> (batch, d1*...*dn). With data_format=channels_first Keras first moves
    the channel axis last (keras/src/layers/reshaping/flatten.py), so the order is always NHWC's."""

    keras3_args = "data_format"

    shape_only = True

    def reshapes_only(self, node: Node) -> bool:
        """layers/traits.PureReshape: only a channels_last Flatten keeps the element order."""
        return self.spec(node).data_format != CHANNELS_FIRST

    def parse(self, config: Config) -> FlattenSpec:
        return FlattenSpec(data_format=parse_data_format(config))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_min_rank(node, shape, 1)
        total = num_elements(shape[1:])
        return [(shape[0], _unknown(node, 1) if total is None else total)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        rank = len(node.inputs[0].shape or ())
        if self.spec(node).data_format == CHANNELS_FIRST and rank > 2:
            x = b.transpose(x, to_channels_last(rank))
        return [b.op("Flatten", x, axis=1)]


@dataclass(frozen=True)
class ReshapeSpec(LayerSpec):
    target_shape: tuple[int, ...]  # excludes the batch; -1 (Keras' None too) is inferred


def _target_shape(config: Config) -> tuple[int, ...]:
    where, raw = f"Reshape '{config.ctx.layer_name}'", config.value("target_shape")
    if raw is None:
        raise UnsupportedLayerError(f"{where} has no target_shape", layer=config.ctx.layer_name,
                                    hint="the config is incomplete")
    dims = [int(d) if d is not None else -1 for d in ([raw] if isinstance(raw, int) else raw)]
    if sum(d == -1 for d in dims) > 1 or any(d == 0 or d < -1 for d in dims):
        raise UnsupportedLayerError(f"{where} has target_shape={raw!r}: at most one -1 and positive sizes are "
                                    "allowed", layer=config.ctx.layer_name,
                                    hint="Keras writes target_shape as e.g. [8, -1]")
    return tuple(dims)


@LAYERS.register("Reshape")
class Reshape(LayerHandler[ReshapeSpec]):
    """Sample shape -> target_shape (which excludes the batch); one -1 is inferred."""

    keras3_args = "target_shape"

    shape_only = True

    required_arguments = ("target_shape",)

    def reshapes_only(self, node: Node) -> bool:
        """layers/traits.PureReshape."""
        return True

    def parse(self, config: Config) -> ReshapeSpec:
        return ReshapeSpec(target_shape=_target_shape(config))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, target = input_shapes[0], list(self.spec(node).target_shape)
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
        return [b.reshape(inputs[0], [0, *self.spec(node).target_shape])]

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout pass: a reshape to e.g. (1, 1, C) can produce its output channels-first directly,
        (C, 1, 1), when the permutation moves only size-1 axes past the others (same memory order)."""
        target = self.spec(node).target_shape
        if len(node.inputs[0].shape or ()) == len(perm) or len(target) + 1 != len(perm):
            return False
        moved = [target[p - 1] for p in perm[1:]]
        if [d for d in moved if d != 1] != [d for d in target if d != 1]:
            return False
        node.spec = self.spec(node).replace(target_shape=tuple(moved))
        return True


@dataclass(frozen=True)
class PermuteSpec(LayerSpec):
    dims: tuple[int, ...] = ()  # 1-based, the batch axis excluded


def _permutation(node: Node, dims: tuple[int, ...], rank: int) -> tuple[int, ...]:
    if sorted(dims) != list(range(1, rank)):
        raise ShapeError(f"Permute '{node.layer_name}' has dims={tuple(dims)}, which is not a permutation of "
                         f"{tuple(range(1, rank))} for a rank-{rank} input", layer=node.layer_name,
                         hint="dims are 1-based and exclude the batch axis")
    return (0, *dims)


@LAYERS.register("Permute")
class Permute(LayerHandler[PermuteSpec]):
    """Permutes the sample axes; `dims` are 1-based (the batch axis 0 never moves)."""

    keras3_args = "dims"

    shape_only = True

    required_arguments = ("dims",)

    def parse(self, config: Config) -> PermuteSpec:
        return PermuteSpec(dims=config.int_list("dims"))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        return [permute(shape, _permutation(node, self.spec(node).dims, len(shape)))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        rank = len(node.inputs[0].shape or ())
        return [b.transpose(inputs[0], _permutation(node, self.spec(node).dims, rank))]


@dataclass(frozen=True)
class RepeatSpec(LayerSpec):
    n: int


@LAYERS.register("RepeatVector")
class RepeatVector(LayerHandler[RepeatSpec]):
    """(batch, features) -> (batch, n, features)."""

    keras3_args = "n"

    shape_only = True

    required_arguments = ("n",)

    def parse(self, config: Config) -> RepeatSpec:
        n = config.value("n")
        if not isinstance(n, int) or n < 1:
            raise UnsupportedLayerError(f"RepeatVector '{config.ctx.layer_name}' needs a positive int n, got {n!r}",
                                        layer=config.ctx.layer_name, hint="Keras writes n as e.g. 3")
        return RepeatSpec(n=n)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 2, "(batch, features)")
        return [check_output(node, (shape[0], self.spec(node).n, shape[1]), "n")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        repeats = b.ints([1, self.spec(node).n, 1], "repeats")
        return [b.op("Tile", b.unsqueeze(inputs[0], [1]), repeats)]
