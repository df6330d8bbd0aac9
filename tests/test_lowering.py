"""Lowering is a stage (converter/lowering.py): a handler bug names its layer, OpGraph passes are named
and wrapped like the layer passes, and one function writes every ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from application.cli import main
from converter.errors import EXIT_INTERNAL, UnsupportedLayerError
from converter.export import onnx as onnx_export
from converter.ir import OpGraph
from converter.layers.core import Dense
from converter.lowering import lower, lower_for_export, op_passes, run_op_passes


def _model(tmp_path: Path) -> Path:
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    return save_keras(tmp_path / "m.keras", config, {"dense": [np.arange(6, dtype="float32").reshape(3, 2)]})


def _broken_emit(*args: Any) -> list[str]:
    raise ValueError("boom")


def test_a_handler_bug_names_the_layer_and_keeps_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = converter.load(_model(tmp_path))
    monkeypatch.setattr(Dense, "emit", _broken_emit)
    with pytest.raises(RuntimeError, match=r"lowering layer 'dense' \(Dense\) failed: ValueError: boom") as info:
        lower(loaded.graph)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_handler_refusal_is_kept_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> list[str]:
        raise UnsupportedLayerError("cannot", layer="dense")

    loaded = converter.load(_model(tmp_path))
    monkeypatch.setattr(Dense, "emit", refuse)
    with pytest.raises(UnsupportedLayerError, match="cannot"):
        lower(loaded.graph)


def test_the_cli_reports_a_handler_bug_as_internal_naming_the_layer(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dense, "emit", _broken_emit)
    result = CliRunner().invoke(main, [str(_model(tmp_path)), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == EXIT_INTERNAL
    assert "internal error" in result.stderr and "layer 'dense' (Dense)" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_float16_is_a_named_opgraph_pass() -> None:
    assert op_passes() == ()
    assert [name for name, _ in op_passes(float16=True)] == ["float16"]


def test_an_opgraph_pass_bug_names_the_pass() -> None:
    def broken(ops: OpGraph) -> OpGraph:
        raise KeyError("x")

    with pytest.raises(RuntimeError, match="OpGraph pass 'probe' failed") as info:
        run_op_passes(OpGraph("g", 17), (("probe", broken),))
    assert isinstance(info.value.__cause__, KeyError)


def test_lower_for_export_is_reexported_by_the_writer() -> None:
    assert onnx_export.lower_for_export is lower_for_export


def test_one_function_writes_every_onnx_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    write = onnx_export._write

    def recording(model: onnx.ModelProto, arrays: dict[str, np.ndarray], output: Path, *args: Any,
                  **kwargs: Any) -> Path:
        calls.append(output)
        return write(model, arrays, output, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "_write", recording)
    path = _model(tmp_path)
    converter.save(converter.convert(path), tmp_path / "a.onnx")
    onnx_export.save_graph(converter.load(path).graph, tmp_path / "b.onnx")
    assert calls == [tmp_path / "a.onnx", tmp_path / "b.onnx"]


def test_save_model_moves_large_weights_to_external_data(tmp_path: Path, rng: np.random.Generator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = rng.normal(size=(64, 64)).astype("float32")
    config = sequential([layer("Dense", "dense", units=64, use_bias=False)], (64,))
    model = converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [kernel]}))
    x = rng.normal(size=(2, 64)).astype("float32")
    expected = run_onnx(model, x)[0]
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 10_000)
    path = converter.save(model, tmp_path / "out" / "m.onnx")
    assert (tmp_path / "out" / "m.onnx.data").stat().st_size >= kernel.nbytes
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {"input_layer": x})[0], expected, rtol=0, atol=0)
