"""OpGraph -> ModelProto -> file. With export/onnx_core.py, the only modules in `converter/` that use onnx.

Lowering (LayerGraph -> OpGraph, then the OpGraph passes such as float16) is converter/lowering.py;
this module serialises the OpGraph (graph inputs and outputs named after the Keras names, provenance
recorded), checks it (onnx.checker and strict type inference, on every conversion) and writes it.
One function writes ONNX files, `_write`: save_model (an in-memory ModelProto) and write_ops /
save_graph (streamed from an OpGraph) both go through it. An op attribute holding an OpGraph (a Scan
body) becomes a graph-valued attribute.

Start-up: the protos are built here with onnx's protobuf classes directly (not onnx.helper /
numpy_helper), and the checks call onnx's C++ extension through onnx_core, so a conversion never runs
onnx/__init__ (which imports onnx.helper and ml_dtypes: ~0.65 s of import). What is built is what
onnx.helper.make_node / make_graph / make_model and numpy_helper.from_array build (tests/test_onnx_core.py
compares the bytes). Callers import this module inside the commands that convert, never at start-up.
"""

from __future__ import annotations

import numbers
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter import __version__
from converter.errors import UnsupportedLayerError, UsageError
from converter.export import onnx_core
from converter.export.files import make_parent
from converter.ir import Graph, OpGraph, Shape
from converter.ir.ops import Op, ValueInfo
from converter.lowering import DEFAULT_OPSET, lower, lower_for_export

if TYPE_CHECKING:  # the classes are onnx_ml_pb2's, loaded by onnx_core (the same classes as onnx's)
    from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto

__all__ = [
    "DEFAULT_OPSET", "EXTERNAL_DATA_THRESHOLD", "FLOAT16_ATOL", "FLOAT16_RTOL", "check_opset", "check_types",
    "export", "lower", "lower_for_export", "max_opset", "save_graph", "save_model", "to_model",
    "uses_external_data", "write_ops",
]

# Protobuf cannot hold a message past 2 GiB; above this many weight bytes the weights go to
# `<model>.onnx.data` (ONNX external data), leaving room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**27
# --float16 outputs are compared with Keras (float32) at this looser tolerance.
FLOAT16_RTOL, FLOAT16_ATOL = 2e-2, 2e-2
MIN_OPSET = 13
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


def max_opset() -> int:
    return onnx_core.active().max_opset()


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= max_opset():
        raise UsageError(f"opset {opset} is not supported",
                         hint=f"choose an opset from {MIN_OPSET} to {max_opset()} (the newest this onnx knows)")
    return opset


def _proto() -> Any:
    """The module holding the protobuf classes (onnx_ml_pb2's, or onnx's on the public fallback)."""
    return onnx_core.active().proto


def _value_info(info: ValueInfo) -> ValueInfoProto:
    """make_tensor_value_info: a known shape is present even when empty (a scalar); an unknown dim is empty."""
    value: ValueInfoProto = _proto().ValueInfoProto(name=info.name)
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
    tensor: TensorProto = _proto().TensorProto(data_type=_data_type(array.dtype))
    if name:
        tensor.name = name
    tensor.dims.extend(array.shape)
    return tensor


def _tensor(array: np.ndarray, name: str) -> TensorProto:
    """numpy_helper.from_array: strings as string_data (utf-8), everything else as little-endian raw_data."""
    array = np.asarray(array)
    tensor = _header(name, array)
    if tensor.data_type == _STRING:
        tensor.string_data.extend(v.encode("utf-8") if isinstance(v, str) else v for v in array.reshape(-1))
    else:
        tensor.raw_data = _little_endian(array).tobytes()
    return tensor


def to_model(ops: OpGraph, metadata: dict[str, str] | None = None, with_data: bool = True) -> ModelProto:
    """The ModelProto; `with_data=False` leaves the initializers' bytes out (write_ops streams them)."""
    proto = _proto()
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
    graph.initializer.extend(_tensor(a, name) if with_data else _header(name, np.asarray(a))
                             for name, a in ops.initializers.items())


def _node(op: Op) -> NodeProto:
    """make_node: attributes sorted by name, None-valued ones left out."""
    node: NodeProto = _proto().NodeProto(op_type=op.op_type, input=op.inputs, output=op.outputs)
    if op.name:
        node.name = op.name
    if op.domain:
        node.domain = op.domain
    node.attribute.extend(_attribute(key, value) for key, value in sorted(op.attrs.items()) if value is not None)
    return node


def _attribute(key: str, value: Any) -> AttributeProto:
    """make_attribute's type inference: int (bool included), float, str/bytes, TensorProto, OpGraph (a
    graph), or an iterable of ints (INTS), of numbers (FLOATS) or of strings (STRINGS)."""
    proto = _proto()
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
    kinds = _proto().AttributeProto
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


def export(graph: Graph, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None, float16: bool = False,
           float16_io: bool = False) -> ModelProto:
    """In-memory ModelProto. `float16`: fp16 weights and compute (inputs/outputs stay float32 unless
    `float16_io`). A model over 2 GB cannot be one protobuf message: write it with `save_graph`."""
    onnx_core.public_onnx()  # the caller gets an onnx.ModelProto: onnx is imported as users expect it
    ops = lower_for_export(graph, opset, float16, float16_io)
    model = to_model(ops, metadata)
    onnx_core.active().check_model(model.SerializeToString())
    check_types(model)
    return model


def _type_probe(skeleton: ModelProto, ops: OpGraph) -> ModelProto:
    """The skeleton with the values of its non-float constants (axes, shapes, indices: small, and what shape
    inference reads) filled in; float weights stay empty, their type and dims are all inference needs."""
    probe: ModelProto = _proto().ModelProto()
    probe.CopyFrom(skeleton)
    for tensor in probe.graph.initializer:
        array = np.asarray(ops.initializers[tensor.name])
        if array.dtype.kind != "f":
            tensor.CopyFrom(_tensor(array, tensor.name))
    return probe


def check_types(model: ModelProto) -> None:
    """Strict type inference over the graph, as onnxruntime runs it when loading: an op fed a type it does
    not take (an int8 or string model input reaching an LSTM) is refused here instead of writing an ONNX
    file that no runtime loads. Reads no weight data."""
    core = onnx_core.active()
    try:
        core.infer_types_strictly(model.SerializeToString())
    except core.inference_error as err:
        detail = str(err).splitlines()[-1][:300]
        node = re.search(r"node name: ([^,)\s]+)", detail)
        layer = node.group(1).split("/")[0] if node else None
        raise UnsupportedLayerError(
            f"the converted graph is not valid ONNX: {detail}", layer=layer,
            hint="usually a model input whose dtype the layer cannot take (check the InputLayer's dtype); "
                 "if the model loads in Keras, please report it") from None


def save_model(model: ModelProto, output: str | Path) -> Path:
    """Write an in-memory model (export()'s, already checked) atomically, creating the folder if needed;
    its weights go to `<output>.data` past EXTERNAL_DATA_THRESHOLD (moved out of `model`, as
    onnx.save_model moves them)."""
    external = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    return _write(model, {}, Path(output), external, check=False)


# --------------------------------------------------------------------------------------------------
# Streaming writer: the initializers' bytes go from the numpy buffers straight into the file, never
# through a protobuf copy, so writing costs no memory beyond the weights themselves.
# --------------------------------------------------------------------------------------------------

_TAG_GRAPH, _TAG_INITIALIZER, _TAG_RAW_DATA = b"\x3a", b"\x2a", b"\x4a"  # ModelProto 7, GraphProto 5, TensorProto 9
_ALIGN = 4096  # external tensors start on page boundaries, so runtimes can mmap them
_INLINE_BELOW = 1024  # smaller tensors stay in the .onnx file even with external data


def save_graph(graph: Graph, output: str | Path, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
               float16: bool = False, float16_io: bool = False,
               external_data: bool | None = None, release_weights: bool = False) -> Path:
    """Lower, check and write a graph to `output` (atomically); see write_ops for external data.
    `release_weights=True` (the CLI's choice) frees each layer's Keras-layout weights once lowered."""
    ops = lower_for_export(graph, opset, float16, float16_io, release_weights)
    return write_ops(ops, output, metadata, external_data)


def uses_external_data(ops: OpGraph, external_data: bool | None = None) -> bool:
    """Whether write_ops puts the weights in `<output>.data`: when asked, or past EXTERNAL_DATA_THRESHOLD."""
    if external_data is not None:
        return external_data
    return sum(np.asarray(a).nbytes for a in ops.initializers.values()) > EXTERNAL_DATA_THRESHOLD


def write_ops(ops: OpGraph, output: str | Path, metadata: dict[str, str] | None = None,
              external_data: bool | None = None) -> Path:
    """Check and write `output`; the weights go to `<output>.data` when asked or when they pass
    EXTERNAL_DATA_THRESHOLD. The checks (strict type inference, onnx.checker) read no weight data."""
    arrays = {name: _little_endian(a) for name, a in ops.initializers.items()}
    external = uses_external_data(ops, external_data)
    skeleton = to_model(ops, metadata, with_data=False)
    check_types(_type_probe(skeleton, ops))
    return _write(skeleton, arrays, Path(output), external, check=True)


def _write(model: ModelProto, arrays: dict[str, np.ndarray], output: Path, external: bool,
           check: bool) -> Path:
    """The one function that writes ONNX files. `model` holds the initializers' data itself, or only
    their headers with the bytes in `arrays` (streamed). Everything is written in a temporary folder
    beside `output` (`check`: onnx.checker runs there first), then renamed into place: a failure never
    leaves a partial model. The folder is created if needed; the files get the user's umask."""
    make_parent(output)
    location = f"{output.name}.data"
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        if check:
            _check_skeleton(model, Path(tmp))
        staged_path = Path(tmp) / output.name  # open() inside gives the umask's mode, kept by the rename
        if external:
            _write_external(model, arrays, staged_path, location)
            os.replace(Path(tmp) / location, output.parent / location)
        else:
            _write_inline(model, arrays, staged_path)
        os.replace(staged_path, output)
    return output


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _write_inline(skeleton: ModelProto, arrays: dict[str, np.ndarray], path: Path) -> None:
    """A ModelProto is its fields concatenated: the model without its graph, then the graph field,
    whose initializers are each a header plus the raw_data field written from the array buffer.
    A model that holds its own data (nothing to stream) is serialised whole."""
    if not arrays:
        _write_whole(skeleton, path)
        return
    proto = _proto()
    shell, graph = proto.ModelProto(), proto.GraphProto()
    shell.CopyFrom(skeleton)
    shell.ClearField("graph")
    graph.CopyFrom(skeleton.graph)
    graph.ClearField("initializer")
    graph_bytes = graph.SerializeToString()
    prefixes = []
    for tensor in skeleton.graph.initializer:
        head, size = tensor.SerializeToString(), arrays[tensor.name].nbytes
        raw = _TAG_RAW_DATA + _varint(size)
        prefixes.append(_TAG_INITIALIZER + _varint(len(head) + len(raw) + size) + head + raw)
    total = len(graph_bytes) + sum(len(p) for p in prefixes) + sum(a.nbytes for a in arrays.values())
    with path.open("wb") as handle:
        handle.write(shell.SerializeToString() + _TAG_GRAPH + _varint(total) + graph_bytes)
        for prefix, tensor in zip(prefixes, skeleton.graph.initializer):
            handle.write(prefix)
            handle.write(arrays[tensor.name].reshape(-1).view(np.uint8).data)


def _write_whole(model: ModelProto, path: Path) -> None:
    path.write_bytes(model.SerializeToString())


def _write_external(model: ModelProto, arrays: dict[str, np.ndarray], path: Path, location: str) -> None:
    """Each initializer of _INLINE_BELOW bytes or more goes to `location`, page-aligned; its bytes come from
    `arrays` (streamed) or from the tensor itself (an in-memory model's, moved out)."""
    offset = 0
    with (path.parent / location).open("wb") as data:
        for tensor in model.graph.initializer:
            streamed = tensor.name in arrays
            payload = arrays[tensor.name].reshape(-1).view(np.uint8).data if streamed else tensor.raw_data
            if len(payload) < _INLINE_BELOW:  # shapes and axes: runtimes read these while loading
                if streamed:
                    tensor.raw_data = bytes(payload)
                continue
            pad = -offset % _ALIGN
            data.write(b"\0" * pad)
            data.write(payload)
            tensor.ClearField("raw_data")
            _mark_external(tensor, location, offset + pad, len(payload))
            offset += pad + len(payload)
    path.write_bytes(model.SerializeToString())


def _mark_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    tensor.data_location = _proto().TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _check_skeleton(skeleton: ModelProto, folder: Path) -> None:
    """onnx.checker on the graph with every initializer pointing into an empty stand-in data file:
    the structure is checked without holding (or reading back) the weights."""
    probe = _proto().ModelProto()
    probe.CopyFrom(skeleton)
    (folder / "probe.data").write_bytes(b"")
    for tensor in probe.graph.initializer:
        _mark_external(tensor, "probe.data", 0, 0)
    (folder / "probe.onnx").write_bytes(probe.SerializeToString())
    onnx_core.active().check_model_path(str(folder / "probe.onnx"))
    for name in ("probe.onnx", "probe.data"):
        (folder / name).unlink()
