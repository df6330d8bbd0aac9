"""Stored reference data: compare against Keras outputs saved earlier, with no TensorFlow at check time.

A reference file is an `.npz` (read with pickling off) holding, per model input, `input:<name>` (or
`x<i>` in model input order) and, per model output, `output:<name>` (or `y<i>` in output order).
This is how CI proves a deployed model still answers like the Keras one it came from.

`fit_reference` checks the file against the model before anything is converted: each array must have
the model's rank, its fixed dimensions, a kind of dtype the input takes, and one batch size throughout.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from converter.errors import FormatError, UsageError
from converter.ir import Graph, Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.ir.shape import Shape, format_shape, permute
from converter.passes.layout import to_channels_last
from runtime.streamed import keras_io

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float
# What np.load and an .npz member's read raise for a damaged or truncated file (a bad zip, a CRC or
# deflate error, a member cut short, an .npy header that does not parse, a pickled array refused).
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_reference(path: Path, input_names: list[str], output_names: list[str]) -> tuple[dict[str, np.ndarray],
                                                                                          list[np.ndarray]]:
    try:
        data = np.load(path, allow_pickle=False)
    except NPZ_ERRORS as err:
        raise FormatError(f"cannot read reference {path.name}: {_said(err)}", hint="pass an .npz file") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FormatError(f"reference {path.name} is a single .npy array, not an .npz archive",
                          hint="save it with np.savez(path, x0=inputs, y0=outputs)")
    with data:
        inputs = {n: _pick(data, f"input:{n}", f"x{i}", path) for i, n in enumerate(input_names)}
        outputs = [_pick(data, f"output:{n}", f"y{i}", path) for i, n in enumerate(output_names)]
    return inputs, outputs


def _pick(data: np.lib.npyio.NpzFile, key: str, positional: str, path: Path) -> np.ndarray:
    for candidate in (key, positional):
        if candidate in data.files:
            try:  # members load lazily: an object (pickled) array is refused here, never unpickled
                return np.asarray(data[candidate])
            except NPZ_ERRORS as err:
                raise FormatError(f"cannot read reference {path.name} ({candidate}): {_said(err)}",
                                  hint="store plain numeric arrays; re-save the file if it was cut short") from None
    raise UsageError(f"reference {path.name} has neither {key!r} nor {positional!r}: it does not fit this model",
                     hint=f"it holds: {', '.join(data.files) or 'nothing'}")


def _said(err: Exception) -> str:
    return " ".join(f"{err}".split())[:200] or type(err).__name__


def fit_reference(path: Path, graph: Graph) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The reference's inputs (by name, Keras layout) and expected outputs, checked against the model."""
    model_inputs, outputs, names = keras_io(graph)  # a streamed graph's states are not the reference's
    inputs, expected = load_reference(path, [t.name for t in model_inputs], names)
    batches: dict[str, int] = {}
    for tensor in model_inputs:
        _fit(path, "input", tensor.name, tensor, inputs[tensor.name], batches)
    for tensor, name, array in zip(outputs, names, expected):
        _fit(path, "output", name, tensor, array, batches)
    if len(set(batches.values())) > 1:
        sizes = ", ".join(f"{name} {size}" for name, size in batches.items())
        raise UsageError(f"reference {path.name} holds different batch sizes ({sizes})",
                         hint="store the inputs and outputs of one batch")
    return inputs, expected


def keras_shape(tensor: Tensor) -> Shape:
    """The tensor's declared shape in Keras' order (a channels-first graph tensor's is permuted back)."""
    shape = tensor.shape or ()
    return permute(shape, to_channels_last(len(shape))) if tensor.layout == CHANNELS_FIRST and shape else shape


def _fit(path: Path, role: str, name: str, tensor: Tensor, array: np.ndarray, batches: dict[str, int]) -> None:
    fit_array(f"reference {path.name}", f"{role} '{name}'", role, keras_shape(tensor), tensor.dtype, array,
              "store arrays computed by this model (None: any size; the first dimension is the batch)")
    if array.ndim:
        batches[f"{role} '{name}'"] = int(array.shape[0])


def fit_array(where: str, label: str, role: str, declared: Shape, dtype: str, array: np.ndarray, shape_hint: str,
              needs_samples: bool = False) -> None:
    """An array a user gives for a model input or output (a --reference, --inputs): a kind of dtype the
    model's `dtype` takes (integers for an integer input), its rank and fixed dims; `needs_samples`: at
    least one sample in the batch dim. `where` and `label` name it in the message."""
    wanted = "string" if dtype == "string" else "numeric"
    kind = "string" if array.dtype.kind in "US" else "numeric" if array.dtype.kind in NUMERIC_KINDS else "other"
    if kind != wanted:
        raise UsageError(f"{where}: {label} holds {array.dtype} values, and the model's {role} is {dtype}",
                         hint=f"store {dtype} values for {label}")
    if dtype.startswith(("int", "uint")) and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise UsageError(f"{where}: {label} holds fractional values, and the model's {role} is {dtype}",
                         hint=f"store integer values for {label}")
    fits = len(declared) == array.ndim and all(not isinstance(d, int) or d == n for d, n in zip(declared, array.shape))
    if not fits or (needs_samples and (not array.ndim or array.shape[0] == 0)):
        raise UsageError(f"{where}: {label} has shape {tuple(array.shape)}, and the model's {role} has shape "
                         f"{format_shape(declared)}", hint=shape_hint)
