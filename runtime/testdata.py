"""Test data in the ONNX standard layout (the ONNX model zoo's, read by onnxruntime's onnx_test_runner):
`FOLDER/test_data_set_N/input_K.pb` and `output_K.pb`, each a serialised TensorProto whose `name` is the
graph input or output it belongs to. Written after a check (the inputs fed, the Keras outputs expected)
and read by `kconvert verify`. The reader is our own (no `import onnx`, whose helpers pull ml_dtypes): it
takes raw_data (little-endian) and the typed *_data fields for the dtypes kconvert writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import FormatError, UsageError
from converter.export.onnx_protos import DTYPES, proto_module, tensor_proto

__all__ = ["TestSet", "array_of", "data_folder_of", "read_sets", "read_tensor", "write_sets"]
NUMPY_OF_ONNX = {code: np.dtype(name) for name, code in DTYPES.items()
                 if name not in ("string", "bfloat16")}
STRING, FLOAT16, BOOL = DTYPES["string"], DTYPES["float16"], DTYPES["bool"]
# Which typed field holds each data type when raw_data is empty (onnx.proto3's comments).
TYPED_FIELD = {DTYPES["float32"]: "float_data", DTYPES["float64"]: "double_data", DTYPES["int64"]: "int64_data",
               DTYPES["uint64"]: "uint64_data", DTYPES["uint32"]: "uint64_data"}
SET_PATTERN = re.compile(r"test_data_set_(\d+)$")
FILE_PATTERN = re.compile(r"(input|output)_(\d+)\.pb$")


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
        raise UsageError(f"no test data folder {folder}", hint="save it with kconvert MODEL --check "
                         "--save-test-data, or pass --test-data DIR or --reference NPZ")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := SET_PATTERN.match(p.name)) and p.is_dir())
    if not found:
        raise UsageError(f"{folder} holds no test_data_set_N folder", hint="point --test-data at the folder above them")
    return [_read_set(path) for _, path in found]


def _read_set(folder: Path) -> TestSet:
    files: dict[str, list[tuple[int, Path]]] = {"input": [], "output": []}
    for path in folder.iterdir():
        if match := FILE_PATTERN.match(path.name):
            files[match.group(1)].append((int(match.group(2)), path))
    if not files["input"] or not files["output"]:
        raise FormatError(f"{folder} needs input_K.pb and output_K.pb files",
                          hint=f"it holds: {', '.join(sorted(p.name for p in folder.iterdir())) or 'nothing'}")
    inputs, outputs = ({name: array for name, array in map(read_tensor, (p for _, p in sorted(files[kind])))}
                       for kind in ("input", "output"))
    return TestSet(inputs, outputs)


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """A .pb file's TensorProto as (name, array); a damaged file is a FormatError naming it."""
    tensor = proto_module().TensorProto()
    try:
        tensor.ParseFromString(path.read_bytes())
        return tensor.name, array_of(tensor)
    except FormatError as err:
        raise FormatError(f"{path}: {err.message}", hint=err.hint) from None
    except Exception as err:  # protobuf's DecodeError, or data that does not fill the dims
        raise FormatError(f"{path} is not a readable ONNX TensorProto ({' '.join(str(err).split())[:200]})",
                          hint="re-save the test data") from None


def array_of(tensor: Any) -> np.ndarray:
    """numpy_helper.to_array for the dtypes kconvert writes and reads."""
    shape = tuple(int(d) for d in tensor.dims)
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
