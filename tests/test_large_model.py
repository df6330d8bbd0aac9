"""Writing models: streamed initializers, ONNX external data (automatic past 2 GB), atomic output."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from converter.export import onnx as onnx_export
from converter.ir import Graph, Node, Tensor
from converter.layers.core import DenseSpec

GIB = 1024**3


def _dense_graph(kernel: np.ndarray, bias: np.ndarray) -> Graph:
    """A one-Dense graph built directly in the IR (no Keras file: a 2 GB file would double the cost)."""
    x = Tensor("x", ("batch", kernel.shape[0]))
    y = Tensor("y", ("batch", kernel.shape[1]))
    node = Node("Dense", "dense", spec=DenseSpec(units=kernel.shape[1]),
                weights={"kernel": kernel, "bias": bias}, inputs=[x], outputs=[y])
    y.producer = node
    return Graph("big", inputs=[x], outputs=[y], nodes=[node], output_names=["y"])


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("external", [False, True])
def test_streamed_file_equals_the_in_memory_model(tmp_path: Path, rng: np.random.Generator, external: bool) -> None:
    config = sequential([layer("Dense", "d1", units=300, activation="relu", use_bias=True),
                         layer("Dense", "d2", units=3, activation="linear", use_bias=True)], (40,))
    weights = {"d1": [rng.normal(size=(40, 300)).astype("float32"), rng.normal(size=300).astype("float32")],
               "d2": [rng.normal(size=(300, 3)).astype("float32"), rng.normal(size=3).astype("float32")]}
    loaded = converter.load(save_keras(tmp_path / "m.keras", config, weights))
    path = onnx_export.save_graph(loaded.graph, tmp_path / "model.onnx", external_data=external)
    in_memory = onnx_export.export(loaded.graph)
    loaded.artifact.close()
    assert (tmp_path / "model.onnx.data").exists() == external
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.keras", "model.onnx"]
                                                                + (["model.onnx.data"] if external else []))
    onnx.checker.check_model(str(path))
    x = rng.normal(size=(2, 40)).astype("float32")
    got = _session(path).run(None, {"input_layer": x})[0]
    assert_close(got, run_onnx(in_memory, x)[0], rtol=0, atol=0)


def test_weights_past_the_threshold_go_to_external_data(tmp_path: Path, rng: np.random.Generator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 10_000)
    kernel, bias = rng.normal(size=(64, 64)).astype("float32"), rng.normal(size=64).astype("float32")
    path = onnx_export.save_graph(_dense_graph(kernel, bias), tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").stat().st_size >= kernel.nbytes
    assert path.stat().st_size < kernel.nbytes
    x = rng.normal(size=(3, 64)).astype("float32")
    assert_close(_session(path).run(None, {"x": x})[0], x @ kernel + bias)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(onnx_export, "_write_inline", broken)
    graph = _dense_graph(np.ones((4, 2), "float32"), np.zeros(2, "float32"))
    with pytest.raises(OSError, match="disk full"):
        onnx_export.save_graph(graph, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def _available_memory() -> int:
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.slow
def test_model_over_2gb_is_written_with_external_data_and_runs(tmp_path: Path) -> None:
    """A 2 GiB Dense kernel (rank-1 structured, so numpy checks it cheaply), written and run in onnxruntime."""
    rows, units = 32768, 16384  # 2 GiB of float32
    if shutil.disk_usage(tmp_path).free < 5 * GIB:
        pytest.skip("needs 5 GiB of free disk for a 2 GiB model")
    if not os.path.exists("/proc/meminfo") or _available_memory() < 9 * GIB:
        pytest.skip("needs 9 GiB of available memory (the kernel, and onnxruntime's copy of it)")
    a = np.linspace(-1, 1, rows, dtype="float32")
    b = np.linspace(0.5, 1.5, units, dtype="float32")
    kernel = np.multiply.outer(a, b)
    assert kernel.nbytes > onnx_export.EXTERNAL_DATA_THRESHOLD
    path = onnx_export.save_graph(_dense_graph(kernel, np.zeros(units, "float32")), tmp_path / "model.onnx")
    del kernel
    assert (tmp_path / "model.onnx.data").stat().st_size >= rows * units * 4
    assert path.stat().st_size < 1024**2
    x = np.linspace(-1, 1, 2 * rows, dtype="float32").reshape(2, rows)
    got = _session(path).run(None, {"x": x})[0]
    assert_close(got, np.outer(x @ a, b), rtol=1e-3, atol=1e-3)
