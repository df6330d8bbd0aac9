"""The elementwise machinery shared by the math and activation functions: operands that are tensors or
constants on either side, numpy broadcasting, dtype promotion, and one build function per name.

A constant takes the tensor operands' dtype (TensorFlow requires one dtype; Keras 3 keeps the tensor's dtype
for a Python number). Tensors of different dtypes (possible only in Keras 3) meet in the floating one, as
Keras 3 promotes `int32 + float32` to float32. A float function of an integer tensor (`sqrt`, `exp`)
computes in float32, as Keras 3 does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.op_functions import (
    ONNX_TYPES,
    Bound,
    TensorFunction,
    broadcast,
    constant_input,
    constant_shape,
)

FLOATS = frozenset({"float16", "float32", "float64"})


@dataclass(frozen=True)
class Ctx:
    """What a build function needs beyond its operands: the dtype they were brought to, and the options."""

    node: Node
    args: Bound
    dtype: str
    defaults: Mapping[str, Any]

    def option(self, name: str) -> Any:
        return self.args.constant(name, self.defaults.get(name))

    def number(self, b: OpBuilder, value: Any, name: str = "c") -> str:
        """A scalar constant of the operands' dtype."""
        return constant_input(b, value, self.dtype, name)


# build(builder, operand names in the function's operand order, context) -> the output's name.
Build = Callable[[OpBuilder, list[str], Ctx], str]


class Elementwise(TensorFunction):
    """A function applied elementwise to its operands (numpy broadcasting) with constant options."""

    def __init__(self, operands: tuple[str, ...], build: Build, defaults: Mapping[str, Any] | None = None,
                 result: str | None = None, floating: bool = False, operand_dtype: str | None = None) -> None:
        self.operands = operands
        self.build = build
        self.defaults = dict(defaults or {})
        self.parameters = (*operands, *self.defaults)
        self.result = result  # a fixed output dtype (bool for a comparison), else the operands'
        self.floating = floating  # computes in floating point: an integer operand is cast to float32
        self.operand_dtype = operand_dtype  # operands are brought to this dtype (bool for logical_and)

    def check(self, node: Node, args: Bound) -> None:
        if not any(args.is_tensor(n) for n in self.operands):
            raise args.refuse(self.operands[0], "is a constant, as is every operand; one must be a tensor")
        for name in self.operands:
            if not args.is_tensor(name) and not _is_number_array(args.constant(name)):
                raise args.refuse(name, "is not a number or a nested list of numbers")
        for name, default in self.defaults.items():
            value = args.constant(name, default)  # an option computed in the graph is refused by name
            if not _same_kind(value, default):
                raise args.refuse(name, f"is not a {type(default).__name__} as this function takes")

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [broadcast(node, [operand_shape(args, n, input_shapes) for n in self.operands])]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        return [self.result or self.compute_dtype(node, args)]

    def compute_dtype(self, node: Node, args: Bound) -> str:
        if self.operand_dtype:
            return self.operand_dtype
        dtype = common_dtype(node, args, self.operands)
        return "float32" if self.floating and dtype not in FLOATS else dtype

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        tensors = [node.inputs[args.tensor(n)] for n in self.operands if args.is_tensor(n)]
        ranks = {len(t.shape or ()) for t in tensors}
        scalars = all(args.is_tensor(n) or constant_shape(args.constant(n)) == () for n in self.operands)
        return len(ranks) == 1 and scalars

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        dtype = self.compute_dtype(node, args)
        operands = [operand(b, node, args, n, inputs, dtype) for n in self.operands]
        return [self.build(b, operands, Ctx(node, args, dtype, self.defaults))]


def _same_kind(value: Any, default: Any) -> bool:
    """An option's value has its default's kind: a flag is a bool, a number is an int or float."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _is_number_array(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_number_array(v) for v in value)
    return isinstance(value, (int, float, bool))


def operand_shape(args: Bound, name: str, input_shapes: list[Shape]) -> Shape:
    return input_shapes[args.tensor(name)] if args.is_tensor(name) else constant_shape(args.constant(name))


def common_dtype(node: Node, args: Bound, names: tuple[str, ...]) -> str:
    """The operands' common dtype: the tensors' (several dtypes meet in the floating one, as Keras 3
    promotes); float32 where a float constant meets integers (`where(c, 1.0, 0)` too), else int32."""
    dtypes = [node.inputs[args.tensor(n)].dtype for n in names if args.is_tensor(n)]
    if any(d in FLOATS for d in dtypes):
        return next(d for d in dtypes if d in FLOATS)
    # Integer tensors with a float constant meet in float32 (Keras 3's weak-float promotion; TensorFlow
    # refuses to build such a call, so its files never hold one).
    if any(_holds_float(args.constant(n)) for n in names if not args.is_tensor(n)):
        return "float32"
    return dtypes[0] if dtypes else "int32"


def _holds_float(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_float(v) for v in value)
    return isinstance(value, float)


def operand(b: OpBuilder, node: Node, args: Bound, name: str, inputs: list[str], dtype: str) -> str:
    """One operand in `dtype`: a tensor (cast when its dtype differs) or a constant of that dtype."""
    if not args.is_tensor(name):
        return constant_input(b, args.constant(name), dtype, name)
    index = args.tensor(name)
    if node.inputs[index].dtype == dtype:
        return inputs[index]
    return b.op("Cast", inputs[index], to=ONNX_TYPES[dtype])


def unary(build: Build, defaults: Mapping[str, Any] | None = None, floating: bool = True,
          result: str | None = None) -> Elementwise:
    return Elementwise(("x",), build, defaults, result=result, floating=floating)


def binary(build: Build, result: str | None = None, floating: bool = False,
           operand_dtype: str | None = None) -> Elementwise:
    return Elementwise(("x", "y"), build, result=result, floating=floating, operand_dtype=operand_dtype)


def one_op(op_type: str, **attrs: Any) -> Build:
    """A build that is one ONNX op over the operands."""
    return lambda b, xs, ctx: b.op(op_type, *xs, **attrs)
