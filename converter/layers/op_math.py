"""Elementwise math: arithmetic, the unary functions of tf.math / keras.ops, comparisons, logic, where,
cast and clip, bound to their tf.keras names (`math.add`, `__operators__.add` for `x + 1`) and Keras 3
op classes (`Subtract`, `TrueDivide`, `Where`, `Cast`, `Clip`).

Keras 3's Add, Multiply, Maximum and Minimum op nodes keep their merge-layer handlers (merge.py), and
NotEqual / Any theirs (mask_layers.py): the masking pass and the Keras 3 writer rely on them.
"""

from __future__ import annotations

import math
from typing import Any

from converter.ir import Node, Shape
from converter.ir.spec import TensorArg
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_elementwise import (
    FLOATS,
    Build,
    Ctx,
    Elementwise,
    binary,
    common_dtype,
    one_op,
    operand,
    operand_shape,
    unary,
)
from converter.layers.op_functions import ONNX_TYPES, Bound, Signature, TensorFunction
from converter.layers.tf_op_layers import TF_FUNCTIONS

TF_BINARY = ("x", "y")
K3_BINARY = ("x1", "x2")
K3_RENAME = {"x1": "x", "x2": "y"}


def _floor_div(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    if ctx.dtype in FLOATS:
        return b.op("Floor", b.op("Div", *xs))
    # ONNX Div truncates integers; floor division steps one down where the remainder's sign differs.
    quotient = b.op("Div", *xs)
    step = b.op("Cast", _remainder_sign_differs(b, xs, ctx), to=ONNX_TYPES[ctx.dtype])
    return b.op("Sub", quotient, step)


def _remainder_sign_differs(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    """Where C's fmod(x, y) is non-zero with a sign other than y's (floor division and modulo adjust)."""
    remainder = b.op("Mod", *xs, fmod=1)
    zero = ctx.number(b, 0, "zero")
    nonzero = b.op("Not", b.op("Equal", remainder, zero))
    signs = b.op("Xor", b.op("Less", remainder, zero), b.op("Less", xs[1], zero))
    return b.op("And", nonzero, signs)


def _floor_mod(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    if ctx.dtype not in FLOATS:
        return b.op("Mod", *xs, fmod=0)  # integers: the divisor's sign, as Python's %
    # As TensorFlow's FloorMod: fmod, plus y where the remainder's sign differs from y's.
    remainder = b.op("Mod", *xs, fmod=1)
    return b.op("Where", _remainder_sign_differs(b, xs, ctx), b.op("Add", remainder, xs[1]), remainder)


def _trunc_div(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    quotient = b.op("Div", *xs)
    return _trunc(b, [quotient], ctx) if ctx.dtype in FLOATS else quotient


def _trunc(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    if ctx.dtype not in FLOATS:
        return xs[0]
    return b.op("Mul", b.op("Sign", xs[0]), b.op("Floor", b.op("Abs", xs[0])))


def _zero_where_y_zero(op_type: str) -> Build:
    def build(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
        zero = ctx.number(b, 0, "zero")
        return b.op("Where", b.op("Equal", xs[1], zero), zero, b.op(op_type, *xs))
    return build


def _xlogy(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    zero = ctx.number(b, 0, "zero")
    return b.op("Where", b.op("Equal", xs[0], zero), zero, b.op("Mul", xs[0], b.op("Log", xs[1])))


def _logaddexp(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    # max + log(exp(x - max) + exp(y - max)): no overflow for large operands.
    top = b.op("Max", *xs)
    total = b.op("Add", b.op("Exp", b.op("Sub", xs[0], top)), b.op("Exp", b.op("Sub", xs[1], top)))
    return b.op("Add", top, b.op("Log", total))


def _square(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Mul", xs[0], xs[0])


def _squared_difference(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    difference = b.op("Sub", *xs)
    return b.op("Mul", difference, difference)


def _then(*op_types: str) -> Build:
    """ONNX ops applied one after the other."""
    def build(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
        out = xs[0]
        for op_type in op_types:
            out = b.op(op_type, out)
        return out
    return build


def _plus_one_log(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Log", b.op("Add", xs[0], ctx.number(b, 1, "one")))


def _exp_minus_one(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Sub", b.op("Exp", xs[0]), ctx.number(b, 1, "one"))


def _one_minus(op_type: str) -> Build:
    return lambda b, xs, ctx: b.op("Sub", ctx.number(b, 1, "one"), b.op(op_type, xs[0]))


def _log_base(base: float) -> Build:
    return lambda b, xs, ctx: b.op("Div", b.op("Log", xs[0]), ctx.number(b, math.log(base), "ln_base"))


def _exp2(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Pow", ctx.number(b, 2, "two"), xs[0])


def _is_finite(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Not", b.op("Or", b.op("IsNaN", xs[0]), b.op("IsInf", xs[0])))


def _exact_for_integers(op_type: str) -> Build:
    """Floor, ceil, round: integers are already whole."""
    return lambda b, xs, ctx: b.op(op_type, xs[0]) if ctx.dtype in FLOATS else xs[0]


def _round_decimals(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    """Keras 3 `round(x, decimals)`: half to even at 10**-decimals, as numpy."""
    decimals = ctx.option("decimals")
    if not isinstance(decimals, int) or isinstance(decimals, bool):
        raise ctx.args.refuse("decimals", "is not an integer")
    if decimals == 0 or ctx.dtype not in FLOATS:
        return _exact_for_integers("Round")(b, xs, ctx)
    scale = ctx.number(b, 10.0 ** decimals, "scale")
    return b.op("Div", b.op("Round", b.op("Mul", xs[0], scale)), scale)


def _not_equal(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Not", b.op("Equal", *xs))


ADD = binary(one_op("Add"))
SUBTRACT = binary(one_op("Sub"))
MULTIPLY = binary(one_op("Mul"))
# Division of integers is float32 division (Keras 3's result; TensorFlow's float64 has the same values
# for the ranges models divide).
DIVIDE = binary(one_op("Div"), floating=True)
FLOOR_DIVIDE = binary(_floor_div)
FLOOR_MOD = binary(_floor_mod)
TRUNCATE_DIVIDE = binary(_trunc_div)
TRUNCATE_MOD = binary(one_op("Mod", fmod=1))
POWER = binary(one_op("Pow"))
MAXIMUM = binary(one_op("Max"))
MINIMUM = binary(one_op("Min"))
SQUARED_DIFFERENCE = binary(_squared_difference)

UNARY_FLOAT: dict[str, tuple[str, Any]] = {
    # tf.math name -> (Keras 3 class, build)
    "sqrt": ("Sqrt", one_op("Sqrt")), "rsqrt": ("Rsqrt", _then("Sqrt", "Reciprocal")),
    "exp": ("Exp", one_op("Exp")), "log": ("Log", one_op("Log")), "log1p": ("Log1p", _plus_one_log),
    "expm1": ("Expm1", _exp_minus_one), "reciprocal": ("Reciprocal", one_op("Reciprocal")),
    "sin": ("Sin", one_op("Sin")), "cos": ("Cos", one_op("Cos")), "tan": ("Tan", one_op("Tan")),
    "asin": ("Arcsin", one_op("Asin")), "acos": ("Arccos", one_op("Acos")), "atan": ("Arctan", one_op("Atan")),
    "sinh": ("Sinh", one_op("Sinh")), "cosh": ("Cosh", one_op("Cosh")), "asinh": ("Arcsinh", one_op("Asinh")),
    "acosh": ("Arccosh", one_op("Acosh")), "atanh": ("Arctanh", one_op("Atanh")),
    "tanh": ("Tanh", one_op("Tanh")), "sigmoid": ("", one_op("Sigmoid")), "erf": ("Erf", one_op("Erf")),
    "erfc": ("", _one_minus("Erf")),
}
UNARY_ANY: dict[str, tuple[str, Any]] = {
    "negative": ("Negative", one_op("Neg")), "abs": ("Absolute", one_op("Abs")),
    "square": ("Square", _square), "sign": ("Sign", one_op("Sign")),
    "floor": ("Floor", _exact_for_integers("Floor")), "ceil": ("Ceil", _exact_for_integers("Ceil")),
    "round": ("", _exact_for_integers("Round")), "rint": ("", _exact_for_integers("Round")),
}
UNARY_TEST: dict[str, tuple[str, Any]] = {
    "is_nan": ("Isnan", one_op("IsNaN")), "is_inf": ("Isinf", one_op("IsInf")),
    "is_finite": ("Isfinite", _is_finite),
}
COMPARISONS: dict[str, tuple[str, Any]] = {
    "equal": ("Equal", one_op("Equal")), "not_equal": ("", _not_equal), "less": ("Less", one_op("Less")),
    "less_equal": ("LessEqual", one_op("LessOrEqual")), "greater": ("Greater", one_op("Greater")),
    "greater_equal": ("GreaterEqual", one_op("GreaterOrEqual")),
}
LOGICAL: dict[str, tuple[str, Any]] = {
    "logical_and": ("LogicalAnd", one_op("And")), "logical_or": ("LogicalOr", one_op("Or")),
}


class Select(Elementwise):
    """`where(condition, x, y)`: x where the condition holds, else y (broadcast); x and y share a dtype."""

    def __init__(self) -> None:
        super().__init__(("condition", "x", "y"), one_op("Where"))

    def check(self, node: Node, args: Bound) -> None:
        if not args.has("x") and not args.has("y"):
            raise args.refuse("x", "is missing: where(condition) alone returns indices, which kconvert does "
                                   "not convert")
        super().check(node, args)

    def compute_dtype(self, node: Node, args: Bound) -> str:
        return common_dtype(node, args, ("x", "y"))

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        dtype = self.compute_dtype(node, args)
        condition = operand(b, node, args, "condition", inputs, "bool")
        return [b.op("Where", condition, *(operand(b, node, args, n, inputs, dtype) for n in ("x", "y")))]


class CompatSelect(Select):
    """`tf.compat.v1.where(condition, x, y)`: as where for a condition of x's shape; its other form (a
    vector condition choosing rows) is refused."""

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        ranks = {len(operand_shape(args, n, input_shapes)) for n in self.operands if args.is_tensor(n)}
        if len(ranks) > 1:
            raise args.refuse("condition", "has another rank than x and y: choosing rows by a vector "
                                           "condition does not convert")
        return super().output_shapes(node, args, input_shapes)


class CastTo(TensorFunction):
    """`cast(x, dtype)`. Floating targets other than float32 stay float32 tensors (kconvert computes in
    float32, as Keras layers autocast their inputs): float16 rounds to float16 precision and back."""

    parameters = ("x", "dtype")

    def check(self, node: Node, args: Bound) -> None:
        args.tensor("x")
        dtype = args.constant("dtype")
        if dtype not in ONNX_TYPES:
            raise args.refuse("dtype", "is not a dtype kconvert converts to ("
                                       + ", ".join(sorted(ONNX_TYPES)) + ")")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        dtype = args.constant("dtype")
        return ["float32" if dtype in FLOATS else dtype]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        return True

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x, dtype = inputs[args.tensor("x")], args.constant("dtype")
        if dtype == "float16":
            return [b.op("Cast", b.op("Cast", x, to=ONNX_TYPES["float16"]), to=ONNX_TYPES["float32"])]
        target = "float32" if dtype in FLOATS else dtype
        return [x if node.inputs[args.tensor("x")].dtype == target else b.op("Cast", x, to=ONNX_TYPES[target])]


def _clip(lower_first: bool) -> Build:
    """TensorFlow's clip_by_value is min(max_value) then max(min_value); numpy's clip the reverse (they
    differ only when the bounds cross)."""
    def build(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
        x, low, high = xs
        if lower_first:
            return b.op("Min", b.op("Max", x, low), high)
        return b.op("Max", b.op("Min", x, high), low)
    return build


class AddN(TensorFunction):
    """`tf.math.add_n([a, b, ...])`: the sum of a list of tensors of one shape."""

    parameters = ("inputs",)

    def check(self, node: Node, args: Bound) -> None:
        if not isinstance(args.values.get("inputs"), list) or not self._positions(args):
            raise args.refuse("inputs", "is not a list of tensors")

    def _positions(self, args: Bound) -> list[int]:
        items = args.values.get("inputs") or []
        if not all(isinstance(v, TensorArg) for v in items):
            raise args.refuse("inputs", "holds a constant; add_n sums tensors")
        return [v.index for v in items]

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[self._positions(args)[0]]]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        return True

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        positions = self._positions(args)
        return [inputs[positions[0]] if len(positions) == 1 else b.op("Sum", *(inputs[i] for i in positions))]


def _register_binary(tf_names: tuple[str, ...], keras_class: str, function: TensorFunction) -> None:
    for name in tf_names:
        TF_FUNCTIONS[name] = Signature(function, TF_BINARY)
    if keras_class:
        add_keras_op(keras_class, Signature(function, K3_BINARY, rename=K3_RENAME))


def _register_unary(table: dict[str, tuple[str, Any]], **kind: Any) -> None:
    for tf_name, (keras_class, build) in table.items():
        function = unary(build, **kind)
        TF_FUNCTIONS[f"math.{tf_name}"] = Signature(function, ("x",))
        if keras_class:
            add_keras_op(keras_class, Signature(function, ("x",)))


_register_binary(("__operators__.add", "math.add"), "", ADD)
_register_binary(("math.subtract",), "Subtract", SUBTRACT)
_register_binary(("math.multiply",), "", MULTIPLY)
_register_binary(("math.truediv",), "TrueDivide", DIVIDE)
add_keras_op("Divide", Signature(DIVIDE, K3_BINARY, rename=K3_RENAME))
_register_binary(("compat.v1.floor_div",), "FloorDivide", FLOOR_DIVIDE)
_register_binary(("math.floormod",), "Mod", FLOOR_MOD)
_register_binary(("truncatediv",), "", TRUNCATE_DIVIDE)
_register_binary(("truncatemod",), "Fmod", TRUNCATE_MOD)
_register_binary(("math.pow",), "Power", POWER)
_register_binary(("math.maximum",), "", MAXIMUM)
_register_binary(("math.minimum",), "", MINIMUM)
_register_binary(("math.squared_difference",), "", SQUARED_DIFFERENCE)
_register_binary(("math.divide_no_nan",), "", binary(_zero_where_y_zero("Div"), floating=True))
_register_binary(("math.multiply_no_nan",), "", binary(_zero_where_y_zero("Mul")))
_register_binary(("math.xlogy",), "", binary(_xlogy, floating=True))
_register_binary((), "Logaddexp", binary(_logaddexp, floating=True))
for _name, (_class, _build) in COMPARISONS.items():
    _register_binary((f"math.{_name}",), _class, binary(_build, result="bool"))
for _name, (_class, _build) in LOGICAL.items():
    _register_binary((f"math.{_name}",), _class, binary(_build, operand_dtype="bool"))
_register_binary((), "LogicalXor", binary(one_op("Xor"), operand_dtype="bool"))
_register_unary(UNARY_FLOAT)
_register_unary(UNARY_ANY, floating=False)
_register_unary(UNARY_TEST, result="bool")
LOGICAL_NOT = Elementwise(("x",), one_op("Not"), operand_dtype="bool")
TF_FUNCTIONS["math.logical_not"] = Signature(LOGICAL_NOT, ("x",))
add_keras_op("LogicalNot", Signature(LOGICAL_NOT, ("x",)))
for _class, _build in (("Log2", _log_base(2)), ("Log10", _log_base(10)), ("Exp2", _exp2), ("Trunc", _trunc)):
    add_keras_op(_class, Signature(unary(_build, floating=_class != "Trunc"), ("x",)))
add_keras_op("Round", Signature(unary(_round_decimals, {"decimals": 0}, floating=False), ("x",)))

TF_FUNCTIONS["compat.v1.math.scalar_mul"] = Signature(MULTIPLY, ("scalar", "x"), rename={"scalar": "y"})
TF_FUNCTIONS["math.add_n"] = Signature(AddN(), ("inputs",))
TF_FUNCTIONS["where"] = Signature(Select(), ("condition", "x", "y"))
TF_FUNCTIONS["compat.v1.where"] = Signature(CompatSelect(), ("condition", "x", "y"))
add_keras_op("Where", Signature(Select(), ("condition", "x1", "x2"), rename=K3_RENAME))
TF_FUNCTIONS["cast"] = Signature(CastTo(), ("x", "dtype"))
add_keras_op("Cast", Signature(CastTo(), ("x",)))
TF_FUNCTIONS["clip_by_value"] = Signature(
    Elementwise(("x", "low", "high"), _clip(lower_first=False), floating=False),
    ("t", "clip_value_min", "clip_value_max"), rename={"t": "x", "clip_value_min": "low", "clip_value_max": "high"})
add_keras_op("Clip", Signature(Elementwise(("x", "low", "high"), _clip(lower_first=True)), ("x",),
                               rename={"x_min": "low", "x_max": "high"}))
