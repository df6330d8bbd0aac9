"""Test data in the ONNX standard layout (the ONNX model zoo's, read by onnxruntime's onnx_test_runner):
`FOLDER/test_data_set_N/input_K.pb` and `output_K.pb`, each a serialised TensorProto whose `name` is the
graph input or output it belongs to. Written after a check (the inputs fed, the Keras outputs expected)
and read by `kconvert verify`. The reader is our own (no `import onnx`, whose helpers pull ml_dtypes): it
takes raw_data (little-endian) and the typed *_data fields for the dtypes kconvert writes.

Embedded test data (`--embed-test-data`): the same sets travel inside the ONNX file, in the ModelProto's
`metadata_props` under the key `kconvert.test_data`, so one file can be deployed and verified with
onnxruntime alone. The value is ASCII: base64 of one serialised ONNX GraphProto used as a container,
nothing new to parse:
  - `name` is the format, `kconvert.test_data/1`;
  - each `initializer` is one tensor of one set, exactly the TensorProto its `.pb` file would hold (its
    `name` is the graph input or output it belongs to), and its `doc_string` is that file's place in the
    folder layout, `test_data_set_N/input_K` or `test_data_set_N/output_K`.
Sets are embedded whole, in order, while the value stays under the size cap (`--embed-limit`, bytes of
the base64 text). A GraphProto's serialisation is its fields concatenated, so each set is serialised once
and the prefix that fits is joined without re-encoding. `kconvert verify MODEL.onnx` reads, in order: the
folder given, the `<stem>_test_data` folder beside the model, the embedded sets (travelling_sets).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from converter.errors import FormatError, KconvertWarning, UsageError
from converter.export.onnx_protos import DTYPES, proto_module, tensor_proto

__all__ = ["EMBED_KEY", "TestSet", "array_of", "check_embed_options", "data_folder_of", "decode_sets", "embed_sets",
           "embedded_sets", "encode_sets", "model_proto", "read_embedded", "read_sets", "read_tensor",
           "travelling_sets", "write_sets"]
NUMPY_OF_ONNX = {code: np.dtype(name) for name, code in DTYPES.items()
                 if name not in ("string", "bfloat16")}
STRING, FLOAT16, BOOL = DTYPES["string"], DTYPES["float16"], DTYPES["bool"]
# Which typed field holds each data type when raw_data is empty (onnx.proto3's comments).
TYPED_FIELD = {DTYPES["float32"]: "float_data", DTYPES["float64"]: "double_data", DTYPES["int64"]: "int64_data",
               DTYPES["uint64"]: "uint64_data", DTYPES["uint32"]: "uint64_data"}
SET_PATTERN = re.compile(r"test_data_set_(\d+)$")
FILE_PATTERN = re.compile(r"(input|output)_(\d+)\.pb$")
EMBED_KEY, EMBED_FORMAT = "kconvert.test_data", "kconvert.test_data/1"
PLACE_PATTERN = re.compile(r"test_data_set_(\d+)/(input|output)_(\d+)$")
DEFAULT_EMBED_LIMIT_MB, BYTES_PER_MB = 1.0, 1_000_000
MAKE_TEST_DATA = ("make it with kconvert MODEL.h5 --check --save-test-data [--embed-test-data], or pass "
                  "--test-data DIR or --reference NPZ")


@dataclass(frozen=True)
class TestSet:
    """One test case: the arrays fed to the graph inputs and those expected at its outputs, by name."""

    __test__ = False  # not a pytest class
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def data_folder_of(model: Path) -> Path:
    """Where a model's test data lives: `<stem>_test_data` beside it."""
    return model.with_name(f"{model.stem}_test_data")


def write_sets(folder: Path, sets: list[TestSet]) -> Path:
    """Write every set as test_data_set_N/{input,output}_K.pb (sets already there are replaced)."""
    for index, test_set in enumerate(sets):
        target = folder / f"test_data_set_{index}"
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.pb"):
            old.unlink()
        for kind, arrays in (("input", test_set.inputs), ("output", test_set.outputs)):
            for k, (name, array) in enumerate(arrays.items()):
                (target / f"{kind}_{k}.pb").write_bytes(tensor_proto(np.asarray(array), name).SerializeToString())
    return folder


def read_sets(folder: Path) -> list[TestSet]:
    """Every test_data_set_N in `folder`, in N order."""
    if not folder.is_dir():
        raise UsageError(f"no test data folder {folder}", hint=MAKE_TEST_DATA)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := SET_PATTERN.match(p.name)) and p.is_dir())
    if not found:
        raise UsageError(f"{folder} holds no test_data_set_N folder", hint="point --test-data at the folder above them")
    return [_read_set(path) for _, path in found]


def travelling_sets(model: Path, folder: Path | None = None,
                    metadata: dict[str, str] | None = None) -> tuple[Path, list[TestSet]]:
    """The test data of `kconvert verify MODEL.onnx` and where it came from: the folder given, else the
    `<stem>_test_data` folder beside the model, else the sets embedded in the model (source: the model).
    `metadata`: the model's metadata_props when the caller has read them (the file is not parsed again)."""
    if folder is not None:
        return folder, read_sets(folder)
    beside = data_folder_of(model)
    if beside.is_dir():
        return beside, read_sets(beside)
    embedded = read_embedded(model) if metadata is None else embedded_sets(metadata, model)
    if embedded is None:
        raise UsageError(f"{model} has no test data: no folder {beside} beside it and none embedded in it",
                         hint=MAKE_TEST_DATA)
    return model, embedded


def _read_set(folder: Path) -> TestSet:
    files: dict[str, list[tuple[int, Path]]] = {"input": [], "output": []}
    for path in folder.iterdir():
        if match := FILE_PATTERN.match(path.name):
            files[match.group(1)].append((int(match.group(2)), path))
    if not files["input"] or not files["output"]:
        raise FormatError(f"{folder} needs input_K.pb and output_K.pb files",
                          hint=f"it holds: {', '.join(sorted(p.name for p in folder.iterdir())) or 'nothing'}")
    inputs, outputs = (_by_name(str(folder), [read_tensor(p) for _, p in sorted(files[kind])])
                       for kind in ("input", "output"))
    return TestSet(inputs, outputs)


def _by_name(where: str, tensors: list[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A set's tensors by name; two with one name would silently feed one of them."""
    names = [name for name, _ in tensors]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise FormatError(f"{where} holds several tensors named {', '.join(map(repr, twice))}",
                          hint="each input_K.pb / output_K.pb names a different graph input or output")
    return dict(tensors)


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """A .pb file's TensorProto as (name, array); a damaged file is a FormatError naming it."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror or err}", hint="check the test data folder") from None
    tensor = proto_module().TensorProto()
    try:
        tensor.ParseFromString(data)
    except DecodeError as err:
        raise FormatError(f"{path} is not a readable ONNX TensorProto ({' '.join(str(err).split())[:200]})",
                          hint="re-save the test data") from None
    return tensor_value(tensor, str(path))


def tensor_value(tensor: Any, where: str) -> tuple[str, np.ndarray]:
    """A parsed TensorProto as (name, array), checked: it names a graph value and its data fills its dims."""
    if not tensor.name:
        raise FormatError(f"{where}: the tensor has no name (is it a TensorProto?)",
                          hint="each tensor names the graph input or output it belongs to; re-save the test data")
    try:
        return tensor.name, array_of(tensor)
    except FormatError as err:
        raise FormatError(f"{where}: {err.message}", hint=err.hint) from None


def array_of(tensor: Any) -> np.ndarray:
    """numpy_helper.to_array for the dtypes kconvert writes and reads."""
    shape = tuple(int(d) for d in tensor.dims)
    try:
        return _array(tensor, shape)
    except ValueError as err:  # data that does not fill the dims, bytes that are not UTF-8
        raise FormatError(f"tensor {tensor.name!r} (dims {list(shape)}) does not hold its data "
                          f"({' '.join(str(err).split())[:200]})", hint="re-save the test data (truncated?)") from None


def _array(tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    if any(d < 0 for d in shape):
        raise ValueError("a negative dimension")
    if tensor.data_type == STRING:
        return np.array([bytes(v).decode("utf-8") for v in tensor.string_data], dtype=object).reshape(shape)
    if tensor.data_type not in NUMPY_OF_ONNX:
        raise FormatError(f"tensor {tensor.name!r} has ONNX data type {tensor.data_type}, which kconvert does not read",
                          hint="store float, integer, bool or string tensors")
    dtype = NUMPY_OF_ONNX[tensor.data_type]
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    return _typed(tensor, dtype).reshape(shape)


def _typed(tensor: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """The typed field: float16 travels as its bits in int32_data, small integers and bool as int32_data."""
    field = TYPED_FIELD.get(tensor.data_type, "int32_data")
    values = np.asarray(getattr(tensor, field))
    if tensor.data_type == FLOAT16:
        return values.astype(np.uint16).view(np.float16)
    return values.astype(dtype)


# --------------------------------------------------------------------------------------------------
# Embedded in the ONNX file (the format is in the module docstring)
# --------------------------------------------------------------------------------------------------

def model_proto(model: Path) -> Any:
    """The ONNX file parsed (an external-data model's weights stay in their file)."""
    proto = proto_module().ModelProto()
    try:
        proto.ParseFromString(model.read_bytes())
    except DecodeError as err:
        raise FormatError(f"{model} is not a readable ONNX model ({' '.join(str(err).split())[:200]})",
                          hint="pass a .onnx file") from None
    except OSError as err:
        raise UsageError(f"cannot read {model}: {err.strerror or err}", hint="give the path of an .onnx file") from None
    return proto


def encode_sets(sets: list[TestSet], limit: int | None = None) -> tuple[str, int]:
    """The metadata value holding the first sets whose base64 text stays within `limit` bytes (None: all),
    and how many that is."""
    parts = [proto_module().GraphProto(name=EMBED_FORMAT).SerializeToString()]
    size = len(parts[0])
    for index, test_set in enumerate(sets):
        fields = _set_fields(index, test_set)
        if limit is not None and _base64_size(size + len(fields)) > limit:
            break
        parts.append(fields)
        size += len(fields)
    return base64.b64encode(b"".join(parts)).decode("ascii"), len(parts) - 1


def _base64_size(size: int) -> int:
    return 4 * math.ceil(size / 3)


def _set_fields(index: int, test_set: TestSet) -> bytes:
    """One set's tensors as GraphProto initializer fields, each placed by its doc_string."""
    graph = proto_module().GraphProto()
    for kind, arrays in (("input", test_set.inputs), ("output", test_set.outputs)):
        for k, (name, array) in enumerate(arrays.items()):
            tensor = graph.initializer.add()
            tensor.CopyFrom(tensor_proto(np.asarray(array), name))
            tensor.doc_string = f"test_data_set_{index}/{kind}_{k}"
    return bytes(graph.SerializeToString())


def decode_sets(value: str, where: str) -> list[TestSet]:
    """The sets of an embedded value; anything unreadable is a FormatError naming `where`."""
    graph = proto_module().GraphProto()
    try:
        graph.ParseFromString(base64.b64decode(value, validate=True))
    except (binascii.Error, DecodeError) as err:
        raise FormatError(f"{where} is not readable embedded test data ({' '.join(str(err).split())[:200]})",
                          hint="re-embed it with kconvert MODEL --check --embed-test-data") from None
    if graph.name != EMBED_FORMAT:
        raise FormatError(f"{where} holds embedded test data in format {graph.name!r}; this kconvert reads "
                          f"{EMBED_FORMAT!r}", hint="upgrade kconvert, or re-embed the test data")
    placed: dict[int, dict[str, list[tuple[int, str, np.ndarray]]]] = {}
    for tensor in graph.initializer:
        match = PLACE_PATTERN.match(tensor.doc_string)
        if not match:
            raise FormatError(f"{where}: tensor {tensor.name!r} has no place {tensor.doc_string!r}",
                              hint="expected test_data_set_N/input_K or test_data_set_N/output_K")
        name, array = tensor_value(tensor, where)
        kinds = placed.setdefault(int(match.group(1)), {"input": [], "output": []})
        kinds[match.group(2)].append((int(match.group(3)), name, array))
    return [_placed_set(f"{where} test_data_set_{index}", placed[index]) for index in sorted(placed)]


def _placed_set(where: str, kinds: dict[str, list[tuple[int, str, np.ndarray]]]) -> TestSet:
    if not kinds["input"] or not kinds["output"]:
        raise FormatError(f"{where} needs inputs and outputs", hint="re-embed the test data")
    inputs, outputs = (_by_name(where, [(name, array) for _, name, array in sorted(kinds[kind], key=lambda t: t[0])])
                       for kind in ("input", "output"))
    return TestSet(inputs, outputs)


def read_embedded(model: Path) -> list[TestSet] | None:
    """The sets embedded in the model, or None when it holds none."""
    return embedded_sets({p.key: p.value for p in model_proto(model).metadata_props}, model)


def embedded_sets(metadata: dict[str, str], model: Path) -> list[TestSet] | None:
    """The sets in a model's metadata_props, or None when it holds none."""
    value = metadata.get(EMBED_KEY)
    return None if value is None else decode_sets(value, f"{model} ({EMBED_KEY})")


def check_embed_options(embed: bool, limit_mb: float | None, verifies: bool) -> None:
    """--embed-test-data stores a check's sets, --embed-limit caps them: checked before any work."""
    if limit_mb is not None and not embed:
        raise UsageError("--embed-limit caps --embed-test-data, which was not given", hint="add --embed-test-data")
    if embed and not verifies:
        raise UsageError("--embed-test-data stores the inputs and Keras outputs of a check, and no check was asked",
                         hint="add --check or --reference FILE.npz")
    if limit_mb is not None and not (math.isfinite(limit_mb) and limit_mb > 0):
        raise UsageError(f"--embed-limit {limit_mb}: the cap is a number of MB > 0", hint="for example --embed-limit 4")


def embed_sets(model: Path, sets: list[TestSet], limit_mb: float | None = None) -> int:
    """Store the sets in the written model (metadata `kconvert.test_data`) as far as the cap allows; a
    warning says how many fit when not all do. Returns how many were embedded."""
    from converter.api import add_onnx_metadata

    limit_mb = DEFAULT_EMBED_LIMIT_MB if limit_mb is None else limit_mb
    value, count = encode_sets(sets, int(limit_mb * BYTES_PER_MB))
    if count < len(sets):
        warnings.warn(KconvertWarning(_embed_shortfall(sets, count, limit_mb)), stacklevel=2)
    if count:
        add_onnx_metadata(model, {EMBED_KEY: value})
    return count


def _embed_shortfall(sets: list[TestSet], count: int, limit_mb: float) -> str:
    if count:
        return (f"--embed-test-data: {count} of {len(sets)} test sets fit in --embed-limit {limit_mb:g} MB; "
                "only those are embedded")
    first = _base64_size(len(_set_fields(0, sets[0]))) / BYTES_PER_MB
    return (f"--embed-test-data: no test set fits in --embed-limit {limit_mb:g} MB (the first takes {first:.3g} MB); "
            "nothing is embedded: raise --embed-limit, or keep the folder (--save-test-data)")
