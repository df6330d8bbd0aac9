"""OpGraph -> ModelProto -> file: checks and the one writer. With export/onnx_core.py (loading onnx) and
export/onnx_protos.py (building the protos), the only modules in `converter/` that use onnx.

Lowering (LayerGraph -> OpGraph, then the OpGraph passes such as float16) is converter/lowering.py;
this module serialises the OpGraph (graph inputs and outputs named after the Keras names, provenance
recorded), checks it (onnx.checker and strict type inference, on every conversion) and writes it.
One function writes ONNX files, `_write`: save_model (an in-memory ModelProto) and write_ops /
save_graph (streamed from an OpGraph) both go through it. An op attribute holding an OpGraph (a Scan
body) becomes a graph-valued attribute.

Start-up: the protos are built by onnx_protos.py with onnx's protobuf classes directly (not onnx.helper /
numpy_helper), and the checks call onnx's C++ extension through onnx_core, so a conversion never runs
onnx/__init__ (which imports onnx.helper and ml_dtypes: ~0.65 s of import). What is built is what
onnx.helper.make_node / make_graph / make_model and numpy_helper.from_array build (tests/test_onnx_core.py
compares the bytes). Callers import this module inside the commands that convert, never at start-up.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter.errors import UnsupportedLayerError, UsageError
from converter.export import onnx_core
from converter.export.files import make_parent, staged
from converter.export.onnx_protos import little_endian, proto_module, tensor_proto, to_model
from converter.ir import Graph, OpGraph
from converter.lowering import DEFAULT_OPSET, lower, lower_for_export
from converter.tolerances import FLOAT16_ATOL, FLOAT16_RTOL  # --float16 outputs vs Keras (float32)

if TYPE_CHECKING:  # the classes are onnx_ml_pb2's, loaded by onnx_core (the same classes as onnx's)
    from onnx import ModelProto, TensorProto

__all__ = [
    "DEFAULT_OPSET", "EXTERNAL_DATA_THRESHOLD", "FLOAT16_ATOL", "FLOAT16_RTOL", "add_metadata", "check_opset",
    "check_types",
    "export", "lower", "lower_for_export", "max_opset", "save_graph", "save_model", "to_model",
    "uses_external_data", "write_ops",
]

# Protobuf cannot hold a message past 2 GiB; above this many weight bytes the weights go to
# `<model>.onnx.data` (ONNX external data), leaving room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**27
MIN_OPSET = 13
def max_opset() -> int:
    return onnx_core.active().max_opset()


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= max_opset():
        raise UsageError(f"opset {opset} is not supported",
                         hint=f"choose an opset from {MIN_OPSET} to {max_opset()} (the newest this onnx knows)")
    return opset


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
    probe: ModelProto = proto_module().ModelProto()
    probe.CopyFrom(skeleton)
    for tensor in probe.graph.initializer:
        array = np.asarray(ops.initializers[tensor.name])
        if array.dtype.kind != "f":
            tensor.CopyFrom(tensor_proto(array, tensor.name))
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
    arrays = {name: little_endian(a) for name, a in ops.initializers.items()}
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


def add_metadata(output: Path, metadata: dict[str, str]) -> Path:
    """Add metadata_props entries to a written ONNX file (embedded test data, known only after the written
    file was checked) without parsing or re-serialising it: a protobuf message's serialisation is its
    fields concatenated, so a ModelProto holding only the new entries, appended, adds them. The file is
    copied, appended to and renamed into place (export/files.staged): never half-written. Keys already in
    the file are not replaced: callers add new keys; an external-data file (`<output>.data`) is untouched."""
    extra = proto_module().ModelProto()
    for key, value in metadata.items():
        entry = extra.metadata_props.add()
        entry.key, entry.value = key, value
    with staged(output, ".onnx") as tmp:
        shutil.copyfile(output, tmp)  # into the staged file, which keeps its umask mode
        with tmp.open("ab") as handle:
            handle.write(extra.SerializeToString())
    return output


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
    proto = proto_module()
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
    tensor.data_location = proto_module().TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _check_skeleton(skeleton: ModelProto, folder: Path) -> None:
    """onnx.checker on the graph with every initializer pointing into an empty stand-in data file:
    the structure is checked without holding (or reading back) the weights."""
    probe = proto_module().ModelProto()
    probe.CopyFrom(skeleton)
    (folder / "probe.data").write_bytes(b"")
    for tensor in probe.graph.initializer:
        _mark_external(tensor, "probe.data", 0, 0)
    (folder / "probe.onnx").write_bytes(probe.SerializeToString())
    onnx_core.active().check_model_path(str(folder / "probe.onnx"))
    for name in ("probe.onnx", "probe.data"):
        (folder / name).unlink()
