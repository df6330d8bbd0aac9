"""Named tensor functions called in a model graph: the shared semantics behind two front ends.

tf.keras saves a TensorFlow function applied to a Keras tensor (`x + 1`, `tf.reshape(x, ...)`, `x[:, 1:]`)
as a `TFOpLambda` / `SlicingOpLambda` layer naming the function (`__operators__.add`, `reshape`); Keras 3
saves a `keras.ops` call as a node of the op's class (`Subtract`, `Mean`, `GetItem`). Neither is code: each
names a function of a public API, and its call's arguments are in the file (`CallSite.args` /
`arg_kwargs`, tensors as `TensorArg`). A `TensorFunction` is one function's meaning (argument checks,
shape and dtype rules, ONNX emission) under its own parameter names; a `Signature` says how a front end's
spelling binds to it (positional order, renamed keywords, arguments the name fixes: `tf.nn.relu6` is
relu with max_value 6). The front ends (`tf_op_layers.py`, `keras_op_nodes.py`) hold the tables of names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Dim, Node, Shape
from converter.ir.spec import TensorArg
from converter.layers.builder import OpBuilder
from converter.layers.registry import LayerHandler
from converter.layers.spec import LayerSpec

# ONNX element types by the dtype names tensors carry (ir/dtypes.py), for Cast's `to`.
ONNX_TYPES: dict[str, int] = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9,
                              "float16": 10, "float64": 11}


class Bound:
    """One call's arguments bound to a function's parameters: tensors (as input positions) and constants."""

    def __init__(self, node: Node, function: str, values: Mapping[str, Any]) -> None:
        self.node = node
        self.function = function  # the name the file called, for messages
        self.values = dict(values)

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None

    def is_tensor(self, name: str) -> bool:
        return isinstance(self.values.get(name), TensorArg)

    def tensor(self, name: str) -> int:
        """The input position of a tensor parameter (a constant there is refused: give it as a tensor)."""
        value = self.values.get(name)
        if not isinstance(value, TensorArg):
            raise self.refuse(name, "must be a tensor")
        return value.index

    def constant(self, name: str, default: Any = None) -> Any:
        """A parameter that must be a constant (a tensor there, such as a shape computed in the graph, is
        refused by name)."""
        value = self.values.get(name)
        if isinstance(value, TensorArg) or _holds_tensor(value):
            raise self.refuse(name, "is computed in the graph; only a constant converts here")
        return default if value is None else value

    def refuse(self, name: str, why: str) -> UnsupportedLayerError:
        shown = repr(self.values.get(name))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return UnsupportedLayerError(
            f"{self.function} '{self.node.layer_name}': argument {name}={shown} {why}",
            layer=self.node.layer_name, hint="see the README's table of tensor functions for what converts")


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, TensorArg):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


class TensorFunction(ABC):
    """One tensor function's meaning, under the parameter names it declares."""

    parameters: tuple[str, ...] = ()

    def check(self, node: Node, args: Bound) -> None:  # noqa: B027  (many functions take any constants)
        """Refuse, at the boundary, arguments that cannot convert (UnsupportedLayerError naming them)."""

    def num_outputs(self, node: Node, args: Bound) -> int:
        return 1

    @abstractmethod
    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        """The outputs' Keras shapes from the tensors' (`input_shapes[i]` is `node.inputs[i]`'s)."""

    def output_dtypes(self, node: Node, args: Bound) -> list[str]:
        """The outputs' dtypes; by default the first tensor argument's."""
        dtype = node.inputs[0].dtype if node.inputs else "float32"
        return [dtype] * self.num_outputs(node, args)

    @abstractmethod
    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        """ONNX ops computing the outputs; `inputs[i]` is the ONNX name of `node.inputs[i]`."""

    def is_layout_agnostic(self, node: Node, args: Bound) -> bool:
        """Whether the outputs follow any permutation of the inputs' axes (elementwise over tensors of one
        rank with scalar constants). Functions with axes or shapes say False: the layout pass keeps
        Transposes around them."""
        return False


@dataclass(frozen=True)
class Signature:
    """How one front-end name calls a TensorFunction: its positional parameters in order (named as the
    front end names them), renames of the front end's keyword / config names to the function's, and
    parameters the name itself fixes."""

    function: TensorFunction
    params: tuple[str, ...]
    rename: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    # Keyword arguments the front end accepts that change nothing kconvert computes (`name`).
    ignored: tuple[str, ...] = ("name",)

    def bind(self, node: Node, called: str, config_args: Mapping[str, Any] = {}) -> Bound:
        """Bind the node's written arguments (and a Keras 3 op's constructor arguments from its config)."""
        args, kwargs = node.call.args, node.call.arg_kwargs
        if len(args) > len(self.params):
            raise UnsupportedLayerError(f"{called} '{node.layer_name}' is called with {len(args)} positional "
                                        f"arguments; it takes {len(self.params)}", layer=node.layer_name,
                                        hint="is the config complete and undamaged?")
        values: dict[str, Any] = {self._own(p): v for p, v in zip(self.params, args)}
        for key, value in [*kwargs.items(), *config_args.items()]:
            if key in self.ignored:
                continue
            own = self._own(key)
            if own not in self.function.parameters:
                raise UnsupportedLayerError(f"{called} '{node.layer_name}' has the argument {key}, which "
                                            "kconvert does not convert", layer=node.layer_name,
                                            hint="see the README's table of tensor functions")
            values[own] = value
        values.update(self.fixed)
        return Bound(node, called, values)

    def _own(self, name: str) -> str:
        return self.rename.get(name, name)


S = TypeVar("S", bound=LayerSpec)


class FunctionCall(LayerHandler[S]):
    """The handler of a node that calls a TensorFunction (a front end's class): every rule is the
    function's, given the node's bound arguments."""

    @abstractmethod
    def call_of(self, node: Node) -> tuple[TensorFunction, Bound]:
        """The function the node calls and its arguments bound to the function's parameters."""

    def check(self, node: Node) -> None:
        function, args = self.call_of(node)
        function.check(node, args)

    def num_outputs(self, node: Node) -> int:
        function, args = self.call_of(node)
        return function.num_outputs(node, args)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        function, args = self.call_of(node)
        return function.output_shapes(node, args, input_shapes)

    def output_dtypes(self, node: Node) -> list[str] | None:
        function, args = self.call_of(node)
        return function.output_dtypes(node, args)

    def is_layout_agnostic(self, node: Node) -> bool:
        function, args = self.call_of(node)
        return function.is_layout_agnostic(node, args)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        function, args = self.call_of(node)
        return function.emit(node, b, args, inputs)


# Shape helpers shared by the function modules.

def broadcast(node: Node, shapes: Sequence[Shape]) -> Shape:
    """numpy broadcasting of several shapes (unknown dims: the known one wins, else unknown)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = [1] * rank
    for shape in shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        out = [broadcast_dim(node, a, b) for a, b in zip(out, padded)]
    return tuple(out)


def broadcast_dim(node: Node, a: Dim, b: Dim) -> Dim:
    """One axis of numpy broadcasting (merge layers and tensor functions share it)."""
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    if isinstance(a, int) and isinstance(b, int):
        raise ShapeError(f"{node.kind} '{node.layer_name}' cannot broadcast sizes {a} and {b} on one axis",
                         layer=node.layer_name, hint="the operands' shapes must broadcast (numpy rules)")
    return a if isinstance(a, int) else b


def constant_shape(value: Any) -> Shape:
    """The shape of a constant operand (a number, or nested lists)."""
    return tuple(np.shape(value))


def constant_input(b: OpBuilder, value: Any, dtype: str, name: str = "c") -> str:
    """A constant operand as an ONNX initializer of the tensor operands' dtype."""
    return b.const(np.asarray(value, dtype=np.dtype(dtype)), name, dtype=np.dtype(dtype))


def normalized_axis(node: Node, axis: Any, rank: int, what: str = "axis") -> int:
    """An axis in [-rank, rank) as a non-negative index (anything else is refused by name)."""
    if not isinstance(axis, int) or isinstance(axis, bool) or not -rank <= axis < rank:
        raise UnsupportedLayerError(f"'{node.layer_name}': {what}={axis!r} is not an axis of a rank-{rank} tensor",
                                    layer=node.layer_name, hint="an axis is an integer in [-rank, rank)")
    return axis % rank
