"""Reductions over axes: tf.math.reduce_* / argmax / argmin / l2_normalize / cumsum in tf.keras op layers,
keras.ops Sum / Mean / Max / Min / Prod / All / Argmax / Std / Var / Logsumexp / Normalize / Cumsum ...
in Keras 3 files.

`axis` is None (every axis, the batch's too: the result is a scalar), an int, or a list of ints;
`keepdims` keeps reduced axes as size 1. Keras 3's `Any` keeps its mask handler (mask_layers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_elementwise import FLOATS
from converter.layers.op_functions import ONNX_TYPES, Bound, Signature, TensorFunction, normalized_axis
from converter.layers.tf_op_layers import TF_FUNCTIONS

# build(builder, x (already in the reduction's dtype), axes, keepdims, bound arguments) -> the output.
ReduceBuild = Callable[[OpBuilder, str, list[int], bool, Bound], str]


def _rank(node: Node, args: Bound) -> int:
    return len(node.inputs[args.tensor("x")].shape or ())


def check_axes(args: Bound, name: str = "axis", optional: bool = True) -> None:
    """At the boundary (ranks are not known yet): `name` is None, an int, or a list of ints."""
    axis = args.constant(name)
    items = axis if isinstance(axis, list) else [axis]
    if (axis is None and optional) or all(isinstance(a, int) and not isinstance(a, bool) for a in items):
        return
    raise args.refuse(name, "is not an integer axis or a list of them")


def reduced_axes(node: Node, args: Bound, name: str = "axis") -> list[int]:
    """The axes `axis` names, sorted; None is every axis. Repeated axes are refused."""
    rank, axis = _rank(node, args), args.constant(name)
    if axis is None:
        return list(range(rank))
    axes = [normalized_axis(node, a, rank, name) for a in (axis if isinstance(axis, list) else [axis])]
    if len(set(axes)) != len(axes):
        raise args.refuse(name, "names an axis twice")
    return sorted(axes)


class Reduce(TensorFunction):
    """A reduction over `axis` with `keepdims`; `floating` computes an integer tensor in float32 (Keras 3's
    mean / std / var), `logical` reads the tensor as bool (any / all). Options that must keep their default
    (Keras 3 Max's `initial`, Prod's `dtype`) are refused otherwise."""

    def __init__(self, build: ReduceBuild, floating: bool = False, logical: bool = False,
                 fixed_none: tuple[str, ...] = (), refuse_integers: bool = False, result: str | None = None) -> None:
        self.build = build
        self.result = result  # a fixed output dtype (count_nonzero's)
        self.floating = floating
        self.logical = logical
        self.fixed_none = fixed_none
        self.refuse_integers = refuse_integers
        self.parameters = ("x", "axis", "keepdims", *fixed_none)

    def check(self, node: Node, args: Bound) -> None:
        args.tensor("x")
        check_axes(args)
        if not isinstance(args.constant("keepdims", False), bool):
            raise args.refuse("keepdims", "is not true or false")
        for name in self.fixed_none:
            if args.constant(name) is not None:
                raise args.refuse(name, "is set; only its default (None) converts")
        if self.refuse_integers and self._input_dtype(node, args) not in FLOATS:
            raise args.refuse("x", "is an integer tensor: TensorFlow's integer mean truncates, which kconvert "
                                   "does not convert; cast to float first")

    def _input_dtype(self, node: Node, args: Bound) -> str:
        return node.inputs[args.tensor("x")].dtype

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, axes = input_shapes[args.tensor("x")], reduced_axes(node, args)
        keep = args.constant("keepdims", False)
        return [tuple(1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes)]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        if self.logical or self.result:
            return [self.result or "bool"]
        dtype = self._input_dtype(node, args)
        return ["float32" if self.floating and dtype not in FLOATS else dtype]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x, dtype = inputs[args.tensor("x")], self._input_dtype(node, args)
        axes, keep = reduced_axes(node, args), bool(args.constant("keepdims", False))
        if not axes:
            return [x]
        if self.logical:  # as float 0/1: onnxruntime's ReduceMax/ReduceMin take no bool
            as_bool = x if dtype == "bool" else b.op("Cast", x, to=ONNX_TYPES["bool"])
            reduced = self.build(b, b.op("Cast", as_bool, to=ONNX_TYPES["float32"]), axes, keep, args)
            return [b.op("Cast", reduced, to=ONNX_TYPES["bool"])]
        if self.floating and dtype not in FLOATS:
            x = b.op("Cast", x, to=ONNX_TYPES["float32"])
        return [self.build(b, x, axes, keep, args)]


def _onnx_reduce(op_type: str) -> ReduceBuild:
    return lambda b, x, axes, keep, args: b.reduce(op_type, x, axes, keep)


def _count_nonzero(dtype: str) -> ReduceBuild:
    def build(b: OpBuilder, x: str, axes: list[int], keep: bool, args: Bound) -> str:
        zero = b.const(np.zeros((), args.node.inputs[args.tensor("x")].dtype), "zero", None)
        nonzero = b.op("Cast", b.op("Not", b.op("Equal", x, zero)), to=ONNX_TYPES[dtype])
        return b.reduce("ReduceSum", nonzero, axes, keep)
    return build


def _variance(b: OpBuilder, x: str, axes: list[int], keep: bool, args: Bound) -> str:
    # Population variance (ddof 0), as tf.math.reduce_variance and keras.ops.var.
    centred = b.op("Sub", x, b.reduce("ReduceMean", x, axes, True))
    return b.reduce("ReduceMean", b.op("Mul", centred, centred), axes, keep)


def _std(b: OpBuilder, x: str, axes: list[int], keep: bool, args: Bound) -> str:
    return b.op("Sqrt", _variance(b, x, axes, keep, args))


def _logsumexp(b: OpBuilder, x: str, axes: list[int], keep: bool, args: Bound) -> str:
    # As TensorFlow: shift by the (finite) maximum so exp cannot overflow.
    top = b.reduce("ReduceMax", x, axes, True)
    finite = b.op("Not", b.op("Or", b.op("IsNaN", top), b.op("IsInf", top)))
    shift = b.op("Where", finite, top, b.const(0.0, "zero"))
    total = b.reduce("ReduceSum", b.op("Exp", b.op("Sub", x, shift)), axes, keep)
    return b.op("Add", b.op("Log", total), shift if keep else b.squeeze(shift, axes))


class OneAxis(TensorFunction):
    """A function along one given axis; `axis=None` (over the flattened tensor) does not convert."""

    default_axis: int | None = None
    flattened = "the result over the flattened tensor does not convert"

    def axis(self, node: Node, args: Bound) -> int:
        self.check_axis(args)
        return normalized_axis(node, args.constant("axis", self.default_axis), _rank(node, args))

    def check_axis(self, args: Bound) -> None:
        if args.constant("axis", self.default_axis) is None:
            raise args.refuse("axis", f"is None: {self.flattened}")
        check_axes(args)


class ArgReduce(OneAxis):
    """argmax / argmin along one axis (the first index among ties); int64 or int32 indices."""

    parameters = ("x", "axis", "keepdims", "output_type")
    flattened = "the index into the flattened tensor does not convert"

    def __init__(self, op_type: str, default_axis: int | None, default_type: str) -> None:
        self.op_type = op_type
        self.default_axis = default_axis
        self.default_type = default_type

    def check(self, node: Node, args: Bound) -> None:
        self.check_axis(args)
        if args.constant("output_type", self.default_type) not in ("int32", "int64"):
            raise args.refuse("output_type", "is not int32 or int64")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape, axis = input_shapes[args.tensor("x")], self.axis(node, args)
        keep = args.constant("keepdims", False)
        return [tuple(1 if i == axis else d for i, d in enumerate(shape) if keep or i != axis)]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        return [args.constant("output_type", self.default_type)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        keep = int(bool(args.constant("keepdims", False)))
        indices = b.op(self.op_type, inputs[args.tensor("x")], axis=self.axis(node, args), keepdims=keep)
        wanted = args.constant("output_type", self.default_type)
        return [indices if wanted == "int64" else b.op("Cast", indices, to=ONNX_TYPES[wanted])]


class L2Normalize(TensorFunction):
    """x over its L2 norm along `axis`. TensorFlow: x * rsqrt(max(sum x², epsilon)), epsilon 1e-12;
    Keras 3 `normalize(order=2)`: x * min(rsqrt(sum x²), 1 / epsilon), epsilon 1e-7."""

    parameters = ("x", "axis", "epsilon", "order")

    def __init__(self, keras: bool) -> None:
        self.keras = keras

    def check(self, node: Node, args: Bound) -> None:
        check_axes(args)
        if args.constant("order", 2) != 2:
            raise args.refuse("order", "is not 2; only the L2 norm converts")
        if not isinstance(args.constant("epsilon", 1e-7), (int, float)):
            raise args.refuse("epsilon", "is not a number")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x = inputs[args.tensor("x")]
        square_sum = b.reduce("ReduceSum", b.op("Mul", x, x), reduced_axes(node, args), True)
        if self.keras:
            epsilon = float(args.constant("epsilon", 1e-7))
            inverse = b.op("Min", b.op("Reciprocal", b.op("Sqrt", square_sum)), b.const(1 / epsilon, "max"))
        else:
            floor = b.op("Max", square_sum, b.const(float(args.constant("epsilon", 1e-12)), "epsilon"))
            inverse = b.op("Reciprocal", b.op("Sqrt", floor))
        return [b.op("Mul", x, inverse)]


class CumulativeSum(OneAxis):
    """Running sums along one axis (`exclusive`, `reverse` as tf.math.cumsum)."""

    parameters = ("x", "axis", "exclusive", "reverse", "dtype")
    flattened = "the sums over the flattened tensor do not convert"

    def __init__(self, default_axis: int | None) -> None:
        self.default_axis = default_axis

    def check(self, node: Node, args: Bound) -> None:
        self.check_axis(args)
        for flag in ("exclusive", "reverse"):
            if not isinstance(args.constant(flag, False), bool):
                raise args.refuse(flag, "is not true or false")
        if args.constant("dtype") not in (None, node.inputs[args.tensor("x")].dtype):
            raise args.refuse("dtype", "differs from the tensor's dtype; cast first")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        exclusive, reverse = (int(bool(args.constant(k, False))) for k in ("exclusive", "reverse"))
        axis = b.const(np.asarray(self.axis(node, args), np.int64), "axis", np.int64)
        return [b.op("CumSum", inputs[args.tensor("x")], axis, exclusive=exclusive, reverse=reverse)]


TF_REDUCE = ("input_tensor", "axis", "keepdims")
TF_RENAME = {"input_tensor": "x"}

REDUCTIONS: dict[str, tuple[tuple[str, ...], Reduce]] = {
    # tf.math name -> (Keras 3 classes, function)
    "reduce_sum": (("Sum",), Reduce(_onnx_reduce("ReduceSum"))),
    "reduce_max": (("Max", "Amax"), Reduce(_onnx_reduce("ReduceMax"), fixed_none=("initial",))),
    "reduce_min": (("Min", "Amin"), Reduce(_onnx_reduce("ReduceMin"), fixed_none=("initial",))),
    "reduce_prod": (("Prod",), Reduce(_onnx_reduce("ReduceProd"), fixed_none=("dtype",))),
    "reduce_all": (("All",), Reduce(_onnx_reduce("ReduceMin"), logical=True)),
    "reduce_any": ((), Reduce(_onnx_reduce("ReduceMax"), logical=True)),
    "reduce_euclidean_norm": ((), Reduce(_onnx_reduce("ReduceL2"))),
}
# Keras 3 computes the mean / variance of integers in float32; TensorFlow keeps integers (refused).
FLOAT_REDUCTIONS: dict[str, tuple[tuple[str, ...], ReduceBuild]] = {
    "reduce_mean": (("Mean",), _onnx_reduce("ReduceMean")),
    "reduce_variance": (("Var",), _variance),
    "reduce_std": (("Std",), _std),
    "reduce_logsumexp": (("Logsumexp",), _logsumexp),
}

for _name, (_classes, _function) in REDUCTIONS.items():
    TF_FUNCTIONS[f"math.{_name}"] = Signature(_function, TF_REDUCE, rename=TF_RENAME)
    for _class in _classes:
        add_keras_op(_class, Signature(_function, ("x",)))
for _name, (_classes, _build) in FLOAT_REDUCTIONS.items():
    TF_FUNCTIONS[f"math.{_name}"] = Signature(Reduce(_build, refuse_integers=True), TF_REDUCE, rename=TF_RENAME)
    for _class in _classes:
        add_keras_op(_class, Signature(Reduce(_build, floating=True), ("x",)))
add_keras_op("Average", Signature(Reduce(_onnx_reduce("ReduceMean"), floating=True, fixed_none=("weights",)),
                                  ("x",)))

# tf.math.count_nonzero counts in int64 (its `dtype`), keras.ops.count_nonzero in int32.
TF_FUNCTIONS["math.count_nonzero"] = Signature(
    Reduce(_count_nonzero("int64"), result="int64", fixed_none=("dtype",)), ("input", "axis", "keepdims"),
    rename={"input": "x"})
add_keras_op("CountNonzero", Signature(Reduce(_count_nonzero("int32"), result="int32"), ("x",)))
TF_FUNCTIONS["math.argmax"] = Signature(ArgReduce("ArgMax", 0, "int64"), ("input", "axis"), rename={"input": "x"})
TF_FUNCTIONS["math.argmin"] = Signature(ArgReduce("ArgMin", 0, "int64"), ("input", "axis"), rename={"input": "x"})
add_keras_op("Argmax", Signature(ArgReduce("ArgMax", None, "int32"), ("x",)))
add_keras_op("Argmin", Signature(ArgReduce("ArgMin", None, "int32"), ("x",)))
TF_FUNCTIONS["math.l2_normalize"] = Signature(L2Normalize(keras=False), ("x", "axis", "epsilon"))
add_keras_op("Normalize", Signature(L2Normalize(keras=True), ("x",)))
TF_FUNCTIONS["math.cumsum"] = Signature(CumulativeSum(0), ("x", "axis", "exclusive", "reverse"))
add_keras_op("Cumsum", Signature(CumulativeSum(None), ("x",)))
