"""Lowering: LayerGraph -> OpGraph, then the OpGraph passes (float16), before serialisation.

The stage between the layer passes (converter/passes) and the ONNX writer (export/onnx.py). Each node
is emitted through its handler; a bug in a handler's emit is reported naming the layer and its kind,
as run_pipeline names a failing pass (the CLI reports it as an internal error, exit 70). The OpGraph
passes then run in order, each wrapped the same way. Nothing here imports onnx: a lowered graph can be
built and inspected without it (the opset's upper bound is checked by export/onnx.py on demand).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from converter.errors import KconvertError, UsageError
from converter.export.float16 import to_float16
from converter.ir import Graph, Node, OpGraph
from converter.ir.ops import Op, ValueInfo
from converter.layers import OpBuilder
from converter.layers.registry import handler_for
from converter.passes import run_steps
from converter.value_map import KERAS_VALUES_KEY, keras_values_json

DEFAULT_OPSET = 17

OpPass = Callable[[OpGraph], OpGraph]

__all__ = ["DEFAULT_OPSET", "OpPass", "lower", "lower_for_export", "op_passes", "run_op_passes"]


def op_passes(float16: bool = False, float16_io: bool = False) -> tuple[tuple[str, OpPass], ...]:
    """The ordered OpGraph passes a conversion asks for (none by default)."""
    passes: list[tuple[str, OpPass]] = []
    if float16:  # last: it must see every op that computes, to decide its precision
        passes.append(("float16", partial(to_float16, keep_io_types=not float16_io)))
    return tuple(passes)


def run_op_passes(ops: OpGraph, passes: tuple[tuple[str, OpPass], ...]) -> OpGraph:
    return run_steps(ops, passes, "OpGraph pass")


def lower_for_export(graph: Graph, opset: int = DEFAULT_OPSET, float16: bool = False, float16_io: bool = False,
                     release_weights: bool = False) -> OpGraph:
    """Lower, then run the OpGraph passes asked for: the OpGraph export/onnx.py serialises."""
    return run_op_passes(lower(graph, opset, release_weights), op_passes(float16, float16_io))


def lower(graph: Graph, opset: int = DEFAULT_OPSET, release_weights: bool = False) -> OpGraph:
    """Emit every node through its handler; graph inputs and outputs keep their Keras names.
    `release_weights` empties each node's weights once emitted (lower peak memory; the graph
    cannot be lowered again)."""
    from converter.export.onnx import check_opset  # the upper bound is onnx's; imported only when lowering

    ops = OpGraph(name=graph.name, opset=check_opset(opset))
    for name in [*(t.name for t in graph.inputs), *graph.output_names]:
        ops.reserve(name)
    builder = OpBuilder(ops)
    value_of: dict[int, str] = {id(t): t.name for t in graph.inputs}
    ops.inputs.extend(ValueInfo(t.name, t.shape, t.dtype) for t in graph.inputs)
    for node in graph.nodes:
        produced = _emit(node, builder, [value_of[id(t)] for t in node.inputs])
        if release_weights:  # the initializers hold what ONNX needs; Keras-layout copies can go now
            node.weights = {}
        value_of.update({id(t): v for t, v in zip(node.outputs, produced)})
    builder.scope = ""
    renamed = _bind_outputs(graph, ops, value_of)
    ops.metadata[KERAS_VALUES_KEY] = keras_values_json(graph, {k: renamed.get(v, v) for k, v in value_of.items()})
    return ops


def _emit(node: Node, builder: OpBuilder, inputs: list[str]) -> list[str]:
    """One node through its handler. A KconvertError is the handler refusing the input (kept as it is);
    anything else is a bug in the handler, reported with the layer it failed on."""
    handler = handler_for(node)
    if handler is None:  # topology refuses unknown layers before this point
        raise UsageError(f"no handler for {node.kind}", layer=node.layer_name)
    builder.enter(node)
    try:
        return list(handler.emit(node, builder, inputs))
    except KconvertError:
        raise
    except Exception as err:
        raise RuntimeError(f"lowering layer '{node.layer_name}' ({node.kind}) failed: "
                           f"{type(err).__name__}: {err}") from err


def _bind_outputs(graph: Graph, ops: OpGraph, value_of: dict[int, str]) -> dict[str, str]:
    """Bind the graph outputs to their Keras names; returns the values renamed for that."""
    renamed: dict[str, str] = {}
    input_names = {t.name for t in graph.inputs}
    for tensor, name in zip(graph.outputs, graph.output_names):
        value = value_of[id(tensor)]
        _bind_output(ops, renamed.get(value, value), name, input_names, renamed)
        ops.outputs.append(ValueInfo(name, tensor.shape, tensor.dtype))
    return renamed


def _bind_output(ops: OpGraph, value: str, name: str, input_names: set[str], renamed: dict[str, str]) -> None:
    """Rename the producing op's output to the Keras name; an Identity only where renaming cannot work
    (a graph input, a constant, or a value already bound to another output)."""
    producer = next((op for op in ops.ops if value in op.outputs), None)
    already_output = any(v.name == value for v in ops.outputs)
    if value == name:
        return
    if producer is None or value in input_names or already_output:
        ops.ops.append(Op("Identity", [value], [name], ops.unique(f"{name}/Identity")))
        return
    producer.outputs = [name if o == value else o for o in producer.outputs]
    for op in ops.ops:
        op.inputs = [name if i == value else i for i in op.inputs]
    renamed[value] = name
