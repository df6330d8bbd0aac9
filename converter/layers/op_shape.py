"""Shape tensor functions: transpose, swapaxes, moveaxis, expand/squeeze, identity, tile, broadcast_to, flip, pad.

Both front ends bind here: tf.keras `tf.transpose(x, [0, 2, 1])` and Keras 3 `keras.ops.swapaxes`. Shapes
written in the file include the batch axis; an argument computed in the graph is refused by name
(`Bound.constant`). None of these but identity is layout-agnostic: they name axes, so the layout pass
keeps Transposes around them. Reshapes are in op_reshape.py, `x[...]` in op_getitem.py, joining in
op_join.py, products in op_products.py.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from converter.errors import ShapeError
from converter.ir import Dim, Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_functions import Bound, Signature, TensorFunction, constant_input, normalized_axis
from converter.layers.op_getitem import GETITEM, SLICE
from converter.layers.tf_op_layers import TF_FUNCTIONS, TF_SLICING

# ONNX Slice's "to the end" bound (clamped to the axis); its negation runs a negative step past index 0.
END = 2**63 - 1


def unknown(node: Node, axis: int) -> str:
    """A named symbolic dim for a size only known at run time."""
    return f"{node.name}_d{axis}"


def int_list(args: Bound, name: str, default: Any = None) -> list[int] | None:
    """A constant int or list of ints (None when absent); anything else is refused by name."""
    value = args.constant(name, default)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise args.refuse(name, "must be an integer or a list of integers")
    return list(values)


def axes_of(node: Node, args: Bound, name: str, rank: int) -> list[int] | None:
    """A constant axis or list of axes, each normalised to [0, rank); None when absent."""
    axes = int_list(args, name)
    if axes is None:
        return None
    normal = [normalized_axis(node, a, rank, name) for a in axes]
    if len(set(normal)) != len(normal):
        raise args.refuse(name, "names an axis twice")
    return normal


def rank_of(node: Node, args: Bound, name: str) -> int:
    return len(node.inputs[args.tensor(name)].shape or ())


def shaped(node: Node, args: Bound, name: str) -> bool:
    """Whether the tensor's shape is known yet: `check` runs while the graph is built, before shape
    inference, so the checks that need a rank wait for output_shapes (which runs them again)."""
    return node.inputs[args.tensor(name)].shape is not None


class Permutation(TensorFunction):
    """A function that permutes the axes (transpose, swapaxes, moveaxis): one ONNX Transpose."""

    @abstractmethod
    def perm(self, node: Node, args: Bound, rank: int) -> list[int]:
        """The permutation for a rank-`rank` operand (argument errors refused by name)."""

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "x"):
            self.perm(node, args, rank_of(node, args, "x"))

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("x")]
        return [tuple(shape[p] for p in self.perm(node, args, len(shape)))]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        return [b.transpose(inputs[args.tensor("x")], self.perm(node, args, rank_of(node, args, "x")))]


class Transpose(Permutation):
    """`tf.transpose(a, perm)`: perm None reverses the axes; conjugation changes nothing on real values."""

    parameters = ("x", "perm", "conjugate")

    def perm(self, node: Node, args: Bound, rank: int) -> list[int]:
        perm = int_list(args, "perm")
        if perm is None:
            return list(range(rank))[::-1]
        if sorted(a % rank if -rank <= a < rank else a for a in perm) != list(range(rank)):
            raise args.refuse("perm", f"is not a permutation of the {rank} axes")
        return [a % rank for a in perm]


class Swapaxes(Permutation):
    """`keras.ops.swapaxes(x, axis1, axis2)`."""

    parameters = ("x", "axis1", "axis2")

    def perm(self, node: Node, args: Bound, rank: int) -> list[int]:
        first = normalized_axis(node, args.constant("axis1"), rank, "axis1")
        second = normalized_axis(node, args.constant("axis2"), rank, "axis2")
        perm = list(range(rank))
        perm[first], perm[second] = second, first
        return perm


class Moveaxis(Permutation):
    """`keras.ops.moveaxis(x, source, destination)`: numpy's rule, the other axes keep their order."""

    parameters = ("x", "source", "destination")

    def perm(self, node: Node, args: Bound, rank: int) -> list[int]:
        source, destination = axes_of(node, args, "source", rank), axes_of(node, args, "destination", rank)
        if source is None or destination is None or len(source) != len(destination):
            raise args.refuse("source", "and destination must name as many axes")
        rest = [a for a in range(rank) if a not in source]
        perm = [-1] * rank
        for src, dst in zip(source, destination):
            perm[dst] = src
        return [p if p >= 0 else rest.pop(0) for p in perm]


class ExpandDims(TensorFunction):
    """`tf.expand_dims(input, axis)` / `keras.ops.expand_dims(x, axis)` (Keras 3: an axis or a list)."""

    parameters = ("input", "axis")

    def axes(self, node: Node, args: Bound) -> list[int]:
        count = len(int_list(args, "axis") or [])
        if count == 0:
            raise args.refuse("axis", "is required")
        found = axes_of(node, args, "axis", rank_of(node, args, "input") + count)
        return sorted(found or [])

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "input"):
            self.axes(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        dims = list(input_shapes[args.tensor("input")])
        for axis in self.axes(node, args):
            dims.insert(axis, 1)
        return [tuple(dims)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        return [b.unsqueeze(inputs[args.tensor("input")], self.axes(node, args))]


class Squeeze(TensorFunction):
    """`tf.squeeze(input, axis)` / `keras.ops.squeeze(x, axis)`. Without an axis it drops the axes the
    model's shapes know to be 1 (TensorFlow would also drop a batch of 1 at run time; the converted model
    keeps the batch axis, as Keras' declared output shape does)."""

    parameters = ("input", "axis")

    def axes(self, node: Node, args: Bound, shape: Shape) -> list[int]:
        axes = axes_of(node, args, "axis", len(shape))
        if axes is None:
            return [a for a, d in enumerate(shape) if d == 1]
        if any(isinstance(shape[a], int) and shape[a] != 1 for a in axes):
            raise ShapeError(f"{args.function} '{node.layer_name}' squeezes axis {axes} of shape {shape}, "
                             "whose size is not 1", layer=node.layer_name, hint="only axes of size 1 squeeze")
        return sorted(axes)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("input")]
        drop = self.axes(node, args, shape)
        return [tuple(d for a, d in enumerate(shape) if a not in drop)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        shape = node.inputs[args.tensor("input")].shape or ()
        drop = self.axes(node, args, shape)
        x = inputs[args.tensor("input")]
        return [b.squeeze(x, drop) if drop else b.op("Identity", x)]


class Identity(TensorFunction):
    """`tf.identity(input)`."""

    parameters = ("input",)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("input")]]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        return [b.op("Identity", inputs[args.tensor("input")])]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        return True


class Tile(TensorFunction):
    """`tf.tile(input, multiples)` / `keras.ops.tile(x, repeats)` (numpy's rule: fewer repeats than axes
    repeat the last axes; more add leading axes)."""

    parameters = ("input", "multiples")

    def plan(self, node: Node, args: Bound) -> tuple[int, list[int]]:
        """(leading axes to add, multiples per axis of the widened input)."""
        multiples = int_list(args, "multiples")
        if not multiples or any(m < 0 for m in multiples):
            raise args.refuse("multiples", "must be non-negative integers, one per axis")
        rank = rank_of(node, args, "input")
        return max(0, len(multiples) - rank), [1] * (rank - len(multiples)) + multiples

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "input"):
            self.plan(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        lead, multiples = self.plan(node, args)
        dims = (1,) * lead + tuple(input_shapes[args.tensor("input")])
        return [tuple(_times(node, a, d, m) for a, (d, m) in enumerate(zip(dims, multiples)))]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        lead, multiples = self.plan(node, args)
        x = inputs[args.tensor("input")]
        if lead:
            x = b.unsqueeze(x, list(range(lead)))
        return [b.op("Tile", x, b.ints(multiples, "multiples"))]


def _times(node: Node, axis: int, dim: Dim, multiple: int) -> Dim:
    if multiple == 1:
        return dim
    return dim * multiple if isinstance(dim, int) else unknown(node, axis)


class BroadcastTo(TensorFunction):
    """`tf.broadcast_to(input, shape)` / `keras.ops.broadcast_to(x, shape)`: the shape includes the batch."""

    parameters = ("input", "shape")

    def target(self, node: Node, args: Bound) -> list[int]:
        shape = int_list(args, "shape")
        rank = rank_of(node, args, "input")
        if shape is None or len(shape) < rank or any(d < 1 for d in shape):
            raise args.refuse("shape", f"must be positive sizes, at least {rank} of them")
        return shape

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "input"):
            self.target(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        target = self.target(node, args)
        given = input_shapes[args.tensor("input")]
        shape = (1,) * (len(target) - len(given)) + tuple(given)
        for dim, want in zip(shape, target):
            if isinstance(dim, int) and dim not in (1, want):
                raise ShapeError(f"{args.function} '{node.layer_name}' cannot broadcast {shape} to "
                                 f"{tuple(target)}", layer=node.layer_name, hint="numpy broadcasting rules")
        return [tuple(target)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        return [b.op("Expand", inputs[args.tensor("input")], b.ints(self.target(node, args), "shape"))]


class Flip(TensorFunction):
    """`tf.reverse(tensor, axis)` / `keras.ops.flip(x, axis)` (Keras: None reverses every axis)."""

    parameters = ("tensor", "axis")

    def axes(self, node: Node, args: Bound) -> list[int]:
        rank = rank_of(node, args, "tensor")
        axes = axes_of(node, args, "axis", rank)
        return list(range(rank)) if axes is None else axes

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "tensor"):
            self.axes(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        self.axes(node, args)
        return [input_shapes[args.tensor("tensor")]]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        axes = self.axes(node, args)
        x = inputs[args.tensor("tensor")]
        if not axes:
            return [b.op("Identity", x)]
        return [b.slice(x, [-1] * len(axes), [-END] * len(axes), axes, [-1] * len(axes))]


# TensorFlow's pad modes -> ONNX Pad's (SYMMETRIC, which repeats the edge value, has no ONNX mode).
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


class Pad(TensorFunction):
    """`tf.pad(tensor, paddings, mode, constant_values)` / `keras.ops.pad(x, pad_width, mode,
    constant_values)`; Keras 3 broadcasts pad_width as numpy does (an int, one pair, or a pair per axis)."""

    parameters = ("tensor", "paddings", "mode", "constant_values")

    def pads(self, node: Node, args: Bound) -> list[tuple[int, int]]:
        rank = rank_of(node, args, "tensor")
        raw = np.asarray(args.constant("paddings"), dtype=object)
        if raw.size == 0 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.flat):
            raise args.refuse("paddings", "must be non-negative integers")
        try:
            pairs = np.broadcast_to(raw.reshape((-1, 2) if raw.ndim else (1, 1)), (rank, 2))
        except ValueError:
            raise args.refuse("paddings", f"must hold a [before, after] pair per axis ({rank} axes)") from None
        return [(int(a), int(z)) for a, z in pairs]

    def mode(self, args: Bound) -> str:
        mode = args.constant("mode", "constant")
        if not isinstance(mode, str) or mode.lower() not in PAD_MODES:
            raise args.refuse("mode", f"is not one of {sorted(PAD_MODES)} (ONNX has no symmetric padding)")
        return PAD_MODES[mode.lower()]

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "tensor"):
            self.pads(node, args)
        value = args.constant("constant_values")
        if self.mode(args) != "constant" and value not in (None, 0):
            raise args.refuse("constant_values", "applies to constant padding only")
        if not isinstance(value, (int, float, type(None))) or isinstance(value, bool):
            raise args.refuse("constant_values", "must be a number")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("tensor")]
        pads = self.pads(node, args)
        for dim, (before, after) in zip(shape, pads):
            if self.mode(args) == "reflect" and isinstance(dim, int) and max(before, after) >= dim:
                raise ShapeError(f"{args.function} '{node.layer_name}' reflects {max(before, after)} values of an "
                                 f"axis of size {dim}", layer=node.layer_name, hint="reflect padding < the axis")
        return [tuple(_padded(node, a, d, sum(p)) for a, (d, p) in enumerate(zip(shape, pads)))]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        pads = self.pads(node, args)
        x = inputs[args.tensor("tensor")]
        widths = b.ints([p[0] for p in pads] + [p[1] for p in pads], "pads")
        if self.mode(args) != "constant":
            return [b.op("Pad", x, widths, mode=self.mode(args))]
        value = constant_input(b, args.constant("constant_values", 0), node.inputs[args.tensor("tensor")].dtype)
        return [b.op("Pad", x, widths, value, mode="constant")]


def _padded(node: Node, axis: int, dim: Dim, added: int) -> Dim:
    if added == 0:
        return dim
    return dim + added if isinstance(dim, int) else unknown(node, axis)


TRANSPOSE, EXPAND, SQUEEZE = Transpose(), ExpandDims(), Squeeze()
TILE, BROADCAST, FLIP, PAD = Tile(), BroadcastTo(), Flip(), Pad()

TF_FUNCTIONS["transpose"] = Signature(TRANSPOSE, ("a", "perm", "conjugate"), rename={"a": "x"})
TF_FUNCTIONS["compat.v1.transpose"] = Signature(TRANSPOSE, ("a", "perm", "name", "conjugate"), rename={"a": "x"})
TF_FUNCTIONS["expand_dims"] = Signature(EXPAND, ("input", "axis"))
TF_FUNCTIONS["compat.v1.expand_dims"] = Signature(EXPAND, ("input", "axis", "name", "dim"), rename={"dim": "axis"})
TF_FUNCTIONS["squeeze"] = Signature(SQUEEZE, ("input", "axis"))
TF_FUNCTIONS["compat.v1.squeeze"] = Signature(SQUEEZE, ("input", "axis", "name", "squeeze_dims"),
                                              rename={"squeeze_dims": "axis"})
TF_FUNCTIONS["identity"] = Signature(Identity(), ("input",))
TF_FUNCTIONS["tile"] = Signature(TILE, ("input", "multiples"))
TF_FUNCTIONS["broadcast_to"] = Signature(BROADCAST, ("input", "shape"))
TF_FUNCTIONS["reverse"] = Signature(FLIP, ("tensor", "axis"))
TF_FUNCTIONS["pad"] = Signature(PAD, ("tensor", "paddings", "mode", "constant_values"))
TF_FUNCTIONS["compat.v1.pad"] = Signature(PAD, ("tensor", "paddings", "mode", "name", "constant_values"))
TF_SLICING["__operators__.getitem"] = Signature(GETITEM, ("tensor", "slice_spec"))
TF_FUNCTIONS["slice"] = Signature(SLICE, ("input_", "begin", "size"))

add_keras_op("Swapaxes", Signature(Swapaxes(), ("x",)))
add_keras_op("Moveaxis", Signature(Moveaxis(), ("x",)))
add_keras_op("ExpandDims", Signature(EXPAND, ("x",), rename={"x": "input"}))
add_keras_op("Squeeze", Signature(SQUEEZE, ("x",), rename={"x": "input"}))
add_keras_op("Tile", Signature(TILE, ("x",), rename={"x": "input", "repeats": "multiples"}))
add_keras_op("BroadcastTo", Signature(BROADCAST, ("x",), rename={"x": "input"}))
add_keras_op("Flip", Signature(FLIP, ("x",), rename={"x": "tensor"}))
add_keras_op("Pad", Signature(PAD, ("x",), rename={"x": "tensor", "pad_width": "paddings"}))
add_keras_op("GetItem", Signature(GETITEM, ("x", "key"), rename={"x": "tensor", "key": "slice_spec"}))
