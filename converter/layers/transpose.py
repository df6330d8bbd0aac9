"""Transposes: the layout pass's own node, and the Keras 3 op node `keras.ops.transpose`.

Both permute all axes, batch included. The layout pass's node is `kconvert:Transpose` (spec `PermSpec`);
a Keras 3 functional model records `ops.transpose(x, axes)` as a node of class `Transpose` (module
keras.src.ops.numpy) whose config holds `axes`: numpy's semantics, a permutation of the full tensor's
axes (negative axes count from the end), or None to reverse all of them, batch included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import FormatError, ShapeError
from converter.ir import Node, Shape
from converter.ir.internal import INTERNAL_TRANSPOSE, PermSpec
from converter.ir.shape import permute
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec


@LAYERS.register(INTERNAL_TRANSPOSE)
class InternalTranspose(LayerHandler[PermSpec]):
    """Built by the layout pass with its PermSpec; never parsed from a file."""

    internal = True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [permute(input_shapes[0], self.spec(node).perm)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.transpose(inputs[0], list(self.spec(node).perm))]


@dataclass(frozen=True)
class TransposeSpec(LayerSpec):
    # The config's `axes` as written (a list of ints, when well-formed); None: the call's, else all reversed.
    # Kept raw because `check` refuses a malformed one together with the call's tensor count.
    axes: Any = None


def _raw_axes(node: Node, spec: TransposeSpec) -> Any:
    """`axes` from the op's config; from the call if it was passed there (by keyword or position)."""
    if spec.axes is not None:
        return spec.axes
    call = node.call.kwargs
    constants = call.get("positional_constants") or []
    return call.get("axes", constants[0] if len(constants) == 1 else None)


@LAYERS.register("Transpose")
class TransposeOp(LayerHandler[TransposeSpec]):
    """Keras 3 op node `ops.transpose(x, axes=None)`."""

    keras3_args = "axes"
    keras_op_module = "keras.src.ops.numpy"
    keras_availability = "file"

    argument_kinds = {"axes": "axis_list"}  # a whole permutation, not Dot's pair

    def parse(self, config: Config) -> TransposeSpec:
        return TransposeSpec(axes=config.value("axes"))

    def check(self, node: Node) -> None:
        axes = _raw_axes(node, self.spec(node))
        valid = axes is None or (isinstance(axes, list) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in axes))
        if not valid or len(node.inputs) != 1:
            raise FormatError(f"Transpose '{node.layer_name}' has axes={axes!r} on {len(node.inputs)} tensor(s): "
                              "ops.transpose takes one tensor and a list of integer axes (or None)",
                              layer=node.layer_name, hint="is the config complete and undamaged?")

    def perm(self, node: Node, rank: int) -> list[int]:
        axes = _raw_axes(node, self.spec(node))
        if axes is None:
            return list(range(rank))[::-1]
        perm = [a % rank if -rank <= a < rank else -1 for a in axes] if rank else []
        if len(axes) != rank or sorted(perm) != list(range(rank)):
            raise ShapeError(f"Transpose '{node.layer_name}' has axes={axes} for an input of rank {rank}: "
                             "axes must be a permutation of the input's axes", layer=node.layer_name,
                             hint="the axes count the batch axis too (axis 0)")
        return perm

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [permute(input_shapes[0], tuple(self.perm(node, len(input_shapes[0]))))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [b.transpose(inputs[0], self.perm(node, len(node.inputs[0].shape or ())))]
