"""Test data embedded in the ONNX file (`--embed-test-data`): the container's round trip, the size cap and
its warning, the options' checks, and the order verify reads test data in (folder given, folder beside,
embedded). onnxruntime reads the written file; nothing but the protobuf classes decodes the sets."""

from __future__ import annotations

import base64
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result

from application.cli import main
from converter.errors import FormatError, KconvertWarning, UsageError
from converter.export.onnx_protos import proto_module
from runtime import testdata
from runtime.replay import replay
from runtime.testdata import EMBED_KEY, TestSet

SMALL_CNN = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn"


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _sets(count: int, rows: int = 2) -> list[TestSet]:
    rng = np.random.default_rng(0)
    return [TestSet({"x": rng.random((rows, 4), np.float32), "ids": np.arange(rows, dtype=np.int64) + i,
                     "text": np.array(["a", f"é{i}"][:rows], dtype=object)},
                    {"y": rng.random((rows, 3)).astype(np.float16), "flag": np.array([True, False][:rows])})
            for i in range(count)]


@pytest.fixture()
def embedded(tmp_path: Path) -> Path:
    """small_cnn converted and checked against its reference, the test data only inside the ONNX file."""
    onnx_path = tmp_path / "cnn.onnx"
    result = _run(SMALL_CNN / "model.keras", "-o", onnx_path, "--reference", SMALL_CNN / "reference.npz",
                  "--embed-test-data")
    assert result.exit_code == 0, result.output
    assert not testdata.data_folder_of(onnx_path).exists()
    return onnx_path


def test_sets_round_trip_through_the_container_in_order_with_names_and_dtypes() -> None:
    sets = _sets(3)
    value, count = testdata.encode_sets(sets)
    assert count == 3 and value.isascii()
    back = testdata.decode_sets(value, "here")
    assert len(back) == 3
    for ours, theirs in zip(sets, back):
        for mine, decoded in ((ours.inputs, theirs.inputs), (ours.outputs, theirs.outputs)):
            assert list(mine) == list(decoded)  # K order: the order of the graph's inputs/outputs
            for name in mine:
                assert decoded[name].dtype == mine[name].dtype and np.array_equal(decoded[name], mine[name])


def test_the_cap_embeds_the_sets_that_fit_in_order() -> None:
    sets = _sets(4, rows=2)
    whole, _ = testdata.encode_sets(sets)
    two, _ = testdata.encode_sets(sets[:2])
    value, count = testdata.encode_sets(sets, limit=len(two))
    assert (count, value) == (2, two)
    assert testdata.encode_sets(sets, limit=len(two) - 1)[1] == 1
    assert testdata.encode_sets(sets, limit=len(whole))[1] == 4
    assert testdata.encode_sets(sets, limit=10)[1] == 0


def test_an_embedded_model_loads_in_onnxruntime_and_verifies_from_the_file_alone(embedded: Path) -> None:
    session = ort.InferenceSession(str(embedded), providers=["CPUExecutionProvider"])
    assert EMBED_KEY in session.get_modelmeta().custom_metadata_map
    source, sets = testdata.travelling_sets(embedded)
    assert source == embedded and len(sets) == 1
    assert list(sets[0].inputs) == ["input_layer"] and list(sets[0].outputs) == ["dense"]
    results, providers = replay(embedded, sets, "cpu", {}, (1e-4, 1e-5))
    assert results[0].ok and providers == ["CPUExecutionProvider"]
    with np.load(SMALL_CNN / "reference.npz") as reference:  # x0/y0: what the check fed and expected
        assert np.array_equal(sets[0].inputs["input_layer"], reference["x0"])
        assert np.array_equal(sets[0].outputs["dense"], reference["y0"])


def test_a_perturbed_embedded_output_fails_the_replay(embedded: Path) -> None:
    _, sets = testdata.travelling_sets(embedded)
    wrong = TestSet(sets[0].inputs, {"dense": sets[0].outputs["dense"] + 1e-2})
    results, _ = replay(embedded, [wrong], "cpu", {}, (1e-4, 1e-5))
    assert not results[0].ok and results[0].outputs[0].status == "mismatch"


def test_the_folder_beside_the_model_comes_before_the_embedded_sets(embedded: Path, tmp_path: Path) -> None:
    beside = testdata.data_folder_of(embedded)
    testdata.write_sets(beside, _sets(2))
    source, sets = testdata.travelling_sets(embedded)
    assert source == beside and len(sets) == 2
    given = testdata.write_sets(tmp_path / "other", _sets(3))
    assert testdata.travelling_sets(embedded, given)[0] == given
    shutil.rmtree(beside)
    assert testdata.travelling_sets(embedded)[0] == embedded


def test_no_folder_and_nothing_embedded_says_how_to_make_test_data(tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    assert _run(SMALL_CNN / "model.keras", "-o", plain).exit_code == 0
    with pytest.raises(UsageError, match="no folder .*plain_test_data beside it and none embedded") as err:
        testdata.travelling_sets(plain)
    assert "--embed-test-data" in (err.value.hint or "")


def test_the_cap_warns_how_many_fit_and_none_fitting_embeds_nothing(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    assert _run(SMALL_CNN / "model.keras", "-o", model).exit_code == 0
    before = model.read_bytes()
    sets = _sets(3, rows=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert testdata.embed_sets(model, sets, limit_mb=1e-6) == 0
    assert model.read_bytes() == before and testdata.read_embedded(model) is None
    assert "no test set fits in --embed-limit 1e-06 MB" in str(caught[0].message)
    one = len(testdata.encode_sets(sets[:1])[0]) / testdata.BYTES_PER_MB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert testdata.embed_sets(model, sets, limit_mb=one) == 1
    assert caught[0].category is KconvertWarning and "1 of 3 test sets fit" in str(caught[0].message)
    assert len(testdata.read_embedded(model) or []) == 1
    assert model.read_bytes().startswith(before)  # appended: the model's own bytes are untouched


def test_cli_warning_when_the_cap_is_too_small(tmp_path: Path) -> None:
    result = _run(SMALL_CNN / "model.keras", "-o", tmp_path / "m.onnx", "--reference", SMALL_CNN / "reference.npz",
                  "--embed-test-data", "--embed-limit", "0.001")
    assert result.exit_code == 0 and "warning: --embed-test-data: no test set fits" in result.output


@pytest.mark.parametrize("args, words", [
    (["--embed-test-data"], "no check was asked"),
    (["--reference", SMALL_CNN / "reference.npz", "--embed-limit", "2"], "--embed-limit caps --embed-test-data"),
    (["--reference", SMALL_CNN / "reference.npz", "--embed-test-data", "--embed-limit", "0"], "the cap is"),
    (["--reference", SMALL_CNN / "reference.npz", "--embed-test-data", "--embed-limit", "nan"], "the cap is"),
])
def test_embed_options_are_checked_before_any_work(args: list[str | Path], words: str, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = _run(SMALL_CNN / "model.keras", "-o", out, *args)
    assert result.exit_code == 2 and words in result.output and not out.exists()


def _graph(name: str, doc: str = "test_data_set_0/input_0") -> str:
    graph = proto_module().GraphProto(name=name)
    graph.initializer.add(name="x", data_type=1, dims=[1], raw_data=b"\0\0\0\0", doc_string=doc)
    return base64.b64encode(graph.SerializeToString()).decode()


@pytest.mark.parametrize("value, words", [
    ("not base64!", "not readable embedded test data"),
    (base64.b64encode(b"\xff\xff\xff").decode(), "not readable embedded test data"),
    (_graph("kconvert.test_data/9"), "format 'kconvert.test_data/9'"),
    (_graph("kconvert.test_data/1", doc="somewhere"), "has no place 'somewhere'"),
    (_graph("kconvert.test_data/1"), "needs inputs and outputs"),
])
def test_damaged_embedded_data_is_a_format_error(value: str, words: str) -> None:
    with pytest.raises(FormatError, match=words.replace("(", r"\(")):
        testdata.decode_sets(value, "m.onnx")


def test_embedding_in_an_external_data_model_leaves_its_weights_file_alone(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).random((256, 8), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                              [numpy_helper.from_array(weight, "w")])
    model = tmp_path / "ext.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model),
                    save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    weights = model.with_name("ext.onnx.data")
    before = weights.read_bytes()
    x = np.ones((2, 256), np.float32)
    assert testdata.embed_sets(model, [TestSet({"x": x}, {"y": x @ weight})]) == 1
    assert weights.read_bytes() == before and len(before) == weight.nbytes
    source, embedded = testdata.travelling_sets(model)
    results, _ = replay(source, embedded, "cpu", {}, (1e-4, 1e-5))
    assert results[0].ok
