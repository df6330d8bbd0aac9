"""Extension API: convert layers kconvert does not know, with handlers written in Python.

Two things can get a handler:

- a layer class, by its Keras class name (`register_layer`): your own custom layer class, or any
  class missing from kconvert's table. Every layer of that class uses it.
- ONE Lambda layer, by its layer name (`register_lambda`). kconvert never decodes or runs the
  Python bytecode a Lambda stores; your handler re-states its computation as ONNX ops. A Lambda
  inside a nested model is matched by its full name (`inner_model/normalize`) or its own name.
  A Lambda registration wins over a `register_layer("Lambda", ...)` catch-all.

A handler is a function `handler(b, inputs, node)`:

- `b` is the OpBuilder: `b.op(op_type, *inputs, **attributes)` emits one ONNX op and returns its
  output name; `b.scalar(v)`, `b.const(array, name)`, `b.ints(values, name)` add constants and
  `b.weight(key)` the layer's stored weight `key` (see `weights=` below); `b.opset` is the target
  opset;
- `inputs` are the ONNX value names of the layer's inputs, in call order;
- `node` is the layer: `node.attrs` (its Keras config), `node.weights`, `node.inputs[i].shape`;

and it returns the ONNX name of its output (or a list of names, one per output).

Options of both functions:

- `output_shape`: by default the output has the shape of the first input. Otherwise a callable
  `output_shape(input_shapes, node)` returning the output shape (a list of shapes with several
  outputs). Shapes are tuples with the batch dim first: ints, or strs for sizes unknown until run
  time (the batch is `"batch"`);
- `outputs`: how many outputs the layer has (default 1);
- `layout_agnostic=True`: declare the handler elementwise (its result does not depend on the
  axis order), so kconvert may move layout Transposes across it;
- `replace=True`: replace an existing registration (or a built-in handler) instead of raising.

`register_layer` also takes `weights=("kernel", ...)`: names for the arrays the file stores for the
layer, in stored order (a class name is matched against the config's `class_name`). Instead of a
function it also accepts a `LayerHandler` subclass, for full control (shape and weight checks).

Worked example: an old model whose Lambda `normalize` computes `x / 127.5 - 1`, and a custom
`Scale` layer with one stored weight `gamma` of shape (channels,):

    import converter
    from converter.extensions import register_lambda, register_layer

    @register_lambda("normalize", layout_agnostic=True)
    def normalize(b, inputs, node):
        return b.op("Sub", b.op("Div", inputs[0], b.scalar(127.5)), b.scalar(1.0))

    @register_layer("Scale", weights=("gamma",))
    def scale(b, inputs, node):
        return b.op("Mul", inputs[0], b.weight("gamma"))

    @register_lambda("global_sum", output_shape=lambda shapes, node: shapes[0][:1] + shapes[0][-1:])
    def global_sum(b, inputs, node):  # (batch, h, w, c) -> (batch, c)
        return b.reduce("ReduceSum", inputs[0], [1, 2], keepdims=False)

    model = converter.convert("old_model.h5")

Unregistered Lambda and custom layers still fail conversion, all of them listed in one error.

A class name matches with or without its package prefix: Keras saves a class registered with
`keras.saving.register_keras_serializable(package="my")` as "my>Scale" in .h5 files and as "Scale" in
.keras archives; a handler registered as "Scale" or "my>Scale" serves both.

From the command line, `kconvert model.h5 --extension my_layers.py` runs such a file
(application/user_code.py; nothing under converter/ runs code): it is the user's own code, run because
they named it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from converter.errors import UsageError
from converter.ir import Node, Shape
from converter.ir.spec import NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAMBDAS, LAYERS, LayerHandler, Registry

HandlerFn = Callable[[OpBuilder, list[str], Node], Any]
ShapeFn = Callable[[list[Shape], Node], Any]
T = TypeVar("T")

__all__ = [
    "FunctionHandler", "register_lambda", "register_layer", "registrations", "unregister_lambda", "unregister_layer",
]


class FunctionHandler(LayerHandler[NoArgs]):
    """A LayerHandler around a user function and its declared shape rule and weight names."""

    def __init__(self, fn: HandlerFn, output_shape: ShapeFn | None = None, weights: Sequence[str] = (),
                 outputs: int = 1, layout_agnostic: bool = False) -> None:
        self.fn = fn
        self.shape_fn = output_shape
        self.weights = list(weights)
        self.outputs = outputs
        self.layout_agnostic = layout_agnostic

    def weight_names(self, node: Node) -> list[str]:
        return list(self.weights)

    def num_outputs(self, node: Node) -> int:
        return self.outputs

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if self.shape_fn is None:
            return [input_shapes[0]] * self.outputs
        result = _user_call(node, "output_shape", self.shape_fn, input_shapes, node)
        shapes = list(result) if _is_shape_list(result) else [result]
        return [tuple(s) for s in self._counted(node, shapes, "output_shape")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        result = _user_call(node, "handler", self.fn, b, list(inputs), node)
        return self._counted(node, [result] if isinstance(result, str) else list(result), "handler")

    def _counted(self, node: Node, values: list[T], what: str) -> list[T]:
        if len(values) != self.outputs:
            raise UsageError(f"the registered {what} for {node.kind} '{node.layer_name}' gave {len(values)} "
                             f"result(s) for {self.outputs} output(s)", layer=node.layer_name,
                             hint="return one value per output, or register with outputs=<count>")
        return values


# What a user's handler may raise (a weight name misspelt, a wrong shape): the user's mistake, reported as
# a UsageError naming the layer and the function, not as a kconvert bug. A KconvertError (the builder
# refusing an op) goes on as it is.
USER_CODE_ERRORS = (LookupError, TypeError, ValueError, AttributeError, NameError, ArithmeticError, AssertionError,
                    RuntimeError)


def _user_call(node: Node, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except USER_CODE_ERRORS as err:
        name = getattr(fn, "__qualname__", repr(fn))
        raise UsageError(f"the registered {what} {name} for {node.kind} '{node.layer_name}' failed: "
                         f"{type(err).__name__}: {err}", layer=node.layer_name,
                         hint="fix the handler (rerun with --debug for the traceback)") from err


def _is_shape_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, (list, tuple)) for v in value)


# Built-in handlers that a `replace=True` registration displaced, restored by unregistering.
_displaced: dict[tuple[str, str], LayerHandler[Any]] = {}
_user: set[tuple[str, str]] = set()


def register_layer(class_name: str, handler: Any = None, *, output_shape: ShapeFn | None = None,
                   weights: Sequence[str] = (), outputs: int = 1, layout_agnostic: bool = False,
                   replace: bool = False) -> Any:
    """Use `handler` for every layer of Keras class `class_name`; usable as a decorator."""
    def attach(target: Any) -> Any:
        _install(LAYERS, class_name, _as_handler(target, output_shape, weights, outputs, layout_agnostic), replace)
        return target

    return attach if handler is None else attach(handler)


def register_lambda(layer_name: str, handler: Any = None, *, output_shape: ShapeFn | None = None,
                    outputs: int = 1, layout_agnostic: bool = False, replace: bool = False) -> Any:
    """Use `handler` for the Lambda layer named `layer_name`; usable as a decorator."""
    def attach(target: Any) -> Any:
        _install(LAMBDAS, layer_name, _as_handler(target, output_shape, (), outputs, layout_agnostic), replace)
        return target

    return attach if handler is None else attach(handler)


def unregister_layer(class_name: str) -> None:
    """Remove a registration made here; a built-in handler it replaced comes back."""
    _uninstall(LAYERS, class_name)


def unregister_lambda(layer_name: str) -> None:
    _uninstall(LAMBDAS, layer_name)


def _as_handler(target: Any, output_shape: ShapeFn | None, weights: Sequence[str], outputs: int,
                layout_agnostic: bool) -> LayerHandler[Any]:
    if isinstance(target, type) and issubclass(target, LayerHandler):
        target = target()
    if isinstance(target, LayerHandler):
        if output_shape is not None or weights or outputs != 1 or layout_agnostic:
            raise UsageError("output_shape, weights, outputs and layout_agnostic are options for handler "
                             "functions; a LayerHandler states them as its own methods and attributes")
        return target
    if not callable(target):
        raise UsageError(f"a handler must be a function (b, inputs, node) or a LayerHandler, not {target!r}")
    if not isinstance(outputs, int) or outputs < 1:
        raise UsageError(f"outputs must be a positive int, not {outputs!r}")
    if isinstance(weights, str):
        raise UsageError(f"weights must be a sequence of names, e.g. ({weights!r},), not a str")
    return FunctionHandler(target, output_shape, weights, outputs, layout_agnostic)


def _install(registry: Registry, name: str, handler: LayerHandler[Any], replace: bool) -> None:
    key = (registry.what, name)
    if name in registry:
        if not replace:
            origin = "a registered" if key in _user else "a built-in"
            raise UsageError(f"{registry.what} {name!r} already has {origin} handler",
                             hint="pass replace=True to replace it, or unregister it first")
        previous = registry.remove(name)
        if key not in _user and previous is not None:
            _displaced[key] = previous
    registry.add(name, handler)
    _user.add(key)


def _uninstall(registry: Registry, name: str) -> None:
    key = (registry.what, name)
    if key not in _user:
        raise UsageError(f"{registry.what} {name!r} has no handler registered through converter.extensions")
    registry.remove(name)
    _user.discard(key)
    if key in _displaced:
        registry.add(name, _displaced.pop(key))


def registrations() -> dict[str, list[str]]:
    """What was registered through this module: class names and Lambda layer names."""
    return {kind: sorted(name for what, name in _user if what == registry.what)
            for kind, registry in (("layers", LAYERS), ("lambdas", LAMBDAS))}

