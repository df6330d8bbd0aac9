"""Bad input to `kconvert verify`: test data or a reference that does not fit the model, damaged or
truncated files, missing pieces. Each is one `error:` line naming both sides, exit 2, no traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from application.cli import main
from converter.errors import UsageError
from converter.export.onnx_protos import tensor_proto
from runtime import testdata
from runtime.session import choose_providers

SMALL_CNN = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn"
X = np.zeros((3, 8, 8, 3), np.float32)  # small_cnn: input_layer (?, 8, 8, 3) -> dense (?, 5)
Y = np.zeros((3, 5), np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn converted once, with its test data beside it; each case works on a copy."""
    folder = tmp_path_factory.mktemp("cnn")
    result = CliRunner().invoke(main, [str(SMALL_CNN / "model.keras"), "-o", str(folder / "cnn.onnx"),
                                       "--reference", str(SMALL_CNN / "reference.npz"), "--save-test-data"])
    assert result.exit_code == 0, result.output
    return folder / "cnn.onnx"


def _pb(path: Path, array: np.ndarray, name: str) -> None:
    path.write_bytes(tensor_proto(array, name).SerializeToString())


def _set0(model: Path) -> Path:
    return testdata.data_folder_of(model) / "test_data_set_0"


def _renamed_input(model: Path) -> list[str]:
    _pb(_set0(model) / "input_0.pb", X, "image")
    return []


def _wrong_shape(model: Path) -> list[str]:
    _pb(_set0(model) / "input_0.pb", np.zeros((3, 8, 8, 4), np.float32), "input_layer")
    return []


def _wrong_rank(model: Path) -> list[str]:
    _pb(_set0(model) / "input_0.pb", np.zeros((3, 64, 3), np.float32), "input_layer")
    return []


def _wrong_output_shape(model: Path) -> list[str]:
    _pb(_set0(model) / "output_0.pb", np.zeros((3, 6), np.float32), "dense")
    return []


def _unknown_output(model: Path) -> list[str]:
    _pb(_set0(model) / "output_0.pb", Y, "logits")
    return []


def _text_for_floats(model: Path) -> list[str]:
    _pb(_set0(model) / "input_0.pb", np.full((3, 8, 8, 3), "a", dtype=object), "input_layer")
    return []


def _random_bytes(model: Path) -> list[str]:
    (_set0(model) / "input_0.pb").write_bytes(bytes(range(256)) * 3)
    return []


def _truncated_pb(model: Path) -> list[str]:
    path = _set0(model) / "input_0.pb"
    path.write_bytes(path.read_bytes()[:-100])
    return []


def _model_as_tensor(model: Path) -> list[str]:
    """A .pb that is a ModelProto, not a TensorProto (both parse as protobuf)."""
    shutil.copyfile(model, _set0(model) / "input_0.pb")
    return []


def _unnamed_tensor(model: Path) -> list[str]:
    _pb(_set0(model) / "input_0.pb", X, "")
    return []


def _dims_not_filled(model: Path) -> list[str]:
    tensor = tensor_proto(X, "input_layer")
    tensor.raw_data = tensor.raw_data[:-4]
    (_set0(model) / "input_0.pb").write_bytes(tensor.SerializeToString())
    return []


def _huge_dims(model: Path) -> list[str]:
    tensor = tensor_proto(X, "input_layer")
    del tensor.dims[:]
    tensor.dims.extend([2**40, 2**20])
    (_set0(model) / "input_0.pb").write_bytes(tensor.SerializeToString())
    return []


def _unknown_dtype(model: Path) -> list[str]:
    tensor = tensor_proto(X, "input_layer")
    tensor.data_type = 16  # bfloat16
    (_set0(model) / "input_0.pb").write_bytes(tensor.SerializeToString())
    return []


def _twice_named(model: Path) -> list[str]:
    _pb(_set0(model) / "input_1.pb", X, "input_layer")
    return []


def _outputs_only(model: Path) -> list[str]:
    (_set0(model) / "input_0.pb").unlink()
    return []


def _empty_folder(model: Path) -> list[str]:
    shutil.rmtree(testdata.data_folder_of(model))
    testdata.data_folder_of(model).mkdir()
    return []


def _no_test_data(model: Path) -> list[str]:
    shutil.rmtree(testdata.data_folder_of(model))
    return []


def _truncated_model(model: Path) -> list[str]:
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return []


def _npz(model: Path, **arrays: np.ndarray) -> list[str]:
    path = model.with_name("ref.npz")
    np.savez(path, **arrays)
    return ["--reference", str(path)]


def _corrupt_npz(model: Path) -> list[str]:
    args = _npz(model, x0=X, y0=Y)
    path = Path(args[1])
    data = bytearray(path.read_bytes())
    data[60:80] = b"\xff" * 20  # inside the first member: its CRC no longer matches
    path.write_bytes(bytes(data))
    return args


def _truncated_npz(model: Path) -> list[str]:
    args = _npz(model, x0=X, y0=Y)
    Path(args[1]).write_bytes(Path(args[1]).read_bytes()[:200])
    return args


def _npz_missing_input(model: Path) -> list[str]:
    return _npz(model, y0=Y)


def _npz_wrong_shape(model: Path) -> list[str]:
    return _npz(model, x0=np.zeros((3, 4, 4, 3), np.float32), y0=Y)


def _npz_fractional_for_text(model: Path) -> list[str]:
    return _npz(model, x0=np.zeros((3, 8, 8, 3), np.complex64), y0=Y)


# case -> (what breaks the data, words the one error line must hold)
CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "input name not the model's": (_renamed_input, ("image", "input_layer")),
    "input shape": (_wrong_shape, ("(3, 8, 8, 4)", "(?, 8, 8, 3)")),
    "input rank": (_wrong_rank, ("(3, 64, 3)", "(?, 8, 8, 3)")),
    "expected output shape": (_wrong_output_shape, ("(3, 6)", "(?, 5)")),
    "output name not the model's": (_unknown_output, ("logits", "dense")),
    "text for a float input": (_text_for_floats, ("object", "float")),
    "random bytes as .pb": (_random_bytes, ("input_0.pb",)),
    "truncated .pb": (_truncated_pb, ("input_0.pb",)),
    "a ModelProto as .pb": (_model_as_tensor, ("input_0.pb",)),
    "tensor without a name": (_unnamed_tensor, ("no name",)),
    "data short of its dims": (_dims_not_filled, ("input_0.pb", "does not hold its data")),
    "dims far past the data": (_huge_dims, ("input_0.pb", "does not hold its data")),
    "a data type kconvert does not read": (_unknown_dtype, ("data type 16",)),
    "two tensors of one name": (_twice_named, ("several tensors named 'input_layer'",)),
    "outputs without inputs": (_outputs_only, ("needs input_K.pb and output_K.pb", "output_0.pb")),
    "empty test data folder": (_empty_folder, ("no test_data_set_N",)),
    "no test data at all": (_no_test_data, ("cnn_test_data", "--save-test-data")),
    "truncated model": (_truncated_model, ("cnn.onnx",)),
    "corrupt .npz": (_corrupt_npz, ("ref.npz",)),
    "truncated .npz": (_truncated_npz, ("ref.npz",)),
    "npz without the input": (_npz_missing_input, ("input:input_layer", "x0", "y0")),
    "npz input of another shape": (_npz_wrong_shape, ("(3, 4, 4, 3)", "(?, 8, 8, 3)")),
    "npz of complex numbers": (_npz_fractional_for_text, ("complex64", "float")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_exit_2(case: str, converted: Path, tmp_path: Path) -> None:
    model = tmp_path / converted.name
    shutil.copyfile(converted, model)
    shutil.copytree(testdata.data_folder_of(converted), testdata.data_folder_of(model))
    damage, words = CASES[case]
    extra = damage(model)
    result = CliRunner().invoke(main, ["verify", str(model), *extra])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and "Traceback" not in result.output and "internal error" not in result.output
    message = result.output[result.output.index("error:"):]  # the error line and its hint
    for word in words:
        assert word in message, (word, result.output)


def test_a_second_input_missing_from_the_set_lists_both_sides(tmp_path: Path) -> None:
    """A two-input model (any tool's ONNX: verify matches by name) with one input's file missing."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sum", TensorProto.INT64, ["batch", 2])])
    model = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    ones = np.ones((1, 2), np.int64)
    testdata.write_sets(testdata.data_folder_of(model), [testdata.TestSet({"a": ones}, {"sum": 2 * ones})])
    result = CliRunner().invoke(main, ["verify", str(model)])
    assert result.exit_code == 2 and "its inputs (a) do not match the model's inputs (a, b)" in result.output
    testdata.write_sets(testdata.data_folder_of(model),
                        [testdata.TestSet({"a": ones, "b": ones * 0.5}, {"sum": 2 * ones})])
    result = CliRunner().invoke(main, ["verify", str(model)])
    assert result.exit_code == 2
    assert "input 'b' holds fractional values, and the model's input is int64" in result.output
    testdata.write_sets(testdata.data_folder_of(model), [testdata.TestSet({"a": ones, "b": ones}, {"sum": 2 * ones})])
    assert CliRunner().invoke(main, ["verify", str(model)]).exit_code == 0


def test_a_model_that_is_not_onnx(converted: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\xff\xff\xff\xff")
    result = CliRunner().invoke(main, ["verify", str(path), "--test-data", str(testdata.data_folder_of(converted))])
    assert result.exit_code == 2 and "not a readable ONNX model" in result.output


@pytest.mark.parametrize("provider, expected", [("cpu", ["CPUExecutionProvider"]), ("auto", ["CPUExecutionProvider"])])
def test_cpu_and_auto_report_the_providers_that_ran(provider: str, expected: list[str], converted: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(converted), "--provider", provider, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["providers"][-len(expected):] == expected


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_an_absent_gpu_provider_is_refused_before_any_work(provider: str, converted: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if f"{'CUDA' if provider == 'cuda' else 'Tensorrt'}ExecutionProvider" in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {provider}")
    verify = CliRunner().invoke(main, ["verify", str(converted), "--provider", provider])
    out = tmp_path / "m.onnx"
    convert = CliRunner().invoke(main, [str(SMALL_CNN / "model.keras"), "-o", str(out), "--provider", provider,
                                        "--reference", str(SMALL_CNN / "reference.npz")])
    for result in (verify, convert):
        assert result.exit_code == 2 and "onnxruntime here has no" in result.output and "available:" in result.output
    assert not out.exists()


def test_each_choice_falls_back_in_onnxruntime_order() -> None:
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("tensorrt", gpu) == gpu
    assert choose_providers("cuda", gpu) == gpu[1:]
    assert choose_providers("auto", gpu) == gpu[1:]  # TensorRT only by name: its engine build is slow
    assert choose_providers("cpu", gpu) == gpu[2:]
    assert choose_providers("auto", gpu[2:]) == gpu[2:]
    with pytest.raises(UsageError, match="no TensorrtExecutionProvider"):
        choose_providers("tensorrt", gpu[1:])
    with pytest.raises(UsageError, match="unknown provider"):
        choose_providers("rocm", gpu)
