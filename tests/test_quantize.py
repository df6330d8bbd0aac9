"""`kconvert MODEL --quantize int8`: a QDQ model (static, calibrated) or a dynamically quantized one
(recurrent ops), the float32 model kept as <stem>.fp32.onnx, checked against Keras' stored outputs with the
int8 tolerances, and the report's int8-vs-float32 statistics, sizes and latency. numpy/onnxruntime only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from application.cli import main
from application.quantize import fp32_path_of
from runtime.testdata import model_proto

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _quantized(fixture: str, output: Path, *extra: str | Path) -> dict[str, Any]:
    result = _run(FIXTURES / fixture / "model.keras", "-o", output, "--quantize", "int8", "--json",
                  "--reference", FIXTURES / fixture / "reference.npz", *extra)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in model_proto(path).graph.node}


@pytest.mark.parametrize("fixture", ["small_cnn", "dense_stack"])
def test_static_qdq_matches_keras_within_int8_tolerance(fixture: str, tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    report = _quantized(fixture, output)
    quantized = report["quantize"]
    assert quantized["method"] == "static" and quantized["calibration"] == "16 samples generated (seed 0)"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(output)
    assert "QuantizeLinear" not in _ops(fp32_path_of(output))  # the float32 model kept beside it
    assert Path(quantized["fp32"]) == tmp_path / "m.fp32.onnx"
    assert report["check"]["ok"] and report["check"]["rtol"] == 0.1 and report["check"]["atol"] == 0.1
    assert report["check"]["atol_scaled_by"]
    for stats in quantized["stats"]:
        assert 0 < stats["max_abs"] < 0.1 and stats["cosine"] > 0.99 and stats["fraction_out"] == 0.0
        assert stats["p99_abs"] <= stats["max_abs"] and stats["mean_abs"] <= stats["max_abs"]
    assert quantized["bytes_before"] == fp32_path_of(output).stat().st_size
    assert quantized["bytes_after"] == output.stat().st_size
    assert quantized["latency"]["runs"] >= 5 and quantized["latency"]["after_ms"] > 0
    assert quantized["ops_changed"]["QuantizeLinear"]["before"] == 0


def test_lstm_is_quantized_dynamically_and_says_why(tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    quantized = _quantized("lstm_stack", output)["quantize"]
    assert quantized["method"] == "dynamic" and "LSTM" in quantized["why"] and quantized["calibration"] == ""
    assert "DynamicQuantizeLSTM" in _ops(output) and "LSTM" not in _ops(output)
    assert quantized["bytes_after"] < quantized["bytes_before"]  # int8 weights: the LSTM's dominate


def test_gru_stays_float_and_the_report_says_so(tmp_path: Path) -> None:
    """onnxruntime has no int8 GRU kernel: the run succeeds, and the report does not pretend."""
    quantized = _quantized("gru", tmp_path / "m.onnx")["quantize"]
    assert quantized["method"] == "dynamic" and "stays float32" in quantized["why"]
    assert quantized["stats"][0]["max_abs"] == 0.0


def test_calibration_from_inputs_and_metadata_kept(tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    inputs = FIXTURES / "small_cnn" / "inputs.npz"
    quantized = _quantized("small_cnn", output, "--inputs", inputs)["quantize"]
    assert quantized["calibration"].endswith(str(inputs))
    original = {p.key: p.value for p in model_proto(fp32_path_of(output)).metadata_props}
    kept = {p.key: p.value for p in model_proto(output).metadata_props}
    assert "kconvert.keras_values" in original and {k: kept.get(k) for k in original} == original


def test_samples_size_the_calibration_and_the_terminal_reports(tmp_path: Path) -> None:
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", tmp_path / "m.onnx", "--quantize", "int8",
                  "--samples", "5")
    assert result.exit_code == 0, result.output
    assert "calibrated on 5 samples generated" in result.output and "m.fp32.onnx" in result.output
    assert "int8 vs float32" in result.output and "cosine" in result.output


@pytest.mark.parametrize(("extra", "message"), [
    (["--float16"], "two precisions"),
    (["-o", "{tmp}/m.keras"], "ONNX options do not apply to a .keras archive: --quantize"),
    (["--quantize", "int4"], "int4"),
])
def test_option_errors_exit_2_and_write_nothing(extra: list[str], message: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    base = ["-o", str(tmp_path / "m.onnx")] if "-o" not in args else []
    result = _run(FIXTURES / "dense_stack" / "model.keras", "--quantize", "int8", *base, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_samples_without_check_or_quantize_is_refused(tmp_path: Path) -> None:
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", tmp_path / "m.onnx", "--samples", "5")
    assert result.exit_code == 2 and "--quantize int8" in result.output


def test_a_failed_quantization_removes_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from application import quantize

    def broken(*_: Any) -> Any:
        raise ValueError("quantizer failed")

    monkeypatch.setattr(quantize, "_pre_processed", broken)
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", tmp_path / "m.onnx", "--quantize", "int8")
    assert result.exit_code != 0 and list(tmp_path.iterdir()) == []


def test_int8_outputs_stay_close_to_float32(tmp_path: Path) -> None:
    """The statistics are of real differences: int8 and float32 runs differ, by less than the tolerance."""
    from runtime.session import make_session, run

    output = tmp_path / "m.onnx"
    _quantized("small_cnn", output)
    feeds = dict(np.load(FIXTURES / "small_cnn" / "inputs.npz"))
    fp32, int8 = make_session(fp32_path_of(output), "cpu"), make_session(output, "cpu")
    name = fp32.get_inputs()[0].name
    batch = {name: next(iter(feeds.values())).astype(np.float32)}
    expected, actual = run(fp32, batch), run(int8, batch)
    for key, value in expected.items():
        assert not np.array_equal(value, actual[key]) and np.abs(value - actual[key]).max() < 0.1


def test_an_output_softmax_stays_float(tmp_path: Path) -> None:
    """onnxruntime's int8 Softmax range is [0, 1] in steps of 1/255: a many-class head would read 0."""
    output = tmp_path / "m.onnx"
    _quantized("small_cnn", output)
    graph = model_proto(output).graph
    producers = {name: node.op_type for node in graph.node for name in node.output}
    assert [producers[value.name] for value in graph.output] == ["Softmax"]


def test_only_the_opsets_the_int8_model_uses_are_imported(tmp_path: Path) -> None:
    """An older onnxruntime (--target-onnxruntime) may refuse a domain version it lacks, used or not."""
    output = tmp_path / "m.onnx"
    report = _quantized("small_cnn", output, "--target-onnxruntime", "1.14")
    model = model_proto(output)
    assert model.ir_version == report["target"]["ir_version"]
    assert {entry.domain for entry in model.opset_import} == {node.domain for node in model.graph.node} | {""}
