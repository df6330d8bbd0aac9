"""Products: matmul (tf.linalg.matmul / `a @ b`, Keras 3 Matmul) and Keras 3 Einsum.

An operand may be a constant (a weight written into the call). tf.keras files cannot hold `tf.einsum`:
tf_keras saves only its equation, not its operands (the call's varargs), so such a file has no tensors to
convert; Keras 3 saves Einsum's operands and converts.
"""

from __future__ import annotations

import re

from converter.errors import ShapeError
from converter.ir import Dim, Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.keras_op_nodes import add_keras_op
from converter.layers.op_functions import Bound, Signature, TensorFunction, broadcast
from converter.layers.op_join import merged_dim, operand_name, operand_shape, tensor_dtype
from converter.layers.tf_op_layers import TF_FUNCTIONS

# Arguments of tf.linalg.matmul that only hint at how to compute the same product.
_HINTS = ("a_is_sparse", "b_is_sparse", "grad_a", "grad_b")


class Matmul(TensorFunction):
    """numpy's matmul (batch axes broadcast, a 1-D operand a vector), each operand optionally transposed
    on its last two axes (adjoint is the transpose on real values)."""

    parameters = ("a", "b", "transpose_a", "transpose_b", "adjoint_a", "adjoint_b", "output_type", *_HINTS)

    def flipped(self, args: Bound, side: str) -> bool:
        return bool(args.constant(f"transpose_{side}", False)) or bool(args.constant(f"adjoint_{side}", False))

    def check(self, node: Node, args: Bound) -> None:
        if not (args.is_tensor("a") or args.is_tensor("b")):
            raise args.refuse("a", "and b are both constants; one operand must be a tensor")
        if args.constant("output_type") not in (None, tensor_dtype(node, [args.values.get("a"),
                                                                        args.values.get("b")])):
            raise args.refuse("output_type", "differs from the operands' dtype")
        for name in _HINTS:
            args.constant(name)

    def operand_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> tuple[Shape, Shape]:
        shapes = []
        for side in ("a", "b"):
            shape = operand_shape(args, side, args.values.get(side), input_shapes)
            if self.flipped(args, side):
                if len(shape) < 2:
                    raise args.refuse(f"transpose_{side}", "needs an operand of rank 2 or more")
                shape = (*shape[:-2], shape[-1], shape[-2])
            shapes.append(shape)
        return shapes[0], shapes[1]

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        a, b = self.operand_shapes(node, args, input_shapes)
        if not a or not b:
            raise args.refuse("a", "and b must have at least one axis each")
        left, right = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
        merged_dim(node, [left[-1], right[-2]])  # the contracted sizes must agree
        batch = broadcast(node, [left[:-2], right[:-2]])
        rows: tuple[Dim, ...] = () if len(a) == 1 else (left[-2],)
        cols: tuple[Dim, ...] = () if len(b) == 1 else (right[-1],)
        return [(*batch, *rows, *cols)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        dtype = tensor_dtype(node, [args.values.get("a"), args.values.get("b")])
        names = []
        for side in ("a", "b"):
            name = operand_name(b, args, side, args.values.get(side), inputs, dtype)
            if self.flipped(args, side):
                rank = len(operand_shape(args, side, args.values.get(side), [t.shape or () for t in node.inputs]))
                name = b.transpose(name, [*range(rank - 2), rank - 1, rank - 2])
            names.append(name)
        return [b.op("MatMul", *names)]


# Keras 3 saves Einsum's operands as the call's positional arguments; these name up to this many.
MAX_OPERANDS = 8
_OPERANDS = tuple(f"operand{i}" for i in range(MAX_OPERANDS))


class Einsum(TensorFunction):
    """`keras.ops.einsum(subscripts, *operands)`: ONNX Einsum with the same equation (explicit or implicit
    output, `...` for broadcast axes)."""

    parameters = ("subscripts", *_OPERANDS)

    def operands(self, args: Bound) -> list[object]:
        return [args.values[n] for n in _OPERANDS if n in args.values]

    def terms(self, node: Node, args: Bound) -> tuple[list[str], str]:
        equation = args.constant("subscripts")
        if not isinstance(equation, str) or not re.fullmatch(r"[a-zA-Z.,]*(->[a-zA-Z.]*)?", equation.replace(" ", "")):
            raise args.refuse("subscripts", "is not an einsum equation of letters, commas, '...' and '->'")
        lhs, arrow, rhs = equation.replace(" ", "").partition("->")
        inputs = lhs.split(",")
        if len(inputs) != len(self.operands(args)):
            raise args.refuse("subscripts", f"names {len(inputs)} operands; the call passes "
                                            f"{len(self.operands(args))}")
        if arrow and not set(rhs.replace(".", "")) <= set(lhs):
            raise args.refuse("subscripts", "names an output axis that no operand has")
        if not arrow:
            letters = "".join(inputs).replace(".", "")
            rhs = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        return inputs, rhs

    def check(self, node: Node, args: Bound) -> None:
        if not any(args.is_tensor(n) for n in _OPERANDS if n in args.values):
            raise args.refuse("operand0", "and the other operands are constants; one must be a tensor")
        self.terms(node, args)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        inputs, rhs = self.terms(node, args)
        sizes: dict[str, list[Dim]] = {}
        ellipses: list[Shape] = []
        for term, value in zip(inputs, self.operands(args)):
            shape = operand_shape(args, "operand0", value, input_shapes)
            letters = term.replace("...", "")
            if len(letters) > len(shape) or ("..." not in term and len(letters) != len(shape)):
                raise ShapeError(f"{args.function} '{node.layer_name}': the term '{term}' does not fit an operand "
                                 f"of shape {shape}", layer=node.layer_name, hint="one letter per axis")
            at = term.find("...")
            extra = len(shape) - len(letters)
            ellipses.append(tuple(shape[at:at + extra]) if at >= 0 else ())
            named = shape if at < 0 else (*shape[:at], *shape[at + extra:])
            for letter, dim in zip(letters, named):
                sizes.setdefault(letter, []).append(dim)
        dims = {letter: merged_dim(node, [d for d in found if d != 1] or [1]) for letter, found in sizes.items()}
        before, _, after = rhs.partition("...")
        middle = broadcast(node, ellipses) if "..." in rhs else ()
        return [(*(dims[c] for c in before), *middle, *(dims[c] for c in after))]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        operands = self.operands(args)
        dtype = tensor_dtype(node, operands)
        names = [operand_name(b, args, "operand", v, inputs, dtype) for v in operands]
        return [b.op("Einsum", *names, equation=str(args.constant("subscripts")).replace(" ", ""))]


MATMUL = Matmul()

TF_FUNCTIONS["linalg.matmul"] = Signature(MATMUL, ("a", "b", "transpose_a", "transpose_b", "adjoint_a", "adjoint_b",
                                                   "a_is_sparse", "b_is_sparse", "output_type"))
TF_FUNCTIONS["matmul"] = TF_FUNCTIONS["linalg.matmul"]
add_keras_op("Matmul", Signature(MATMUL, ("x1", "x2"), rename={"x1": "a", "x2": "b"}))
add_keras_op("Einsum", Signature(Einsum(), _OPERANDS))
