"""A graph onnxruntime would refuse to load is refused at conversion, naming the layer, on both writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kmodels import functional, input_layer, layer, save_keras

import converter
from application.options import ConvertRequest
from application.service import convert as run_convert
from converter.errors import UnsupportedLayerError

KERNEL = np.arange(6, dtype="float32").reshape(3, 2) / 10


def _dense_after(tmp_path: Path, dtype: str) -> Path:
    config = functional([(input_layer("inp", (3,), dtype), []), (layer("Dense", "dense", units=2), ["inp"])],
                        ["inp"], ["dense"])
    return save_keras(tmp_path / f"{dtype}.keras", config, {"dense": [KERNEL, np.zeros(2, "float32")]})


@pytest.mark.parametrize("dtype", ["int8", "string"])
def test_an_input_dtype_the_layer_cannot_take_is_refused(tmp_path: Path, dtype: str) -> None:
    path = _dense_after(tmp_path, dtype)
    with pytest.raises(UnsupportedLayerError) as api_error:
        converter.convert(path)
    assert api_error.value.layer == "dense" and "dtype" in (api_error.value.hint or "")
    output = tmp_path / "out.onnx"
    with pytest.raises(UnsupportedLayerError):
        run_convert(ConvertRequest(model=path, output=output))
    assert not output.exists()


def test_a_float32_input_still_converts(tmp_path: Path) -> None:
    model = converter.convert(_dense_after(tmp_path, "float32"))
    assert [i.name for i in model.graph.input] == ["inp"]
