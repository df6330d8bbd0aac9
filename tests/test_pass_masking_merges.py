"""Masks that reach layers whose masked behaviour kconvert does not reproduce are refused, not ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kmodels import functional, input_layer, layer, run_onnx, save_keras

import converter
from converter.errors import UnsupportedLayerError


def _embedding_merge(tmp_path: Path, merge: str, mask_zero: bool) -> Path:
    config = functional([
        (input_layer("ids", (5,)), []),
        (layer("Embedding", "embed", input_dim=10, output_dim=4, mask_zero=mask_zero), ["ids"]),
        (layer(merge, "merge"), ["embed", "embed"]),
    ], inputs=["ids"], outputs=["merge"])
    table = np.arange(40, dtype="float32").reshape(10, 4) / 10
    return save_keras(tmp_path / "m.keras", config, {"embed": [table]})


@pytest.mark.parametrize("merge", ["Multiply", "Maximum", "Minimum"])
def test_masked_keras3_merge_is_refused(tmp_path: Path, merge: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=f"{merge} 'merge' receives an implicit mask"):
        converter.convert(_embedding_merge(tmp_path, merge, mask_zero=True))


@pytest.mark.parametrize("merge", ["Multiply", "Add"])
def test_unmasked_merge_still_converts(tmp_path: Path, merge: str) -> None:
    ids = np.array([[1, 2, 0, 0, 3]], "float32")
    (y,) = run_onnx(converter.convert(_embedding_merge(tmp_path, merge, mask_zero=merge == "Add")), ids)
    rows = np.arange(40, dtype="float32").reshape(10, 4)[ids[0].astype(int)] / 10
    np.testing.assert_allclose(y[0], rows * rows if merge == "Multiply" else rows + rows, rtol=1e-6)
