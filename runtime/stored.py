"""Stored reference data: compare against Keras outputs saved earlier, with no TensorFlow at check time.

A reference file is an `.npz` (read with pickling off) holding, per model input, `input:<name>` (or
`x<i>` in model input order) and, per model output, `output:<name>` (or `y<i>` in output order).
This is how CI proves a deployed model still answers like the Keras one it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.errors import FormatError


def load_reference(path: Path, input_names: list[str], output_names: list[str]) -> tuple[dict[str, np.ndarray],
                                                                                          list[np.ndarray]]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FormatError(f"cannot read reference {path.name}: {err}", hint="pass an .npz file") from None
    with data:
        inputs = {n: _pick(data, f"input:{n}", f"x{i}", path) for i, n in enumerate(input_names)}
        outputs = [_pick(data, f"output:{n}", f"y{i}", path) for i, n in enumerate(output_names)]
    return inputs, outputs


def _pick(data: np.lib.npyio.NpzFile, key: str, positional: str, path: Path) -> np.ndarray:
    for candidate in (key, positional):
        if candidate in data.files:
            try:  # members load lazily: an object (pickled) array is refused here, never unpickled
                return np.asarray(data[candidate])
            except ValueError as err:
                raise FormatError(f"cannot read reference {path.name}: {err}",
                                  hint="store plain numeric arrays") from None
    raise FormatError(f"reference {path.name} has neither {key!r} nor {positional!r}",
                      hint=f"it holds: {', '.join(data.files)}")
