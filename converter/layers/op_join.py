"""Joining, splitting and products: concat, stack, split, unstack, repeat, gather/take, matmul, einsum.

Both front ends bind here (tf.keras `tf.concat([a, b], -1)`, Keras 3 `Concatenate`). An operand may be a
constant where the function allows it: tf.keras writes it as a nested list, Keras 3 as a `__tensor__`
object; it takes the tensor operands' dtype. Split and unstack need the split axis' size in the model's
shapes (the outputs' count is fixed by the file).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import ShapeError
from converter.ir import Dim, Node, Shape
from converter.ir.shape import num_elements
from converter.ir.spec import TensorArg
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_functions import Bound, Signature, TensorFunction, normalized_axis
from converter.layers.op_shape import int_list, rank_of, shaped, unknown
from converter.layers.tf_op_layers import TF_FUNCTIONS


def constant_array(args: Bound, name: str, value: Any) -> np.ndarray:
    """A constant operand: a number, nested lists, or Keras 3's `__tensor__` / `__numpy__` object."""
    if isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__"):
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value)
    except ValueError:
        raise args.refuse(name, "is not a rectangular array of numbers") from None
    if array.dtype.kind not in "biuf":
        raise args.refuse(name, "is not a constant array of numbers")
    return array


def operand_shape(args: Bound, name: str, value: Any, input_shapes: list[Shape]) -> Shape:
    if isinstance(value, TensorArg):
        return input_shapes[value.index]
    return tuple(constant_array(args, name, value).shape)


def operand_name(b: OpBuilder, args: Bound, name: str, value: Any, inputs: list[str], dtype: str) -> str:
    if isinstance(value, TensorArg):
        return inputs[value.index]
    return b.const(constant_array(args, name, value).astype(dtype), name, dtype=np.dtype(dtype))


def tensor_dtype(node: Node, values: list[Any]) -> str:
    tensors = [v for v in values if isinstance(v, TensorArg)]
    return node.inputs[tensors[0].index].dtype if tensors else "float32"


def operand_list(args: Bound, name: str) -> list[Any]:
    values = args.values.get(name)
    values = values if isinstance(values, list) else [values]
    if not any(isinstance(v, TensorArg) for v in values):
        raise args.refuse(name, "holds no tensor")
    return values


def merged_dim(node: Node, dims: list[Dim]) -> Dim:
    known = {d for d in dims if isinstance(d, int)}
    if len(known) > 1:
        raise ShapeError(f"'{node.layer_name}' joins tensors whose sizes {sorted(known)} differ on an axis",
                         layer=node.layer_name, hint="the operands must agree on every axis but the joined one")
    return known.pop() if known else dims[0]


def _same_rank_operands(args: Bound, input_shapes: list[Shape]) -> tuple[list[Any], list[Shape]]:
    """The joined operands and their shapes, which must share one rank."""
    values = operand_list(args, "values")
    shapes = [operand_shape(args, "values", v, input_shapes) for v in values]
    if len({len(s) for s in shapes}) != 1:
        raise args.refuse("values", "holds operands of different ranks")
    return values, shapes


class Concat(TensorFunction):
    """`tf.concat(values, axis)` / `keras.ops.concatenate(xs, axis)`."""

    parameters = ("values", "axis")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        values, shapes = _same_rank_operands(args, input_shapes)
        axis = normalized_axis(node, args.constant("axis", 0), len(shapes[0]))
        joined = [s[axis] for s in shapes]
        total: Dim = sum(d for d in joined if isinstance(d, int))
        if not all(isinstance(d, int) for d in joined):
            total = unknown(node, axis)
        dims = [total if a == axis else merged_dim(node, [s[a] for s in shapes]) for a in range(len(shapes[0]))]
        return [tuple(dims)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        values = operand_list(args, "values")
        dtype = tensor_dtype(node, values)
        names = [operand_name(b, args, "values", v, inputs, dtype) for v in values]
        axis = normalized_axis(node, args.constant("axis", 0), len(node.outputs[0].shape or ()))
        return [b.op("Concat", *names, axis=axis)]


class Stack(TensorFunction):
    """`tf.stack(values, axis)` / `keras.ops.stack(xs, axis)`: a new axis joins same-shaped operands."""

    parameters = ("values", "axis")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        values, shapes = _same_rank_operands(args, input_shapes)
        axis = normalized_axis(node, args.constant("axis", 0), len(shapes[0]) + 1)
        dims = [merged_dim(node, [s[a] for s in shapes]) for a in range(len(shapes[0]))]
        return [(*dims[:axis], len(values), *dims[axis:])]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        values = operand_list(args, "values")
        dtype = tensor_dtype(node, values)
        axis = normalized_axis(node, args.constant("axis", 0), len(node.outputs[0].shape or ()))
        names = [b.unsqueeze(operand_name(b, args, "values", v, inputs, dtype), [axis]) for v in values]
        return [b.op("Concat", *names, axis=axis)]


class Split(TensorFunction):
    """`tf.split(value, num_or_size_splits, axis)` (a count of equal parts, or sizes with one -1) and
    `keras.ops.split(x, indices_or_sections, axis)` (a count, or numpy's split points)."""

    parameters: tuple[str, ...] = ("value", "num_or_size_splits", "indices_or_sections", "axis", "num")

    def axis(self, node: Node, args: Bound) -> int:
        return normalized_axis(node, args.constant("axis", 0), rank_of(node, args, "value"))

    def sizes(self, node: Node, args: Bound) -> list[int]:
        axis = self.axis(node, args)
        size = (node.inputs[args.tensor("value")].shape or ())[axis]
        name = "indices_or_sections" if args.has("indices_or_sections") else "num_or_size_splits"
        parts = int_list(args, name)
        if not isinstance(size, int) or not parts:
            raise args.refuse(name, f"splits axis {axis}, whose size the model's shapes leave open")
        if isinstance(args.constant(name), int):
            if parts[0] < 1 or size % parts[0]:
                raise args.refuse(name, f"does not divide the axis of size {size} into equal parts")
            return [size // parts[0]] * parts[0]
        if name == "indices_or_sections":
            cuts = [min(max(c % size if c < 0 else c, 0), size) for c in parts]
            parts = [b - a for a, b in zip([0, *cuts], [*cuts, size])]
        elif parts.count(-1) == 1:
            parts[parts.index(-1)] = size - sum(p for p in parts if p != -1)
        if any(p < 1 for p in parts) or sum(parts) != size:
            raise args.refuse(name, f"does not split the axis of size {size} into non-empty parts")
        return parts

    def num_outputs(self, node: Node, args: Bound) -> int:
        """The count is in the call (the sizes need the input's shape, known only later)."""
        name = "indices_or_sections" if args.has("indices_or_sections") else "num_or_size_splits"
        parts = int_list(args, name)
        if not parts:
            raise args.refuse(name, "is required")
        if isinstance(args.constant(name), int):
            return parts[0]
        return len(parts) + 1 if name == "indices_or_sections" else len(parts)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, axis = input_shapes[args.tensor("value")], self.axis(node, args)
        return [(*shape[:axis], part, *shape[axis + 1:]) for part in self.sizes(node, args)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x = inputs[args.tensor("value")]
        sizes = self.sizes(node, args)
        return b.split(x, sizes, self.axis(node, args)) if len(sizes) > 1 else [b.op("Identity", x)]


class Unstack(Split):
    """`tf.unstack(value, num, axis)` / `keras.ops.unstack(x, num, axis)`: one output per position."""

    parameters = ("value", "axis", "num")

    def num_outputs(self, node: Node, args: Bound) -> int:
        # The graph is built before shapes are known, and the outputs' count is fixed then.
        num = args.constant("num")
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise args.refuse("num", "is not given; kconvert needs the count of outputs in the call "
                                     "(tf.unstack(x, num=N, axis=...))")
        return num

    def sizes(self, node: Node, args: Bound) -> list[int]:
        axis = self.axis(node, args)
        size = (node.inputs[args.tensor("value")].shape or ())[axis]
        if isinstance(size, int) and size != self.num_outputs(node, args):
            raise args.refuse("num", f"differs from the size {size} of axis {axis}")
        return [1] * self.num_outputs(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, axis = input_shapes[args.tensor("value")], self.axis(node, args)
        return [(*shape[:axis], *shape[axis + 1:])] * len(self.sizes(node, args))

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        axis = self.axis(node, args)
        parts = super().emit(node, b, args, inputs)
        return [b.squeeze(p, [axis]) for p in parts]


class Repeat(TensorFunction):
    """`tf.repeat(input, repeats, axis)` / `keras.ops.repeat(x, repeats, axis)`: each position repeated;
    without an axis the flattened input (batch included). A Gather of the repeated positions (the axis'
    size must be known); one count over an open axis: Tile on a new axis, then merge the two."""

    parameters = ("input", "repeats", "axis")

    def plan(self, node: Node, args: Bound, shape: Shape) -> tuple[Shape, int, list[int]]:
        """(the shape repeated, the axis, repeats per position or one count)."""
        if args.constant("axis") is None:
            shape = (num_elements(shape),)
        axis = normalized_axis(node, args.constant("axis", 0), len(shape))
        repeats = int_list(args, "repeats") or []
        size = shape[axis]
        if len(repeats) > 1 and len(repeats) != size or any(r < 0 for r in repeats) or not repeats:
            raise args.refuse("repeats", f"must be one count or one per position of an axis of size {size}")
        if len(repeats) == 1 and not all(isinstance(d, int) for d in shape[axis + 1:]):
            raise args.refuse("axis", "repeats an axis followed by axes of sizes the model's shapes leave open")
        return shape, axis, repeats

    def check(self, node: Node, args: Bound) -> None:
        if shaped(node, args, "input"):
            self.plan(node, args, node.inputs[args.tensor("input")].shape or ())

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, axis, repeats = self.plan(node, args, input_shapes[args.tensor("input")])
        size = shape[axis]
        dim: Dim = (size * repeats[0] if isinstance(size, int) else unknown(node, axis)) if len(repeats) == 1 \
            else sum(repeats)
        return [(*shape[:axis], dim, *shape[axis + 1:])]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        shape, axis, repeats = self.plan(node, args, node.inputs[args.tensor("input")].shape or ())
        x = inputs[args.tensor("input")]
        if args.constant("axis") is None:
            x = b.reshape(x, [-1])
        if len(repeats) > 1:
            return [b.op("Gather", x, b.ints(np.repeat(np.arange(len(repeats)), repeats).tolist(), "indices"),
                         axis=axis)]
        widened = b.unsqueeze(x, [axis + 1])
        tiled = b.op("Tile", widened, b.ints([1] * (axis + 1) + [repeats[0]] + [1] * (len(shape) - axis - 1),
                                            "multiples"))
        return [b.reshape(tiled, [0] * axis + [-1] + [int(d) for d in shape[axis + 1:] if isinstance(d, int)])]


class Gather(TensorFunction):
    """`tf.gather(params, indices, axis)` / `keras.ops.take(x, indices, axis)`: indices constant or an
    integer tensor; Keras' axis None takes from the flattened input (batch included), TensorFlow's is 0."""

    parameters = ("params", "indices", "axis", "batch_dims", "validate_indices", "flatten_without_axis")

    def flattens(self, args: Bound) -> bool:
        return bool(args.constant("flatten_without_axis", False)) and args.constant("axis") is None

    def check(self, node: Node, args: Bound) -> None:
        if args.constant("batch_dims", 0) != 0:
            raise args.refuse("batch_dims", "is not 0; only plain gathers convert")
        if args.is_tensor("indices"):
            if node.inputs[args.tensor("indices")].dtype not in ("int32", "int64"):
                raise args.refuse("indices", "is a tensor of non-integer values")
        elif constant_array(args, "indices", args.constant("indices")).dtype.kind not in "iu":
            raise args.refuse("indices", "must be integers")

    def axis(self, node: Node, args: Bound, rank: int) -> int:
        return normalized_axis(node, args.constant("axis", 0), rank)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("params")]
        if self.flattens(args) and len(shape) > 1:
            total = num_elements(shape)
            shape = (unknown(node, 0) if total is None else total,)
        axis = self.axis(node, args, len(shape))
        taken = operand_shape(args, "indices", args.values.get("indices"), input_shapes)
        size = shape[axis]
        if not args.is_tensor("indices") and isinstance(size, int):
            self._check_range(node, args, size)
        return [(*shape[:axis], *taken, *shape[axis + 1:])]

    def _check_range(self, node: Node, args: Bound, size: int) -> None:
        indices = constant_array(args, "indices", args.constant("indices"))
        if indices.size and not (-size <= indices.min() and indices.max() < size):
            raise ShapeError(f"{args.function} '{node.layer_name}' takes indices outside an axis of size {size}",
                             layer=node.layer_name, hint="indices must lie in [-size, size)")

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x = inputs[args.tensor("params")]
        rank = rank_of(node, args, "params")
        if self.flattens(args) and rank > 1:
            x, rank = b.reshape(x, [-1]), 1
        if args.is_tensor("indices"):
            indices = inputs[args.tensor("indices")]
        else:
            indices = b.ints(constant_array(args, "indices", args.constant("indices")).tolist(), "indices")
        return [b.op("Gather", x, indices, axis=self.axis(node, args, rank))]


CONCAT, STACK, SPLIT, UNSTACK, REPEAT, GATHER = Concat(), Stack(), Split(), Unstack(), Repeat(), Gather()

TF_FUNCTIONS["concat"] = Signature(CONCAT, ("values", "axis"))
TF_FUNCTIONS["stack"] = Signature(STACK, ("values", "axis"))
TF_FUNCTIONS["split"] = Signature(SPLIT, ("value", "num_or_size_splits", "axis", "num"))
TF_FUNCTIONS["unstack"] = Signature(UNSTACK, ("value", "num", "axis"))
TF_FUNCTIONS["repeat"] = Signature(REPEAT, ("input", "repeats", "axis"))
TF_FUNCTIONS["gather"] = Signature(GATHER, ("params", "indices", "validate_indices", "axis", "batch_dims"))
TF_FUNCTIONS["compat.v1.gather"] = Signature(GATHER, ("params", "indices", "validate_indices", "name", "axis",
                                                     "batch_dims"))

add_keras_op("Concatenate", Signature(CONCAT, ("xs",), rename={"xs": "values"}))
add_keras_op("Stack", Signature(STACK, ("x",), rename={"x": "values"}))
add_keras_op("Split", Signature(SPLIT, ("x",), rename={"x": "value"}))
add_keras_op("Unstack", Signature(UNSTACK, ("x",), rename={"x": "value"}))
add_keras_op("Repeat", Signature(REPEAT, ("x",), rename={"x": "input"}))
add_keras_op("Take", Signature(GATHER, ("x", "indices"), rename={"x": "params"},
                               fixed={"flatten_without_axis": True}))
