"""Activation functions called on tensors: tf.nn (`nn.relu6`, `nn.gelu`, `nn.softmax`, ...) in tf.keras
op layers and keras.ops.nn (`Relu`, `HardSilu`, `Softmax`, ...) op nodes in Keras 3 files.

Defaults are each front end's: `tf.nn.gelu` is exact unless approximate=True, `keras.ops.gelu` approximate
unless approximate=False; tf.nn.leaky_relu's `alpha` is Keras 3's `negative_slope`. Formulas follow
Keras 3's numpy backend (keras/src/backend/numpy/nn.py) and TensorFlow's kernels.
"""

from __future__ import annotations

import math

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_elementwise import Build, Ctx, Elementwise, one_op, operand, unary
from converter.layers.op_functions import Bound, Signature, TensorFunction, normalized_axis
from converter.layers.tf_op_layers import TF_FUNCTIONS


def _relu6(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Min", b.op("Relu", xs[0]), ctx.number(b, 6, "six"))


def _gelu(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    x = xs[0]
    if ctx.option("approximate"):
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = b.op("Mul", b.op("Mul", x, x), x)
        inner = b.op("Add", x, b.op("Mul", cube, ctx.number(b, 0.044715, "k")))
        core = b.op("Tanh", b.op("Mul", inner, ctx.number(b, math.sqrt(2 / math.pi), "s")))
    else:
        core = b.op("Erf", b.op("Mul", x, ctx.number(b, 1 / math.sqrt(2), "s")))
    half_x = b.op("Mul", x, ctx.number(b, 0.5, "half"))
    return b.op("Mul", half_x, b.op("Add", core, ctx.number(b, 1, "one")))


def _silu(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    beta = ctx.option("beta")
    scaled = xs[0] if beta == 1 else b.op("Mul", xs[0], ctx.number(b, beta, "beta"))
    return b.op("Mul", xs[0], b.op("Sigmoid", scaled))


def _alpha_op(op_type: str, option: str = "alpha") -> Build:
    """One ONNX op whose `alpha` attribute is one of the function's options (LeakyRelu's negative_slope)."""
    return lambda b, xs, ctx: b.op(op_type, xs[0], alpha=float(ctx.option(option)))


def _hard_sigmoid(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("HardSigmoid", xs[0], alpha=1 / 6, beta=0.5)


def _hard_silu(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Mul", xs[0], _hard_sigmoid(b, xs, ctx))


def _log_sigmoid(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Neg", b.op("Softplus", b.op("Neg", xs[0])))


def _hard_tanh(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Min", b.op("Max", xs[0], ctx.number(b, -1, "low")), ctx.number(b, 1, "high"))


def _shrink(soft: bool) -> Build:
    def build(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
        threshold = float(ctx.option("threshold"))
        return b.op("Shrink", xs[0], lambd=threshold, bias=threshold if soft else 0.0)
    return build


def _tanh_shrink(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    return b.op("Sub", xs[0], b.op("Tanh", xs[0]))


def _squareplus(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    root = b.op("Sqrt", b.op("Add", b.op("Mul", xs[0], xs[0]), ctx.number(b, ctx.option("b"), "b")))
    return b.op("Div", b.op("Add", xs[0], root), ctx.number(b, 2, "two"))


def _sparse_plus(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    # 0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1
    x, one = xs[0], ctx.number(b, 1, "one")
    shifted = b.op("Add", x, one)
    middle = b.op("Mul", b.op("Mul", shifted, shifted), ctx.number(b, 0.25, "quarter"))
    upper = b.op("Where", b.op("Less", x, one), middle, x)
    return b.op("Where", b.op("LessOrEqual", x, ctx.number(b, -1, "minus_one")), ctx.number(b, 0, "zero"), upper)


def _threshold(b: OpBuilder, xs: list[str], ctx: Ctx) -> str:
    above = b.op("Greater", xs[0], ctx.number(b, ctx.option("threshold"), "threshold"))
    return b.op("Where", above, xs[0], ctx.number(b, ctx.option("default_value"), "default"))


class AlongAxis(TensorFunction):
    """softmax / log_softmax over one axis (ONNX's opset-13 Softmax normalises over that axis alone)."""

    parameters = ("x", "axis")

    def __init__(self, op_type: str, default_axis: int = -1) -> None:
        self.op_type = op_type
        self.default_axis = default_axis

    def axis(self, node: Node, args: Bound) -> int:
        rank = len(node.inputs[args.tensor("x")].shape or ())
        return normalized_axis(node, args.constant("axis", self.default_axis), rank)

    def check(self, node: Node, args: Bound) -> None:
        axis = args.constant("axis", self.default_axis)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise args.refuse("axis", "is not an integer axis")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        return [b.op(self.op_type, inputs[args.tensor("x")], axis=self.axis(node, args))]


class GatedLinear(AlongAxis):
    """Keras 3 `glu(x, axis)`: the first half times the sigmoid of the second half along the axis."""

    def __init__(self) -> None:
        super().__init__("Glu")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = list(input_shapes[args.tensor("x")])
        axis = self.axis(node, args)
        size = shape[axis]
        if not isinstance(size, int) or size % 2:
            raise args.refuse("axis", f"has size {size}; glu needs a known, even size")
        shape[axis] = size // 2
        return [tuple(shape)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        axis = self.axis(node, args)
        half = int((node.inputs[args.tensor("x")].shape or ())[axis] or 0) // 2
        first, second = b.split(inputs[args.tensor("x")], [half, half], axis)
        return [b.op("Mul", first, b.op("Sigmoid", second))]


class BiasAdd(Elementwise):
    """`tf.nn.bias_add(value, bias, data_format)`: a rank-1 bias added along the channel axis (the last,
    or axis 1 for an NC... data_format)."""

    def __init__(self) -> None:
        super().__init__(("x", "bias"), one_op("Add"), {"data_format": None}, floating=False)

    def channels_first(self, args: Bound) -> bool:
        data_format = args.constant("data_format")
        if data_format is not None and not isinstance(data_format, str):
            raise args.refuse("data_format", "is not a data format name")
        return isinstance(data_format, str) and data_format.startswith("NC")

    def check(self, node: Node, args: Bound) -> None:
        super().check(node, args)
        self.channels_first(args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[args.tensor("x")]]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        return False

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        dtype = self.compute_dtype(node, args)
        x, bias = (operand(b, node, args, n, inputs, dtype) for n in ("x", "bias"))
        rank = len(node.inputs[args.tensor("x")].shape or ())
        if self.channels_first(args) and rank > 2:
            bias = b.unsqueeze(bias, list(range(1, rank - 1)))
        return [b.op("Add", x, bias)]


RELU = unary(one_op("Relu"), floating=False)
RELU6 = unary(_relu6, floating=False)
SELU = unary(one_op("Selu"))
SIGMOID = unary(one_op("Sigmoid"))
SOFTPLUS = unary(one_op("Softplus"))
SOFTSIGN = unary(one_op("Softsign"))
LOG_SIGMOID = unary(_log_sigmoid)


def _tf(name: str, function: TensorFunction, rename: dict[str, str] | None = None) -> None:
    TF_FUNCTIONS[name] = Signature(function, ("features",), rename={"features": "x", **(rename or {})})


_tf("nn.relu", RELU)
_tf("nn.relu6", RELU6)
_tf("nn.selu", SELU)
_tf("nn.softsign", SOFTSIGN)
_tf("math.softplus", SOFTPLUS)
_tf("nn.elu", unary(_alpha_op("Elu"), {"alpha": 1.0}))
_tf("nn.gelu", unary(_gelu, {"approximate": False}))
_tf("nn.silu", unary(_silu, {"beta": 1.0}))
_tf("nn.leaky_relu", unary(_alpha_op("LeakyRelu"), {"alpha": 0.2}))
TF_FUNCTIONS["math.log_sigmoid"] = Signature(LOG_SIGMOID, ("x",))
TF_FUNCTIONS["nn.softmax"] = Signature(AlongAxis("Softmax"), ("logits", "axis"), rename={"logits": "x"})
TF_FUNCTIONS["nn.log_softmax"] = Signature(AlongAxis("LogSoftmax"), ("logits", "axis"), rename={"logits": "x"})
TF_FUNCTIONS["nn.bias_add"] = Signature(BiasAdd(), ("value", "bias", "data_format"), rename={"value": "x"})

KERAS_ACTIVATIONS: dict[str, TensorFunction] = {
    "Relu": RELU, "Relu6": RELU6, "Selu": SELU, "Sigmoid": SIGMOID, "Softplus": SOFTPLUS, "Softsign": SOFTSIGN,
    "LogSigmoid": LOG_SIGMOID, "Silu": unary(_silu, {"beta": 1.0}),
    "Gelu": unary(_gelu, {"approximate": True}),
    "Elu": unary(_alpha_op("Elu"), {"alpha": 1.0}),
    "LeakyRelu": unary(_alpha_op("LeakyRelu", "negative_slope"), {"negative_slope": 0.2}),
    "Celu": unary(_alpha_op("Celu"), {"alpha": 1.0}),
    "HardSigmoid": unary(_hard_sigmoid), "HardSilu": unary(_hard_silu), "HardTanh": unary(_hard_tanh),
    "SoftShrink": unary(_shrink(soft=True), {"threshold": 0.5}),
    "HardShrink": unary(_shrink(soft=False), {"threshold": 0.5}),
    "TanhShrink": unary(_tanh_shrink), "Squareplus": unary(_squareplus, {"b": 4}),
    "SparsePlus": unary(_sparse_plus), "Threshold": unary(_threshold, {"threshold": 0.0, "default_value": 0.0}),
    "Softmax": AlongAxis("Softmax"), "LogSoftmax": AlongAxis("LogSoftmax"), "Glu": GatedLinear(),
}
for _class, _function in KERAS_ACTIVATIONS.items():
    add_keras_op(_class, Signature(_function, ("x",)))
