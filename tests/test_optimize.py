"""`kconvert MODEL --optimize`: onnxslim's rewrite replaces the file only when it matches the unoptimised
model; the check, the test data and kconvert's metadata are the optimised file's; the report says what
changed. Tests that run onnxslim skip without it (the CI venv has it via the test extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from application import optimize
from application.cli import main
from runtime import testdata

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLIM_REASON = "onnxslim is in the test extra: pip install -e '.[test]'"
onnx = pytest.importorskip("onnx")


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _convert(fixture: str, output: Path, *extra: str) -> dict[str, Any]:
    result = _run(FIXTURES / fixture / "model.keras", "-o", output, "--optimize", "--json", *extra)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def _slim_or_skip() -> Any:
    return pytest.importorskip("onnxslim", reason=SLIM_REASON)


@pytest.mark.parametrize("fixture", ["lstm_stack", "gru", "small_cnn", "merge_concatenate"])
def test_optimised_fixtures_match_keras_and_verify(fixture: str, tmp_path: Path) -> None:
    _slim_or_skip()
    output = tmp_path / "m.onnx"
    report = _convert(fixture, output, "--reference", str(FIXTURES / fixture / "reference.npz"), "--save-test-data")
    optimized = report["optimize"]
    assert optimized["applied"] and optimized["reason"] == ""
    assert report["check"]["ok"]
    assert all(diff["status"] == "ok" for diff in optimized["outputs"])
    assert optimized["bytes_after"] == output.stat().st_size
    assert optimized["latency"]["runs"] >= optimize.MIN_RUNS and optimized["latency"]["after_ms"] > 0
    assert _run("verify", output).exit_code == 0  # the saved test data is the optimised file's


def test_nodes_shrink_where_onnxslim_fuses_and_the_terminal_says_so(tmp_path: Path) -> None:
    _slim_or_skip()
    optimized = _convert("lstm_stack", tmp_path / "a.onnx")["optimize"]
    assert optimized["nodes_after"] < optimized["nodes_before"]
    assert optimized["ops_changed"]["Transpose"]["after"] < optimized["ops_changed"]["Transpose"]["before"]
    assert len(onnx.load(str(tmp_path / "a.onnx")).graph.node) == optimized["nodes_after"]
    result = _run(FIXTURES / "lstm_stack" / "model.keras", "-o", tmp_path / "b.onnx", "--optimize")
    assert result.exit_code == 0, result.output
    assert f"{optimized['nodes_before']} -> {optimized['nodes_after']} nodes" in result.output
    assert "Transpose" in result.output and "latency" in result.output


def test_metadata_survives_and_removed_layer_values_are_reported(tmp_path: Path) -> None:
    _slim_or_skip()
    plain, slim = tmp_path / "plain.onnx", tmp_path / "slim.onnx"
    reference = str(FIXTURES / "lstm_stack" / "reference.npz")
    assert _run(FIXTURES / "lstm_stack" / "model.keras", "-o", plain).exit_code == 0
    optimized = _convert("lstm_stack", slim, "--reference", reference, "--embed-test-data")["optimize"]
    before = {p.key: p.value for p in onnx.load(str(plain)).metadata_props}
    after_model = onnx.load(str(slim))
    after = {p.key: p.value for p in after_model.metadata_props}
    assert "kconvert.keras_values" in before
    assert all(after[key] == value for key, value in before.items())  # provenance and the layer map
    assert testdata.read_embedded(slim) is not None
    layer_map = json.loads(after["kconvert.keras_values"])
    assert layer_map  # the map is there; each layer's value exists, or the report names it unmapped
    values = {name for node in after_model.graph.node for name in node.output}
    values |= {i.name for i in after_model.graph.input}
    from runtime.value_map import value_map_of

    mapped = value_map_of(slim)
    assert mapped is not None
    missing = [m.layer for m in mapped.layers if m.value not in values]
    assert missing == optimized["unmapped_layers"]


def test_metadata_onnxslim_drops_is_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnxslim = _slim_or_skip()
    real = onnxslim.slim

    def dropping(model: Any) -> Any:
        slim = real(model)
        del slim.metadata_props[:]
        slim.metadata_props.add(key="onnxslim.note", value="added")
        return slim

    monkeypatch.setattr(onnxslim, "slim", dropping)
    output = tmp_path / "m.onnx"
    optimized = _convert("gru", output)["optimize"]
    keys = [p.key for p in onnx.load(str(output)).metadata_props]
    assert "kconvert.keras_values" in optimized["metadata_restored"]
    assert keys[:len(optimized["metadata_restored"])] == optimized["metadata_restored"]
    assert keys[-1] == "onnxslim.note"


def test_a_mismatch_keeps_the_unoptimised_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnxslim = _slim_or_skip()
    from onnx import numpy_helper

    def breaking(model: Any) -> Any:
        largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        array = numpy_helper.to_array(largest).copy()
        array.flat[0] += 0.5
        largest.CopyFrom(numpy_helper.from_array(array, largest.name))
        return model

    monkeypatch.setattr(onnxslim, "slim", breaking)
    plain, output = tmp_path / "plain.onnx", tmp_path / "m.onnx"
    assert _run(FIXTURES / "dense_stack" / "model.keras", "-o", plain).exit_code == 0
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", output, "--optimize", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert not report["optimize"]["applied"] and "kept unoptimised" in report["optimize"]["reason"]
    assert any("--optimize" in line for line in report["warnings"])
    assert output.read_bytes() == plain.read_bytes()


def test_external_data_is_not_optimised(tmp_path: Path) -> None:
    from converter.api import WrittenOnnx
    from runtime.compare import Tolerance

    path = tmp_path / "big.onnx"
    written = WrittenOnnx(path, 17, 3, [path, tmp_path / "big.onnx.data"])
    with pytest.warns(UserWarning, match="external data"):
        result = optimize.optimize_written(written, None, Tolerance(), {})  # type: ignore[arg-type]
    assert not result.applied and "unoptimised" in result.reason and result.to_dict()["latency"] is None


def test_without_onnxslim_it_is_a_usage_error_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    real = optimize.importlib.util.find_spec
    monkeypatch.setattr(optimize.importlib.util, "find_spec", lambda name: None if name == "onnxslim" else real(name))
    output = tmp_path / "m.onnx"
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", output, "--optimize", "--json")
    assert result.exit_code == 2
    error = json.loads(result.output)["error"]
    assert "onnxslim" in error["message"] and "kconvert-onnx[optimize]" in error["hint"]
    assert not output.exists()


def test_optimize_does_not_apply_to_a_keras_archive(tmp_path: Path) -> None:
    result = _run(FIXTURES / "dense_stack" / "model.keras", "-o", tmp_path / "m.keras", "--optimize")
    assert result.exit_code == 2 and "--optimize" in result.output
