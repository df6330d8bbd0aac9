"""Reshapes: `tf.reshape` / Keras 3 `Reshape(newshape)` and `Ravel`, and `tf.shape` for shapes built in the graph.

The shape written in the file includes the batch axis (unlike the Reshape layer's target_shape); one -1 is
inferred. tf.keras code often builds it in the graph, `tf.reshape(x, [tf.shape(x)[0], -1, c])`: the call
then holds tensors (`tf.shape`, indexed) among its constants, and the ONNX shape is concatenated at run
time. Where such a tensor is an indexed `tf.shape` of a tensor of the model, its dims are that tensor's
(the batch axis stays the batch axis); otherwise they are open.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError
from converter.ir import Dim, Node, Shape
from converter.ir.graph import Tensor
from converter.ir.spec import TensorArg
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_functions import ONNX_TYPES, Bound, Signature, TensorFunction
from converter.layers.op_shape import unknown
from converter.layers.tf_op_layers import TF_FUNCTIONS

SHAPE_FUNCTIONS = ("shape", "compat.v1.shape")


class ShapeOf(TensorFunction):
    """`tf.shape(input, out_type)`: the run-time shape as a 1-D integer tensor."""

    parameters = ("input", "out_type")

    def out_type(self, args: Bound) -> str:
        out_type = args.constant("out_type", "int32")
        if out_type not in ("int32", "int64"):
            raise args.refuse("out_type", "is not int32 or int64")
        return str(out_type)

    def check(self, node: Node, args: Bound) -> None:
        self.out_type(args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [(len(input_shapes[args.tensor("input")]),)]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        return [self.out_type(args)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        shape = b.op("Shape", inputs[args.tensor("input")])
        return [shape if self.out_type(args) == "int64" else b.op("Cast", shape, to=ONNX_TYPES["int32"])]


def _traced_dims(tensor: Tensor) -> list[Dim] | None:
    """The dims a `tf.shape(t)` or `tf.shape(t)[k]` / `[i:j]` tensor holds, from t's shape; None otherwise."""
    producer = tensor.producer
    function = getattr(getattr(producer, "spec", None), "function", None)
    if producer is None or not producer.inputs:
        return None
    if function in SHAPE_FUNCTIONS:
        return list(producer.inputs[0].shape or ()) if producer.inputs[0].shape is not None else None
    if function != "__operators__.getitem":
        return None
    whole = _traced_dims(producer.inputs[0])
    key = producer.call.arg_kwargs.get("slice_spec")
    if whole is None:
        return None
    if isinstance(key, int) and not isinstance(key, bool) and -len(whole) <= key < len(whole):
        return [whole[key]]
    if isinstance(key, dict) and set(key) == {"start", "stop", "step"}:
        bounds = [key[k] for k in ("start", "stop", "step")]
        if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in bounds) and bounds[2] != 0:
            return whole[slice(*bounds)]
    return None


class Reshape(TensorFunction):
    """`tf.reshape(tensor, shape)` / `keras.ops.reshape(x, newshape)`."""

    parameters: tuple[str, ...] = ("tensor", "shape")

    def entries(self, args: Bound) -> list[Any]:
        """The shape's entries: sizes (one -1 at most) and integer tensors (scalars or 1-D)."""
        raw = args.values.get("shape")
        entries = raw if isinstance(raw, list) else [raw]
        sizes = [e for e in entries if not isinstance(e, TensorArg)]
        bad = [e for e in sizes if not isinstance(e, int) or isinstance(e, bool) or e < -1 or e == 0]
        if not entries or bad or sizes.count(-1) > 1:
            raise args.refuse("shape", "must be positive sizes (at most one -1) or integer tensors")
        return list(entries)

    def check(self, node: Node, args: Bound) -> None:
        self.entries(args)

    def dims(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Dim]:
        """The target's dims, -1 kept; a tensor entry's dims traced to a tf.shape, else open."""
        dims: list[Dim] = []
        for entry in self.entries(args):
            if not isinstance(entry, TensorArg):
                dims.append(entry)
                continue
            # dtypes are known from shape inference on (the graph is built with float32 placeholders)
            if node.inputs[entry.index].dtype not in ("int32", "int64"):
                raise args.refuse("shape", "holds a tensor of non-integer values")
            held = input_shapes[entry.index]
            traced = _traced_dims(node.inputs[entry.index])
            count = 1 if len(held) == 0 else held[0]
            if len(held) > 1 or not isinstance(count, int):
                raise args.refuse("shape", "holds a tensor whose length the model's shapes leave open")
            dims.extend(traced if traced is not None and len(traced) == count
                        else [unknown(node, len(dims) + i) for i in range(count)])
        return dims

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, dims = input_shapes[args.tensor("tensor")], self.dims(node, args, input_shapes)
        if -1 not in dims:
            _check_total(node, args, shape, dims)
            return [tuple(dims)]
        axis = dims.index(-1)
        return [(*dims[:axis], _inferred(node, args, shape, dims), *dims[axis + 1:])]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x, entries = inputs[args.tensor("tensor")], self.entries(args)
        if not any(isinstance(e, TensorArg) for e in entries):
            return [b.reshape(x, entries)]
        pieces = [b.reshape(b.op("Cast", inputs[e.index], to=ONNX_TYPES["int64"]), [-1])
                  if isinstance(e, TensorArg) else b.ints([e], "size") for e in entries]
        return [b.op("Reshape", x, b.op("Concat", *pieces, axis=0))]


def _check_total(node: Node, args: Bound, shape: Shape, dims: list[Dim]) -> None:
    if all(isinstance(d, int) for d in (*shape, *dims)):
        total, wanted = _product(shape), _product(dims)
        if total != wanted:
            raise ShapeError(f"{args.function} '{node.layer_name}' cannot reshape {shape} into {tuple(dims)}",
                             layer=node.layer_name, hint="the shape (batch included) must hold as many values")


def _inferred(node: Node, args: Bound, shape: Shape, dims: list[Dim]) -> Dim:
    """The -1's size: the input's dims left after the target's others (open dims matched by name)."""
    rest, known = list(shape), 1
    for dim in dims:
        if isinstance(dim, int):
            known *= 1 if dim == -1 else dim
        elif dim in rest:
            rest.remove(dim)
        else:
            return unknown(node, dims.index(-1))
    open_dims = [d for d in rest if not isinstance(d, int)]
    static = _product([d for d in rest if isinstance(d, int)])
    if not open_dims and static % known:
        raise ShapeError(f"{args.function} '{node.layer_name}': {shape} does not divide into {tuple(dims)}",
                         layer=node.layer_name, hint="the shape's known sizes must divide the input's values")
    if not open_dims:
        return static // known
    return open_dims[0] if len(open_dims) == 1 and static == known else unknown(node, dims.index(-1))


def _product(dims: Any) -> int:
    total = 1
    for dim in dims:
        total *= int(dim)
    return total


class Ravel(Reshape):
    """`keras.ops.ravel(x)`: every value, batch included, on one axis."""

    parameters = ("tensor",)

    def entries(self, args: Bound) -> list[Any]:
        return [-1]


RESHAPE, SHAPE = Reshape(), ShapeOf()

TF_FUNCTIONS["reshape"] = Signature(RESHAPE, ("tensor", "shape"))
TF_FUNCTIONS["shape"] = Signature(SHAPE, ("input", "out_type"))
TF_FUNCTIONS["compat.v1.shape"] = Signature(SHAPE, ("input", "name", "out_type"))
add_keras_op("Reshape", Signature(RESHAPE, ("x",), rename={"x": "tensor", "newshape": "shape"}))
add_keras_op("Ravel", Signature(Ravel(), ("x",), rename={"x": "tensor"}))
