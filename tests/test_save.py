"""Writing is atomic: a failure while saving leaves neither the output nor a temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from kmodels import layer, save_keras, sequential

import converter
from converter.export import onnx as onnx_export


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [np.ones((3, 2), "float32")]}))

    def half_write(proto: onnx.ModelProto, path: Path) -> None:
        Path(path).write_bytes(proto.SerializeToString()[:10])
        raise OSError("disk full")

    monkeypatch.setattr(onnx_export, "_write_whole", half_write)
    with pytest.raises(OSError, match="disk full"):
        converter.save(model, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_metadata_records_producer_and_source(tmp_path: Path) -> None:
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [np.ones((3, 2), "float32")]},
                                         keras_version="3.9.0"))
    props = {p.key: p.value for p in model.metadata_props}
    assert model.producer_name == "kconvert" and model.producer_version == converter.__version__
    assert props["source_keras_version"] == "3.9.0" and props["source_format"] == "keras"
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and model.graph.input[0].name == "input_layer"
    assert model.graph.output[0].name == "dense"


def test_one_value_bound_to_two_outputs(tmp_path: Path) -> None:
    """A functional model returning the same tensor twice gives two valid, equal ONNX outputs."""
    from kmodels import functional, input_layer, run_onnx

    kernel = np.arange(6, dtype="float32").reshape(3, 2)
    config = functional([(input_layer("x", (3,)), []), (layer("Dense", "dense", units=2, use_bias=False), ["x"])],
                        inputs=["x"], outputs=["dense", "dense"])
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [kernel]}))
    x = np.ones((2, 3), "float32")
    assert [o.name for o in model.graph.output] == ["dense", "dense_1"]
    first, second = run_onnx(model, x)
    np.testing.assert_array_equal(first, x @ kernel)
    np.testing.assert_array_equal(second, x @ kernel)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_get_the_umask_and_their_folder(tmp_path: Path, umask: int) -> None:
    """save() and save_keras() wrote 0o600 files (a temporary file's mode, kept by the rename)."""
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    source = save_keras(tmp_path / "m.keras", config, {"dense": [np.ones((3, 2), "float32")]})
    old = os.umask(umask)
    try:
        written = [converter.save(converter.convert(source), tmp_path / "a" / "m.onnx"),
                   converter.save_keras(source, tmp_path / "b" / "m.keras").path]
    finally:
        os.umask(old)
    assert [path.stat().st_mode & 0o777 for path in written] == [0o666 & ~umask] * 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.onnx"]
