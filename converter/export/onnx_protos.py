"""OpGraph -> ModelProto, built with onnx's protobuf classes directly (export/onnx_core.py loads them).

What is built is what onnx.helper.make_node / make_graph / make_model and numpy_helper.from_array build
(tests/test_onnx_core.py compares the bytes), without onnx.helper, whose import pulls ml_dtypes (~0.6 s).
Graph inputs and outputs carry the Keras names; an op attribute holding an OpGraph (a Scan body) becomes
a graph-valued attribute.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from converter import __version__
from converter.export import onnx_core
from converter.ir import OpGraph, Shape
from converter.ir.ops import Op, ValueInfo

if TYPE_CHECKING:  # the classes are onnx_ml_pb2's, loaded by onnx_core (the same classes as onnx's)
    from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto

# TensorProto.DataType, by numpy dtype name (the numbers are fixed by the ONNX standard).
DTYPES = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "string": 8,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16,
}
_STRING = DTYPES["string"]
# Opset versions of the non-default domains, imported only when an op uses them.
DOMAIN_OPSETS = {"ai.onnx.ml": 2}
# The lowest IR version that carries each opset (onnx.helper.VERSION_TABLE, as find_min_ir_version_for
# reads it); capped by the installed onnx's IR_VERSION. ai.onnx.ml 2 needs IR 6, below all of these.
IR_VERSION_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11, 24: 12,
                        25: 13, 26: 13, 27: 13, 28: 14}


def proto_module() -> Any:
    """The module holding the protobuf classes (onnx_ml_pb2's, or onnx's on the public fallback)."""
    return onnx_core.active().proto


def _value_info(info: ValueInfo) -> ValueInfoProto:
    """make_tensor_value_info: a known shape is present even when empty (a scalar); an unknown dim is empty."""
    value: ValueInfoProto = proto_module().ValueInfoProto(name=info.name)
    tensor_type = value.type.tensor_type
    tensor_type.elem_type = DTYPES.get(info.dtype, DTYPES["float32"])
    shape = _dims(info.shape)
    if shape is not None:
        tensor_type.shape.SetInParent()
        for size in shape:
            dim = tensor_type.shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            elif size is not None:
                dim.dim_value = size
    return value


def _dims(shape: Shape | None) -> list[int | str | None] | None:
    if shape is None:
        return None
    return [d if isinstance(d, (int, str)) else None for d in shape]


def _data_type(dtype: np.dtype[Any]) -> int:
    if dtype.kind in "OUS":
        return _STRING
    if dtype.name not in DTYPES:
        raise TypeError(f"no ONNX tensor type for numpy dtype {dtype}")
    return DTYPES[dtype.name]


def _header(name: str, array: np.ndarray) -> TensorProto:
    """A TensorProto without its data: name, type and dims."""
    tensor: TensorProto = proto_module().TensorProto(data_type=_data_type(array.dtype))
    if name:
        tensor.name = name
    tensor.dims.extend(array.shape)
    return tensor


def tensor_proto(array: np.ndarray, name: str) -> TensorProto:
    """numpy_helper.from_array: strings as string_data (utf-8), everything else as little-endian raw_data."""
    array = np.asarray(array)
    tensor = _header(name, array)
    if tensor.data_type == _STRING:
        tensor.string_data.extend(v.encode("utf-8") if isinstance(v, str) else v for v in array.reshape(-1))
    else:
        tensor.raw_data = little_endian(array).tobytes()
    return tensor


def to_model(ops: OpGraph, metadata: dict[str, str] | None = None, with_data: bool = True) -> ModelProto:
    """The ModelProto; `with_data=False` leaves the initializers' bytes out (write_ops streams them)."""
    proto = proto_module()
    model: ModelProto = proto.ModelProto(producer_name="kconvert", producer_version=__version__)
    _fill_graph(model.graph, ops, with_data)
    used = {node.domain for node in model.graph.node}
    model.opset_import.add(domain="", version=ops.opset)
    for domain, version in DOMAIN_OPSETS.items():
        if domain in used:
            model.opset_import.add(domain=domain, version=version)
    model.ir_version = min(IR_VERSION_FOR_OPSET.get(ops.opset, proto.IR_VERSION), proto.IR_VERSION)
    for key, value in {**ops.metadata, **(metadata or {})}.items():
        model.metadata_props.add(key=key, value=value)
    return model


def _fill_graph(graph: GraphProto, ops: OpGraph, with_data: bool = True) -> None:
    """make_graph's fields, in place; a Scan / Loop body may read the outer graph's values by name."""
    graph.node.extend(_node(op) for op in ops.ops)
    graph.name = ops.name
    graph.input.extend(_value_info(i) for i in ops.inputs)
    graph.output.extend(_value_info(o) for o in ops.outputs)
    graph.initializer.extend(tensor_proto(a, name) if with_data else _header(name, np.asarray(a))
                             for name, a in ops.initializers.items())


def _node(op: Op) -> NodeProto:
    """make_node: attributes sorted by name, None-valued ones left out."""
    node: NodeProto = proto_module().NodeProto(op_type=op.op_type, input=op.inputs, output=op.outputs)
    if op.name:
        node.name = op.name
    if op.domain:
        node.domain = op.domain
    node.attribute.extend(_attribute(key, value) for key, value in sorted(op.attrs.items()) if value is not None)
    return node


def _attribute(key: str, value: Any) -> AttributeProto:
    """make_attribute's type inference: int (bool included), float, str/bytes, TensorProto, OpGraph (a
    graph), or an iterable of ints (INTS), of numbers (FLOATS) or of strings (STRINGS)."""
    proto = proto_module()
    attr: AttributeProto = proto.AttributeProto(name=key)
    kinds = proto.AttributeProto
    if isinstance(value, numbers.Integral):
        attr.i, attr.type = int(value), kinds.INT
    elif isinstance(value, numbers.Real):
        attr.f, attr.type = float(value), kinds.FLOAT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = _utf8(value), kinds.STRING
    elif isinstance(value, proto.TensorProto):
        attr.t.CopyFrom(value)
        attr.type = kinds.TENSOR
    elif isinstance(value, OpGraph):
        _fill_graph(attr.g, value)
        attr.type = kinds.GRAPH
    elif isinstance(value, Iterable):
        _fill_list(attr, key, list(value))
    else:
        raise TypeError(f"'{value}' is not an accepted attribute value.")
    return attr


def _fill_list(attr: AttributeProto, key: str, values: list[Any]) -> None:
    kinds = proto_module().AttributeProto
    if not values:
        raise ValueError(f"Could not infer attribute `{key}` type from empty iterator")
    if all(isinstance(v, numbers.Integral) for v in values):
        attr.ints.extend(int(v) for v in values)
        attr.type = kinds.INTS
    elif all(isinstance(v, numbers.Real) for v in values):
        attr.floats.extend(float(v) for v in values)
        attr.type = kinds.FLOATS
    elif all(isinstance(v, (str, bytes)) for v in values):
        attr.strings.extend(_utf8(v) for v in values)
        attr.type = kinds.STRINGS
    else:
        raise ValueError("Could not infer the attribute type from the elements of the passed Iterable value.")


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def little_endian(array: np.ndarray) -> np.ndarray:
    """The array in ONNX's byte order (little-endian), contiguous."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)
