"""Real inputs for a check (`--inputs PATH`): an `.npz`, a single `.npy` (a one-input model), a folder of
`NAME.npy` files, or the ONNX test-data layout (a folder of test_data_set_N/input_K.pb; only the inputs
are read). Every array is checked against the model's inputs before anything runs: the names (both sides
listed when they differ), the dtype kind, the rank and the fixed dims, and one batch size per set. The
loaded sets are then split into batches of `batch_size` samples.

Arrays come back in Keras' layout (channels last), as a user stores them for `model.predict`; the
test-data layout holds the ONNX graph's layout (what kconvert fed), so a channels-first input
(--nchw-inputs) is permuted back on reading. `.npy` files are memory-mapped: a large set is read one
batch at a time.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import FormatError, UsageError
from converter.ir import Graph
from converter.ir.graph import CHANNELS_FIRST
from converter.ir.shape import Shape, to_channels_last
from runtime.stored import fit_array, keras_shape
from runtime.streamed import keras_io
from runtime.testdata import FILE_PATTERN, SET_PATTERN, read_tensor

__all__ = ["ModelInput", "load_inputs", "model_inputs", "onnx_model_inputs", "split_batches"]
Batch = dict[str, np.ndarray]
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)  # what np.load raises on bad bytes
NOT_IN_FILE_NAMES = ("/", "\\", ":", "\0")


@dataclass(frozen=True)
class ModelInput:
    """One model input as a user's array must fit it: Keras' shape (batch first) and dtype."""

    name: str
    shape: Shape
    dtype: str
    channels_first: bool = False  # the ONNX graph takes it channels-first (--nchw-inputs)


def model_inputs(graph: Graph) -> list[ModelInput]:
    """The inputs a user gives: a streamed graph's state inputs are fed zeros by the check (runtime/streamed.py)."""
    return [ModelInput(t.name, keras_shape(t), t.dtype, t.layout == CHANNELS_FIRST) for t in keras_io(graph)[0]]


def onnx_model_inputs(model: Path) -> list[ModelInput]:
    """The inputs of any ONNX file (initializers excluded), as declared: a named or empty dim is unknown.
    Without the Keras graph the layout is the file's own (a channels-first input stays channels-first)."""
    from google.protobuf.message import DecodeError

    from converter.export.onnx_protos import DTYPES, proto_module

    proto = proto_module().ModelProto()
    try:
        proto.ParseFromString(model.read_bytes())
    except (OSError, DecodeError) as err:
        raise FormatError(f"{model} is not a readable ONNX model ({_short(err)})", hint="pass a .onnx file") from None
    names = {code: name for name, code in DTYPES.items()}
    initializers = {t.name for t in proto.graph.initializer}
    return [ModelInput(i.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                     for d in i.type.tensor_type.shape.dim),
                       names.get(i.type.tensor_type.elem_type, "float32"))
            for i in proto.graph.input if i.name not in initializers]


def load_inputs(path: Path, inputs: list[ModelInput], batch_size: int | None = None) -> list[Batch]:
    """The sets in `path`, checked against `inputs`, split into batches of at most `batch_size` samples
    (None: each set whole)."""
    sets = _read(path, inputs)
    for index, found in enumerate(sets):
        where = path.name if len(sets) == 1 else f"{path.name} (test set {index})"
        _fit_set(where, found, inputs)
    return split_batches(sets, batch_size)


def split_batches(sets: list[Batch], batch_size: int | None) -> list[Batch]:
    """Each set cut along its first axis into batches of at most `batch_size` (slices: views, no copy)."""
    batches = []
    for found in sets:
        total = _set_batch(found)
        step = total if batch_size is None else max(1, batch_size)
        for start in range(0, total, step):
            batches.append({name: array[start:start + step] for name, array in found.items()})
    return batches


def _set_batch(found: Batch) -> int:
    sizes = [array.shape[0] for array in found.values() if array.ndim]
    return int(sizes[0]) if sizes else 1


def _read(path: Path, inputs: list[ModelInput]) -> list[Batch]:
    if path.is_dir():
        return _read_folder(path, inputs)
    if path.suffix.lower() == ".npy":
        return [_read_single_npy(path, inputs)]
    return [_read_npz(path, inputs)]


def _load(path: Path, mmap: bool = False) -> object:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except READ_ERRORS as err:
        raise FormatError(f"cannot read inputs {path.name}: {_short(err)}",
                          hint="save them with np.savez(path, NAME=array) or np.save(path, array)") from None


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _read_single_npy(path: Path, inputs: list[ModelInput]) -> Batch:
    if len(inputs) != 1:
        raise UsageError(f"inputs {path.name} is one array, and the model has {len(inputs)} inputs "
                         f"({_names(inputs)})", hint="store them in an .npz with one key per input name")
    array = _load(path, mmap=True)
    if not isinstance(array, np.ndarray):
        raise FormatError(f"cannot read inputs {path.name}: not a .npy array", hint="save it with np.save")
    return {inputs[0].name: array}


def _read_npz(path: Path, inputs: list[ModelInput]) -> Batch:
    data = _load(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FormatError(f"inputs {path.name} is not an .npz archive",
                          hint="save them with np.savez(path, NAME=array)")
    with data:
        keys = {model.name: _key_for(data.files, model, k, path) for k, model in enumerate(inputs)}
        _refuse_extra_keys(path, data.files, set(keys.values()), inputs)
        return {name: _member(data, key, path) for name, key in keys.items()}


def _key_for(files: list[str], model: ModelInput, position: int, path: Path) -> str:
    """The key holding this input: its name, `input:NAME` or `x<position>`; exactly one of them."""
    found = [key for key in (model.name, f"input:{model.name}", f"x{position}") if key in files]
    if len(set(found)) > 1:
        raise UsageError(f"inputs {path.name} holds input '{model.name}' twice ({', '.join(found)})",
                         hint="keep one key per input")
    if not found:
        raise UsageError(_missing_message(path.name, model, position, files),
                         hint="name each array after its input (NAME, input:NAME, or x0, x1, ... in model order)")
    return found[0]


def _missing_message(where: str, model: ModelInput, position: int, files: list[str]) -> str:
    return (f"inputs {where} has no array for input '{model.name}' (keys tried: {model.name}, input:{model.name}, "
            f"x{position}); it holds {', '.join(files) or 'nothing'}")


def _refuse_extra_keys(path: Path, files: list[str], used: set[str], inputs: list[ModelInput]) -> None:
    """A key that names no input is a typo or another model's data (expected outputs may stay in)."""
    extra = [key for key in files if key not in used and not key.startswith("output:") and not _positional(key, "y")]
    if extra:
        raise UsageError(f"inputs {path.name} holds {', '.join(map(repr, extra))}, which name none of the model's "
                         f"inputs ({_names(inputs)})", hint="remove those arrays or rename them after the inputs")


def _positional(key: str, letter: str) -> bool:
    return key.startswith(letter) and key[1:].isdigit()


def _member(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:  # members load lazily: an object (pickled) array is refused here, never unpickled
        return np.asarray(data[key])
    except READ_ERRORS as err:
        raise FormatError(f"cannot read array '{key}' of inputs {path.name}: {_short(err)}",
                          hint="store plain numeric or string arrays") from None


def _names(inputs: list[ModelInput]) -> str:
    return ", ".join(f"'{i.name}'" for i in inputs) or "none"


def _read_folder(folder: Path, inputs: list[ModelInput]) -> list[Batch]:
    """The test-data layout (sets, or one set's folder), else a folder of NAME.npy files."""
    sets = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := SET_PATTERN.match(p.name)) and p.is_dir())
    if sets:
        return [_read_test_set(path, inputs) for _, path in sets]
    if any(FILE_PATTERN.match(p.name) for p in folder.iterdir()):
        return [_read_test_set(folder, inputs)]
    return [_read_npy_folder(folder, inputs)]


def _read_test_set(folder: Path, inputs: list[ModelInput]) -> Batch:
    """A test_data_set_N's input_K.pb files, by the name each TensorProto carries (input K's when empty),
    in Keras' layout."""
    files = sorted((int(m.group(2)), p) for p in folder.iterdir() if (m := FILE_PATTERN.match(p.name))
                   and m.group(1) == "input")
    if not files:
        raise UsageError(f"{folder} holds no input_K.pb file",
                         hint="point --inputs at a folder of test_data_set_N folders, an .npz or a folder of .npy")
    by_name = {model.name: model for model in inputs}
    found: Batch = {}
    for position, path in files:
        name, array = read_tensor(path)
        name = name or (inputs[position].name if position < len(inputs) else f"input_{position}")
        if name in found:
            raise UsageError(f"{folder} holds input '{name}' twice", hint="keep one input_K.pb per model input")
        model = by_name.get(name)
        found[name] = _keras_layout(array) if model is not None and model.channels_first else array
    _check_names(folder.name, list(found), inputs)
    return found


def _keras_layout(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, to_channels_last(array.ndim)) if array.ndim >= 3 else array


def _read_npy_folder(folder: Path, inputs: list[ModelInput]) -> Batch:
    present = sorted(p.stem for p in folder.glob("*.npy"))
    if not present:
        raise UsageError(f"{folder} holds no .npy file and no test_data_set_N folder",
                         hint="store one NAME.npy per model input, or pass an .npz")
    for model in inputs:
        if any(c in model.name for c in NOT_IN_FILE_NAMES) or model.name in ("", ".", ".."):
            raise UsageError(f"input '{model.name}' cannot be named by a file, so a folder of .npy files cannot "
                             f"hold it", hint=f"store the inputs in an .npz (key 'input:{model.name}')")
    _check_names(folder.name, present, inputs)
    return {model.name: _npy(folder / f"{model.name}.npy") for model in inputs}


def _npy(path: Path) -> np.ndarray:
    array = _load(path, mmap=True)
    if not isinstance(array, np.ndarray):
        raise FormatError(f"cannot read inputs {path.name}: not a .npy array", hint="save it with np.save")
    return array


def _check_names(where: str, given: list[str], inputs: list[ModelInput]) -> None:
    wanted = [i.name for i in inputs]
    if sorted(given) != sorted(wanted):
        raise UsageError(f"inputs {where} hold {', '.join(map(repr, given)) or 'nothing'}, and the model's inputs "
                         f"are {_names(inputs)}", hint="give exactly one array per model input, named after it")


def _fit_set(where: str, found: Batch, inputs: list[ModelInput]) -> None:
    """Dtype kind, rank and fixed dims of each array, and one batch size across the set."""
    batches = {}
    for model in inputs:
        array = found[model.name]
        _fit_array(where, model, array)
        batches[model.name] = int(array.shape[0])
    if len(set(batches.values())) > 1:
        sizes = ", ".join(f"'{name}' {size}" for name, size in batches.items())
        raise UsageError(f"inputs {where} hold different batch sizes ({sizes})",
                         hint="every input of one set holds the same number of samples")


def _fit_array(where: str, model: ModelInput, array: np.ndarray) -> None:
    fit_array(f"inputs {where}", f"'{model.name}'", "input", model.shape, model.dtype, array,
              "the first dim is the batch (at least one sample); None: any size; Keras' order (channels last)",
              needs_samples=True)
