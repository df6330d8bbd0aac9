"""LayerGraph -> onnx.ModelProto. The only module in `converter/` that imports onnx.

Handlers emit into an OpGraph; this module serialises it, names the graph inputs and outputs after
the Keras names, fixes the batch dim name, records provenance and runs onnx.checker.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter import __version__
from converter.errors import UsageError
from converter.ir import Graph, OpGraph, Shape
from converter.ir.ops import Op, ValueInfo
from converter.layers import LAYERS, OpBuilder

DEFAULT_OPSET = 17
MIN_OPSET = 13
DTYPES = {
    "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64, "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL, "bfloat16": TensorProto.BFLOAT16,
}


def max_opset() -> int:
    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= max_opset():
        raise UsageError(f"opset {opset} is not supported",
                         hint=f"choose an opset from {MIN_OPSET} to {max_opset()} (the newest this onnx knows)")
    return opset


def lower(graph: Graph, opset: int = DEFAULT_OPSET, keras_version: str | None = None) -> OpGraph:
    """Emit every node through its handler; graph inputs and outputs keep their Keras names."""
    ops = OpGraph(name=graph.name, opset=check_opset(opset))
    for name in [*(t.name for t in graph.inputs), *graph.output_names]:
        ops.reserve(name)
    builder = OpBuilder(ops, keras_version)
    value_of: dict[int, str] = {id(t): t.name for t in graph.inputs}
    for tensor in graph.inputs:
        ops.inputs.append(ValueInfo(tensor.name, tensor.shape, tensor.dtype))
    for node in graph.nodes:
        handler = LAYERS.get(node.kind)
        if handler is None:  # topology refuses unknown layers before this point
            raise UsageError(f"no handler for {node.kind}", layer=node.layer_name)
        builder.enter(node)
        produced = handler.emit(node, builder, [value_of[id(t)] for t in node.inputs])
        value_of.update({id(t): v for t, v in zip(node.outputs, produced)})
    builder.scope = ""
    for tensor, name in zip(graph.outputs, graph.output_names):
        _bind_output(ops, value_of[id(tensor)], name, {t.name for t in graph.inputs})
        ops.outputs.append(ValueInfo(name, tensor.shape, tensor.dtype))
    return ops


def _bind_output(ops: OpGraph, value: str, name: str, input_names: set[str]) -> None:
    """Rename the producing op's output to the Keras name; an Identity only where renaming cannot work."""
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


def _value_info(info: ValueInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(info.name, DTYPES.get(info.dtype, TensorProto.FLOAT), _dims(info.shape))


def _dims(shape: Shape | None) -> list[int | str | None] | None:
    if shape is None:
        return None
    return [d if isinstance(d, (int, str)) else None for d in shape]


def to_model(ops: OpGraph, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    nodes = [helper.make_node(op.op_type, op.inputs, op.outputs, name=op.name, domain=op.domain or None, **op.attrs)
             for op in ops.ops]
    initializers = [numpy_helper.from_array(np.asarray(a), name) for name, a in ops.initializers.items()]
    graph = helper.make_graph(nodes, ops.name, [_value_info(i) for i in ops.inputs],
                              [_value_info(o) for o in ops.outputs], initializer=initializers)
    opset_ids = [helper.make_opsetid("", ops.opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="kconvert",
                              producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opset_ids, ignore_unknown=True)
    helper.set_model_props(model, {**ops.metadata, **(metadata or {})})
    return model


def export(graph: Graph, opset: int = DEFAULT_OPSET, keras_version: str | None = None,
           metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    model = to_model(lower(graph, opset, keras_version), metadata)
    onnx.checker.check_model(model)
    return model


def save_model(model: onnx.ModelProto, output: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, renamed into place, so a failure
    never leaves a half-written model behind."""
    output = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output
