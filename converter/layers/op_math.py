"""Elementwise tensor functions: arithmetic (more to come: comparisons, activations, reductions, casts).

Both front ends bind here: tf.keras `tf.math.subtract(x, y)` / `x - y` and Keras 3 `keras.ops.subtract`.
Operands are tensors or constants on either side; a constant takes the tensor operands' dtype (TensorFlow
requires one dtype; Keras 3 keeps the tensor's dtype for a Python number).
"""

from __future__ import annotations

from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_functions import (
    Bound,
    Signature,
    TensorFunction,
    broadcast,
    constant_input,
    constant_shape,
)
from converter.layers.tf_op_layers import TF_FUNCTIONS


class Binary(TensorFunction):
    """An elementwise function of two operands with numpy broadcasting (one ONNX op)."""

    parameters = ("x", "y")

    def __init__(self, onnx_op: str) -> None:
        self.onnx_op = onnx_op

    def check(self, node: Node, args: Bound) -> None:
        if not (args.is_tensor("x") or args.is_tensor("y")):
            raise args.refuse("x", "and y are both constants; one operand must be a tensor")
        for name in self.parameters:
            if not args.is_tensor(name):
                args.constant(name)  # refuses constants holding tensors

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        return [broadcast(node, [self._shape(args, name, input_shapes) for name in self.parameters])]

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        return [_operand_dtype(node, args)]

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        ranks = {len(t.shape or ()) for t in node.inputs}
        scalars = all(args.is_tensor(n) or constant_shape(args.constant(n)) == () for n in self.parameters)
        return len(ranks) == 1 and scalars

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        dtype = _operand_dtype(node, args)
        operands = [inputs[args.tensor(n)] if args.is_tensor(n) else constant_input(b, args.constant(n), dtype, n)
                    for n in self.parameters]
        return [b.op(self.onnx_op, *operands)]

    @staticmethod
    def _shape(args: Bound, name: str, input_shapes: list[Shape]) -> Shape:
        return input_shapes[args.tensor(name)] if args.is_tensor(name) else constant_shape(args.constant(name))


def _operand_dtype(node: Node, args: Bound) -> str:
    tensors = [args.tensor(n) for n in ("x", "y") if args.is_tensor(n)]
    return node.inputs[tensors[0]].dtype


SUBTRACT = Binary("Sub")

TF_FUNCTIONS["math.subtract"] = Signature(SUBTRACT, ("x", "y"))
TF_FUNCTIONS["__operators__.subtract"] = Signature(SUBTRACT, ("x", "y"))
add_keras_op("Subtract", Signature(SUBTRACT, ("x1", "x2"), rename={"x1": "x", "x2": "y"}))
