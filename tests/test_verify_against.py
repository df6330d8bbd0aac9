"""`kconvert verify MODEL.onnx --against KERAS_FILE [--localize]`: the option rules (no TensorFlow needed), and
live Keras as the reference on the test data's inputs, the user's, or generated ones (marked tf)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import converter
from application.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SMALL_CNN = FIXTURES / "small_cnn" / "model.keras"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(converter.convert(SMALL_CNN), str(path))
    return path


@pytest.mark.parametrize("options,message", [
    (["--localize"], "--localize needs --against"),
    (["--samples", "3"], "--samples: what is fed"),
    (["--inputs", "x.npz"], "--inputs: what is fed"),
    (["--against", str(SMALL_CNN), "--inputs", "x.npz", "--samples", "2"], "give one"),
    (["--against", str(SMALL_CNN), "--samples", "0"], "--samples 0: it must be at least 1"),
    (["--against", str(SMALL_CNN), "--input-shape", "image=a,b"], "expected NAME=D1,D2"),
    (["--against", str(SMALL_CNN), "--reference", str(FIXTURES / "small_cnn" / "reference.npz")], "give one"),
    (["--against", "missing.keras"], "no such file: missing.keras"),
    (["--weights", str(SMALL_CNN)], "there is no --against"),
    (["--against", str(SMALL_CNN), "--localize", "--localize-budget", "0"], "expected a size in MB above 0"),
])
def test_option_errors_are_usage_errors_before_any_work(converted: Path, options: list[str], message: str) -> None:
    code, output = run("verify", converted, *options)
    assert code == 2 and message in output and "Traceback" not in output


def test_localize_on_a_file_without_a_map_says_so(tmp_path: Path, converted: Path) -> None:
    model = onnx.load(str(converted))
    del model.metadata_props[:]
    bare = tmp_path / "foreign.onnx"
    onnx.save(model, str(bare))
    code, output = run("verify", bare, "--against", SMALL_CNN, "--localize")
    assert code == 2 and "holds no map from Keras layers" in output


@pytest.mark.tf
def test_against_keras_on_generated_samples_in_batches(converted: Path) -> None:
    code, output = run("verify", converted, "--against", SMALL_CNN, "--samples", "5", "--batch-size", "2",
                       "--seed", "3", "--json")
    report = json.loads(output)
    assert code == 0 and report["ok"]
    assert report["inputs"]["samples"] == 5 and report["inputs"]["batches"] == 3 and report["inputs"]["seed"] == 3
    assert [len(s["outputs"]) for s in report["sets"]] == [1, 1, 1]


@pytest.mark.tf
def test_against_keras_uses_the_travelling_test_data_inputs(tmp_path: Path) -> None:
    model = tmp_path / "model.keras"
    shutil.copy(SMALL_CNN, model)
    code, _ = run(model, "--check", "--save-test-data")
    assert code == 0
    code, output = run("verify", tmp_path / "model.onnx", "--against", model, "--json")
    report = json.loads(output)
    assert code == 0 and report["inputs"]["source"] == "test data" and report["inputs"]["batches"] == 2


@pytest.mark.tf
def test_against_keras_with_user_inputs_and_a_localised_html_report(tmp_path: Path, converted: Path) -> None:
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input_layer=np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype("float32"))
    bad = onnx.load(str(converted))
    kernel = next(t for t in bad.graph.initializer if t.name == "conv2d_1/kernel")
    kernel.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(kernel) * 1.1, kernel.name))
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    page = tmp_path / "report.html"
    code, output = run("verify", tmp_path / "bad.onnx", "--against", SMALL_CNN, "--inputs", inputs, "--localize",
                       "--html", page, "--json")
    report = json.loads(output)
    assert code == 4 and report["inputs"]["source"] == str(inputs) and report["inputs"]["samples"] == 3
    assert [loc["first_divergent"] for loc in report["localizations"]] == ["conv2d_1", "conv2d_1"]
    html = page.read_text()
    assert "conv2d_1" in html and html.count("<svg") == 2


@pytest.mark.tf
def test_the_terminal_names_keras_and_the_first_divergent_layer(tmp_path: Path, converted: Path) -> None:
    bad = onnx.load(str(converted))
    kernel = next(t for t in bad.graph.initializer if t.name == "dense/kernel")
    kernel.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(kernel) * 1.1, kernel.name))
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    code, output = run("verify", tmp_path / "bad.onnx", "--against", SMALL_CNN, "--localize",
                       "--localize-mode", "isolated")
    assert code == 4
    assert "does NOT match Keras" in output and "dense (Dense)" in output and "inputs: 4 samples" in output


def test_a_quantized_model_gets_the_int8_default_tolerance(tmp_path: Path) -> None:
    """onnxruntime.quantization's dynamic int8 model of a converted CNN: verify picks the quantized default
    (rtol 0.1, atol 0.1) and reports how far int8 moved the answers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = tmp_path / "model.keras"
    shutil.copy(SMALL_CNN, model)
    code, _ = run(model, "--reference", FIXTURES / "small_cnn" / "reference.npz", "--save-test-data")
    assert code == 0
    quantize_dynamic(str(tmp_path / "model.onnx"), str(tmp_path / "model_int8.onnx"), weight_type=QuantType.QInt8)
    shutil.copytree(tmp_path / "model_test_data", tmp_path / "model_int8_test_data")
    code, output = run("verify", tmp_path / "model_int8.onnx", "--json")
    report = json.loads(output)
    assert (report["rtol"], report["atol"]) == (0.1, 0.1)
    assert code == (0 if report["ok"] else 4) and report["sets"][0]["outputs"][0]["max_abs"] > 0
