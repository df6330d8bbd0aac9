"""`kconvert verify`: test data saved in the ONNX standard layout by a check, replayed without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from click.testing import CliRunner, Result
from kmodels import layer, save_legacy_h5, sequential

from application.cli import main
from converter.errors import FormatError
from converter.export.onnx_protos import proto_module, tensor_proto
from runtime import testdata
from runtime.stats import output_stats

SMALL_CNN = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn"


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    """small_cnn converted and checked against its reference, with the test data saved beside it."""
    onnx_path = tmp_path / "cnn.onnx"
    result = _run(SMALL_CNN / "model.keras", "-o", onnx_path, "--reference", SMALL_CNN / "reference.npz",
                  "--save-test-data", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["test_data"] == str(tmp_path / "cnn_test_data")
    assert (tmp_path / "cnn_test_data" / "test_data_set_0" / "input_0.pb").is_file()
    return onnx_path


def test_saved_test_data_verifies_in_every_report_format(saved: Path, tmp_path: Path) -> None:
    junit, md = tmp_path / "r.xml", tmp_path / "r.md"
    result = _run("verify", saved, "--json", "--junit", junit, "--markdown", md)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    stats = report["sets"][0]["outputs"][0]
    assert report["ok"] and stats["name"] == "dense" and stats["out_of_tolerance"] == 0
    assert stats["cosine"] > 0.999999 and report["rtol"] == 1e-4
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["dense"]
    text = md.read_text()
    assert "| set | output | status |" in text and "| 0 | `dense` | ok |" in text
    assert _run("verify", saved).exit_code == 0


def test_verify_from_a_reference_npz(saved: Path) -> None:
    assert _run("verify", saved, "--reference", SMALL_CNN / "reference.npz").exit_code == 0


def test_a_perturbed_initializer_fails_with_its_statistics(saved: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(saved))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[0] += 1.0
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    onnx.save(model, str(saved))
    junit = tmp_path / "r.xml"
    result = _run("verify", saved, "--json", "--junit", junit)
    assert result.exit_code == 4, result.output
    stats = json.loads(result.output)["sets"][0]["outputs"][0]
    assert stats["status"] == "mismatch" and stats["out_of_tolerance"] > 0 and stats["max_abs"] > 1e-3
    assert stats["atol_needed"] > 1e-5
    failure = next(ElementTree.parse(junit).getroot().iter("failure"))
    assert "out of tolerance" in (failure.text or "")
    loose = _run("verify", saved, "--tol", f"dense=0,{stats['atol_needed'] * 1.01}")
    assert loose.exit_code == 0, loose.output


def test_a_corrupt_pb_is_a_clear_error(saved: Path) -> None:
    pb = saved.with_name("cnn_test_data") / "test_data_set_0" / "output_0.pb"
    pb.write_bytes(b"\xff\xff\xff garbage")
    result = _run("verify", saved)
    assert result.exit_code == 2
    assert "output_0.pb" in result.output and "Traceback" not in result.output


def test_a_mismatched_input_name_lists_both_sides(saved: Path) -> None:
    pb = saved.with_name("cnn_test_data") / "test_data_set_0" / "input_0.pb"
    name, array = testdata.read_tensor(pb)
    pb.write_bytes(tensor_proto(array, "not_the_input").SerializeToString())
    result = _run("verify", saved)
    assert result.exit_code == 2
    assert "not_the_input" in result.output and name in result.output


def test_missing_test_data_and_bad_tolerance_are_usage_errors(tmp_path: Path, saved: Path) -> None:
    assert _run("verify", saved, "--test-data", tmp_path / "none").exit_code == 2
    assert _run("verify", saved, "--tol", "dense=abc").exit_code == 2
    result = _run(SMALL_CNN / "model.keras", "-o", tmp_path / "x.onnx", "--save-test-data")
    assert result.exit_code == 2 and "--save-test-data" in result.output
    assert not (tmp_path / "x.onnx").exists()


ARRAYS = {
    "float32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "float16": np.array([0.5, -1e-3], np.float16),
    "float64": np.array([[1e-300, 2.5]]), "int8": np.array([-128, 127], np.int8), "uint8": np.array([0, 255], np.uint8),
    "int32": np.array([-(2**31), 7], np.int32), "int64": np.array([2**40, -1], np.int64),
    "bool": np.array([True, False, True]), "string": np.array([["a", "é"], ["", "zz"]], dtype=object),
    "scalar": np.float32(3.5),
}


@pytest.mark.parametrize("key", sorted(ARRAYS))
def test_every_dtype_round_trips(tmp_path: Path, key: str) -> None:
    array = np.asarray(ARRAYS[key])
    folder = testdata.write_sets(tmp_path / "d", [testdata.TestSet({"x": array}, {"y": array})])
    [back] = testdata.read_sets(folder)
    for got in (back.inputs["x"], back.outputs["y"]):
        assert got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array)


@pytest.mark.parametrize("key", ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"])
def test_typed_data_fields_are_read(key: str) -> None:
    """Other tools write the typed *_data fields instead of raw_data (float16 as its bits in int32_data)."""
    array = np.asarray(ARRAYS[key])
    tensor = proto_module().TensorProto(name="t", data_type=tensor_proto(array, "t").data_type)
    tensor.dims.extend(array.shape)
    field = {"float32": "float_data", "float64": "double_data", "int64": "int64_data"}.get(key, "int32_data")
    values = array.view(np.uint16).astype(np.int32) if key == "float16" else array
    values = values.astype(np.int32) if key == "bool" else values
    getattr(tensor, field).extend(values.ravel().tolist())
    got = testdata.array_of(tensor)
    assert got.dtype == array.dtype and np.array_equal(got, array)


def test_unknown_data_type_is_a_format_error() -> None:
    tensor = proto_module().TensorProto(name="t", data_type=16)  # bfloat16
    with pytest.raises(FormatError, match="data type 16"):
        testdata.array_of(tensor)


def test_stats_of_a_known_error() -> None:
    expected = np.zeros(100, np.float32)
    actual = expected.copy()
    actual[:3] = 0.5
    stats = output_stats("y", actual, expected, rtol=1e-4, atol=1e-5)
    assert stats.out_of_tolerance == 3 and stats.fraction_out == 0.03 and stats.max_abs == 0.5
    assert stats.atol_needed == pytest.approx(0.5) and not stats.ok
    assert output_stats("y", actual, expected[:5], 1e-4, 1e-5).status == "shape"


def test_verify_imports_no_tensorflow(saved: Path) -> None:
    code = ("import sys\nfrom application.cli import main\ntry:\n    main(['verify', sys.argv[1]])\n"
            "except SystemExit as end:\n    assert end.code in (0, None), end.code\n"
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_live_check_saves_one_set_per_batch(tmp_path: Path, rng: np.random.Generator,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--check (Keras faked, as in test_cli) saves batches 1 and 3, and they verify."""
    import runtime.check as check

    kernel = rng.normal(size=(3, 2)).astype("float32")
    config = sequential([layer("Dense", "dense", units=2, activation="tanh", use_bias=False)], (3,))
    model = save_legacy_h5(tmp_path / "m.h5", config, {"dense": [kernel]})
    monkeypatch.setattr("application.service.load_keras_model", lambda artifact, weights, custom_objects=None: object())
    monkeypatch.setattr("application.options.tensorflow_installed", lambda: True)
    monkeypatch.setattr(check, "reference_outputs", lambda model, inputs, names=None: [np.tanh(inputs[0] @ kernel)])
    assert _run(model, "--check", "--save-test-data").exit_code == 0
    sets = testdata.read_sets(tmp_path / "m_test_data")
    assert [s.inputs[next(iter(s.inputs))].shape[0] for s in sets] == [1, 3]
    assert _run("verify", tmp_path / "m.onnx").exit_code == 0


def test_channels_first_io_is_saved_in_the_graph_layout(tmp_path: Path) -> None:
    onnx_path = tmp_path / "nchw.onnx"
    result = _run(SMALL_CNN / "model.keras", "-o", onnx_path, "--reference", SMALL_CNN / "reference.npz",
                  "--nchw-inputs", "--save-test-data")
    assert result.exit_code == 0, result.output
    assert _run("verify", onnx_path).exit_code == 0
