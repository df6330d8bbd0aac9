"""Less common elementwise functions built of several ONNX ops (atan2, hypot, heaviside, nan_to_num, cbrt)
and the fills shaped like a tensor (`zeros_like`, `ones_like`, `full_like`).
"""

from __future__ import annotations

import math

import numpy as np

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_elementwise import Ctx, Elementwise, binary, unary
from converter.layers.op_functions import ONNX_TYPES, Bound, Signature, TensorFunction, constant_input
from converter.layers.tf_op_layers import TF_FUNCTIONS

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _atan2(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    """atan2(y, x): atan(y / x) moved by ±pi into the left half-plane; 0 at the origin (as numpy)."""
    y, x = xs
    zero = ctx.number(b, 0, "zero")
    quotient = b.op("Atan", b.op("Div", y, x))
    turn = b.op("Where", b.op("Less", y, zero), ctx.number(b, -math.pi, "minus_pi"), ctx.number(b, math.pi, "pi"))
    shifted = b.op("Add", quotient, b.op("Where", b.op("Less", x, zero), turn, zero))
    origin = b.op("And", b.op("Equal", x, zero), b.op("Equal", y, zero))
    return b.op("Where", origin, zero, shifted)


def _hypot(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Sqrt", b.op("Add", b.op("Mul", xs[0], xs[0]), b.op("Mul", xs[1], xs[1])))


def _heaviside(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    """0 below zero, 1 above, the second operand at zero."""
    x, at_zero = xs
    zero, one = ctx.number(b, 0, "zero"), ctx.number(b, 1, "one")
    return b.op("Where", b.op("Less", x, zero), zero, b.op("Where", b.op("Greater", x, zero), one, at_zero))


def _nan_to_num(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    x = xs[0]
    out = b.op("Where", b.op("IsNaN", x), ctx.number(b, ctx.option("nan"), "nan"), x)
    out = b.op("Where", b.op("IsInf", x, detect_negative=0), ctx.number(b, ctx.option("posinf"), "posinf"), out)
    return b.op("Where", b.op("IsInf", x, detect_positive=0), ctx.number(b, ctx.option("neginf"), "neginf"), out)


def _cbrt(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    root = b.op("Pow", b.op("Abs", xs[0]), ctx.number(b, 1 / 3, "third"))
    return b.op("Mul", b.op("Sign", xs[0]), root)


class FillLike(TensorFunction):
    """A tensor of x's shape filled with one value, in `dtype` (x's by default). Expand of the value to
    x's runtime shape: the values of x never enter (a NaN in x stays out of zeros_like)."""

    parameters = ("x", "fill_value", "dtype")

    def __init__(self, value: float | None) -> None:
        self.value = value  # None: the call's fill_value

    def check(self, node: Node, args: Bound) -> None:
        args.tensor("x")
        fill = self.value if self.value is not None else args.constant("fill_value")
        if not isinstance(fill, (int, float)) or isinstance(fill, bool):
            raise args.refuse("fill_value", "is not a number")
        if args.constant("dtype") not in (None, *ONNX_TYPES):
            raise args.refuse("dtype", "is not a dtype kconvert converts to")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        dtype = args.constant("dtype") or node.inputs[args.tensor("x")].dtype
        return ["float32" if dtype in ("float16", "float64") else dtype]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        return True

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        fill = self.value if self.value is not None else args.constant("fill_value")
        value = constant_input(b, fill, self.output_dtypes(node, args)[0], "fill")
        return [b.op("Expand", value, b.op("Shape", inputs[args.tensor("x")]))]


# TensorFlow names the operands (y, x); Keras 3 arctan2(x1, x2) has the same order.
ATAN2 = Elementwise(("y", "x"), _atan2, floating=True)
TF_FUNCTIONS["math.atan2"] = Signature(ATAN2, ("y", "x"))
add_keras_op("Arctan2", Signature(ATAN2, ("x1", "x2"), rename={"x1": "y", "x2": "x"}))
add_keras_op("Hypot", Signature(binary(_hypot, floating=True), ("x1", "x2"), rename={"x1": "x", "x2": "y"}))
add_keras_op("Heaviside", Signature(binary(_heaviside), ("x1", "x2"), rename={"x1": "x", "x2": "y"}))
add_keras_op("NanToNum", Signature(unary(_nan_to_num, {"nan": 0.0, "posinf": FLOAT32_MAX, "neginf": -FLOAT32_MAX}),
                                   ("x",)))
add_keras_op("Cbrt", Signature(unary(_cbrt), ("x",)))
TF_FUNCTIONS["zeros_like"] = Signature(FillLike(0), ("input", "dtype"), rename={"input": "x"})
TF_FUNCTIONS["ones_like"] = Signature(FillLike(1), ("input", "dtype"), rename={"input": "x"})
add_keras_op("ZerosLike", Signature(FillLike(0), ("x",)))
add_keras_op("OnesLike", Signature(FillLike(1), ("x",)))
add_keras_op("FullLike", Signature(FillLike(None), ("x", "fill_value")))
