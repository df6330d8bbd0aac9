"""What --check feeds: --inputs (.npz, .npy, a folder of NAME.npy, the test-data layout), generated inputs
(--samples, --seed, --input-shape), --batch-size, their checks before any work, and the progress rule.
Keras is faked here (as in test_cli): tests/test_tf_inputs.py runs the same against live Keras."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from kmodels import functional, input_layer, layer, save_legacy_h5, sequential
from rich.console import Console

from application.cli import main
from application.progress import Progress, progress_wanted
from converter.errors import FormatError, UsageError
from converter.ir.shape import BATCH
from runtime.check import merge_diffs
from runtime.compare import OutputDiff
from runtime.testdata import TestSet, read_sets, write_sets
from runtime.user_inputs import ModelInput, load_inputs, onnx_model_inputs, split_batches

KERNEL = np.random.default_rng(7).normal(size=(5, 2)).astype("float32")
WEIGHTS: dict[str, Any] = {"dense": [KERNEL]}


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> list[list[np.ndarray]]:
    """Keras faked by numpy (tanh of the inputs joined, times KERNEL); returns what Keras was fed."""
    import runtime.check as check

    calls: list[list[np.ndarray]] = []

    def keras(model: Any, inputs: list[np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
        calls.append([np.array(a) for a in inputs])
        return [np.tanh(np.concatenate(inputs, axis=-1) @ KERNEL)]

    monkeypatch.setattr("application.service.load_keras_model", lambda artifact, weights, custom_objects=None: object())
    monkeypatch.setattr("application.options.tensorflow_installed", lambda: True)
    monkeypatch.setattr(check, "reference_outputs", keras)
    return calls


def _two_inputs(tmp_path: Path) -> Path:
    """Inputs 'a' (2,) and 'b' (3,), concatenated, Dense(2, tanh) with KERNEL."""
    config = functional([(input_layer("a", (2,)), []), (input_layer("b", (3,)), []),
                         (layer("Concatenate", "join", axis=-1), ["a", "b"]),
                         (layer("Dense", "dense", units=2, activation="tanh", use_bias=False), ["join"])],
                        ["a", "b"], ["dense"])
    return save_legacy_h5(tmp_path / "two.h5", config, WEIGHTS)


def _sequence(tmp_path: Path) -> Path:
    """One input 'input_layer' of shape (None, None, 5): unknown time steps."""
    config = sequential([layer("Dense", "dense", units=2, activation="tanh", use_bias=False)], (None, 5))
    return save_legacy_h5(tmp_path / "seq.h5", config, WEIGHTS)


def _run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _report(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def _error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


# --- options, checked before the model is read --------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--inputs", "{npz}"], "--check was not given"),
    (["--samples", "8"], "--check was not given"),
    (["--batch-size", "8", "--reference", "{npz}"], "--reference holds its own inputs"),
    (["--check", "--inputs", "{npz}", "--samples", "3"], "--inputs gives the inputs"),
    (["--check", "--inputs", "{npz}", "--input-shape", "a=3"], "--inputs gives the inputs"),
    (["--check", "--samples", "0"], "--samples 0"),
    (["--check", "--batch-size", "0"], "--batch-size 0"),
    (["--check", "--seed", "-1"], "--seed -1"),
    (["--check", "--input-shape", "a=3,x"], "expected NAME=D1,D2"),
    (["--check", "--input-shape", "=3"], "expected NAME=D1,D2"),
    (["--check", "--input-shape", "a=0"], "expected NAME=D1,D2"),
    (["--check", "--input-shape", "a=3", "--input-shape", "a=4"], "twice"),
    (["--check", "--inputs", "{missing}"], "no such file"),
    (["--check", "--inputs", "{txt}"], "expected an .npz or .npy file"),
])
def test_options_are_refused_before_the_model_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      args: list[str], says: str) -> None:
    monkeypatch.setattr("application.options.tensorflow_installed", lambda: True)
    model = tmp_path / "m.h5"
    model.write_bytes(b"not a model at all")  # an option error must come first
    paths = {"npz": tmp_path / "in.npz", "missing": tmp_path / "none.npz", "txt": tmp_path / "in.txt"}
    np.savez(paths["npz"], a=np.zeros((1, 2)))
    paths["txt"].write_text("1 2 3")
    output = _error(_run(model, *[a.format(**paths) for a in args]))
    assert says in output and "not a model" not in output
    assert not (tmp_path / "m.onnx").exists()


def test_input_shape_is_checked_against_the_model_before_writing(tmp_path: Path, fed: list[Any]) -> None:
    model = _sequence(tmp_path)
    unknown = _error(_run(model, "--check", "--input-shape", "image=7,5"))
    assert "'image'" in unknown and "'input_layer'" in unknown
    fixed = _error(_run(model, "--check", "--input-shape", "input_layer=7,6"))
    assert "dim 2" in fixed and "fixed at 5" in fixed
    count = _error(_run(model, "--check", "--input-shape", "input_layer=7"))
    assert "2 dims after the batch, and 1 were given" in count
    assert not (tmp_path / "seq.onnx").exists() and not fed


# --- generated inputs ----------------------------------------------------------------------------------

def test_input_shape_chooses_the_unknown_dims_and_the_report_says_so(tmp_path: Path, fed: list[Any]) -> None:
    model = _sequence(tmp_path)
    chosen = _report(_run(model, "--check", "--input-shape", "input_layer=7,5", "--json"))["check"]["inputs"]
    assert chosen["shapes"] == {"input_layer": [None, 7, 5]} and chosen["probed_unknown_dim"] is None
    assert [a[0].shape for a in fed] == [(1, 7, 5), (3, 7, 5)]
    fed.clear()
    probed = _report(_run(model, "--check", "--json"))["check"]["inputs"]
    assert probed["shapes"] == {"input_layer": [None, 4, 5]} and probed["probed_unknown_dim"] == 4


def test_samples_run_in_batches_merged_into_one_comparison(tmp_path: Path, fed: list[Any]) -> None:
    model = _two_inputs(tmp_path)
    report = _report(_run(model, "--check", "--samples", "70", "--batch-size", "32", "--seed", "5",
                          "--save-test-data", "--json"))
    check = report["check"]
    assert check["ok"] and check["inputs"]["samples"] == 70 and check["inputs"]["batches"] == 4
    assert check["inputs"]["seed"] == 5 and check["outputs"][0]["shape"] == [70, 2]
    assert [a[0].shape[0] for a in fed] == [1, 32, 32, 5]
    assert [s.inputs["a"].shape[0] for s in read_sets(tmp_path / "two_test_data")] == [1, 32, 32, 5]


def test_default_is_four_samples_in_batches_of_one_and_three(tmp_path: Path, fed: list[Any]) -> None:
    check = _report(_run(_two_inputs(tmp_path), "--check", "--json"))["check"]
    assert check["inputs"]["samples"] == 4 and [a[0].shape[0] for a in fed] == [1, 3]


def test_generated_samples_do_not_depend_on_the_batch_size(tmp_path: Path, fed: list[Any]) -> None:
    model = _two_inputs(tmp_path)
    seen = {}
    for size in ("2", "32"):
        fed.clear()
        _report(_run(model, "--check", "--samples", "9", "--batch-size", size, "--seed", "3", "--json"))
        seen[size] = [np.concatenate([call[k] for call in fed]) for k in range(2)]
    for one, other in zip(seen["2"], seen["32"]):
        np.testing.assert_array_equal(one, other)
    fed.clear()
    _report(_run(model, "--check", "--samples", "9", "--seed", "4", "--json"))
    assert not np.array_equal(np.concatenate([call[0] for call in fed]), seen["32"][0])


def test_a_mismatch_in_any_batch_fails_the_merged_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fed: list[Any]) -> None:
    import runtime.check as check

    calls = []

    def wrong_in_the_third_batch(model: Any, inputs: list[np.ndarray],
                                 names: list[str] | None = None) -> list[np.ndarray]:
        calls.append(1)
        good = np.tanh(np.concatenate(inputs, axis=-1) @ KERNEL)
        return [good + (0.5 if len(calls) == 3 else 0.0)]

    monkeypatch.setattr(check, "reference_outputs", wrong_in_the_third_batch)
    result = _run(_two_inputs(tmp_path), "--check", "--samples", "20", "--batch-size", "5", "--json")
    assert result.exit_code == 4
    diff = json.loads(result.output)["check"]["outputs"][0]
    assert diff["status"] == "mismatch" and 0.49 < diff["max_abs"] < 0.51 and diff["shape"] == [20, 2]


# --- --inputs --------------------------------------------------------------------------------------------

def _samples(n: int, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(n, 2)).astype("float32"), "b": rng.normal(size=(n, 3)).astype("float32")}


@pytest.mark.parametrize("keys", [("a", "b"), ("input:a", "input:b"), ("x0", "x1")])
def test_inputs_npz_by_name_or_position_is_what_keras_and_onnx_get(tmp_path: Path, fed: list[Any],
                                                                   keys: tuple[str, str]) -> None:
    data = _samples(10)
    path = tmp_path / "in.npz"
    np.savez(path, **{keys[0]: data["a"], keys[1]: data["b"], "output:dense": np.zeros((10, 2))})
    check = _report(_run(_two_inputs(tmp_path), "--check", "--inputs", path, "--batch-size", "4", "--json"))["check"]
    assert check["ok"] and check["inputs"]["source"] == str(path) and check["inputs"]["batches"] == 3
    assert [c[0].shape[0] for c in fed] == [4, 4, 2] and check["outputs"][0]["shape"] == [10, 2]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in fed]), data["a"])
    np.testing.assert_array_equal(np.concatenate([c[1] for c in fed]), data["b"])


def test_inputs_npy_folder_and_single_npy(tmp_path: Path, fed: list[Any]) -> None:
    folder = tmp_path / "arrays"
    folder.mkdir()
    data = _samples(3)
    for name, array in data.items():
        np.save(folder / f"{name}.npy", array)
    assert _report(_run(_two_inputs(tmp_path), "--check", "--inputs", folder, "--json"))["check"]["ok"]
    np.testing.assert_array_equal(fed[0][1], data["b"])
    single = tmp_path / "seq.npy"
    np.save(single, np.ones((2, 6, 5), "float32"))
    check = _report(_run(_sequence(tmp_path), "--check", "--inputs", single, "--json"))["check"]
    assert check["inputs"]["shapes"] == {"input_layer": [None, 6, 5]} and check["inputs"]["probed_unknown_dim"] is None


def test_saved_test_data_feeds_a_later_check(tmp_path: Path, fed: list[Any]) -> None:
    model = _two_inputs(tmp_path)
    _report(_run(model, "--check", "--samples", "6", "--save-test-data", "--json"))
    first = [np.concatenate([c[k] for c in fed]) for k in range(2)]
    fed.clear()
    check = _report(_run(model, "--check", "--inputs", tmp_path / "two_test_data", "--json"))["check"]
    assert check["ok"] and check["inputs"]["samples"] == 6 and check["inputs"]["batches"] == 2
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([c[k] for c in fed]), first[k])


@pytest.mark.parametrize("arrays, says", [
    ({"a": np.zeros((2, 2))}, "no array for input 'b'"),
    ({"a": np.zeros((2, 2)), "b": np.zeros((2, 3)), "c": np.zeros(2)}, "'c', which name none of the model's inputs"),
    ({"a": np.zeros((2, 2)), "b": np.zeros((2, 4))}, "'b' has shape (2, 4), and the model's input has shape (None, 3)"),
    ({"a": np.zeros((2, 2)), "b": np.zeros((3, 3))}, "different batch sizes"),
    ({"a": np.zeros((2, 2)), "b": np.zeros((2, 3)), "x1": np.zeros((2, 3))}, "holds input 'b' twice"),
    ({"a": np.zeros((2, 2)), "b": np.array([["x", "y", "z"]] * 2)}, "holds <U1 values"),
    ({"a": np.zeros((0, 2)), "b": np.zeros((0, 3))}, "at least one sample"),
])
def test_inputs_that_do_not_fit_are_usage_errors_naming_both_sides(tmp_path: Path, fed: list[Any],
                                                                    arrays: dict[str, Any], says: str) -> None:
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    output = _error(_run(_two_inputs(tmp_path), "--check", "--inputs", path))
    assert says in " ".join(output.split()) and not fed and not (tmp_path / "two.onnx").exists()


def test_unreadable_inputs_are_format_errors(tmp_path: Path, fed: list[Any]) -> None:
    model = _two_inputs(tmp_path)
    corrupt = tmp_path / "bad.npz"
    np.savez(corrupt, **_samples(4))
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    assert "cannot read inputs bad.npz" in _error(_run(model, "--check", "--inputs", corrupt))
    folder = tmp_path / "f"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 2)))
    assert "hold 'a', and the model's inputs are 'a', 'b'" in _error(_run(model, "--check", "--inputs", folder))
    (tmp_path / "empty").mkdir()
    assert "holds no .npy file" in _error(_run(model, "--check", "--inputs", tmp_path / "empty"))
    with pytest.raises(FormatError, match="cannot read inputs"):
        (folder / "b.npy").write_bytes(b"\x93NUMPY garbage")
        load_inputs(folder, [ModelInput("a", (BATCH, 2), "float32"), ModelInput("b", (BATCH, 3), "float32")])


def test_a_name_that_cannot_be_a_file_name_is_a_clear_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 2)))
    with pytest.raises(UsageError, match="cannot be named by a file") as caught:
        load_inputs(tmp_path, [ModelInput("serving:0", (BATCH, 2), "float32")])
    assert "input:serving:0" in (caught.value.hint or "")


def test_test_data_of_a_channels_first_graph_comes_back_in_keras_layout(tmp_path: Path) -> None:
    nchw = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    write_sets(tmp_path / "data", [TestSet({"image": nchw}, {"out": np.zeros(1)})])
    [batch] = load_inputs(tmp_path / "data", [ModelInput("image", (BATCH, 4, 5, 3), "float32", channels_first=True)])
    np.testing.assert_array_equal(batch["image"], nchw.transpose(0, 2, 3, 1))


def test_integer_inputs_refuse_fractions(tmp_path: Path) -> None:
    np.savez(tmp_path / "ids.npz", ids=np.array([[1.5, 2.0]]))
    with pytest.raises(UsageError, match="fractional"):
        load_inputs(tmp_path / "ids.npz", [ModelInput("ids", (BATCH, 2), "int32")])


def test_split_batches_slices_each_set() -> None:
    sets = [{"a": np.arange(7)}, {"a": np.arange(3)}]
    assert [len(b["a"]) for b in split_batches(sets, 3)] == [3, 3, 1, 3]
    assert [len(b["a"]) for b in split_batches(sets, None)] == [7, 3]


# --- merging, progress ------------------------------------------------------------------------------------

def test_merge_keeps_the_worst_and_a_nan() -> None:
    ok = OutputDiff("y", 1e-6, 1e-5, "ok", (1, 2), (1, 2))
    bad = OutputDiff("y", 0.5, 0.1, "mismatch", (3, 2), (3, 2))
    nan = OutputDiff("y", math.nan, math.nan, "mismatch", (2, 2), (2, 2))
    shape = OutputDiff("y", math.inf, math.inf, "shape", (2, 3), (2, 2))
    merged = merge_diffs(ok, bad)
    assert (merged.max_abs, merged.max_rel, merged.status, merged.shape) == (0.5, 0.1, "mismatch", (4, 2))
    assert math.isnan(merge_diffs(merge_diffs(ok, nan), bad).max_abs)
    assert merge_diffs(ok, shape) == shape and merge_diffs(shape, ok) == shape
    assert merge_diffs(ok, ok).ok


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_shows_only_on_a_terminal_and_never_with_json() -> None:
    assert progress_wanted(False, _Stream(tty=True))
    assert not progress_wanted(True, _Stream(tty=True))
    assert not progress_wanted(False, _Stream(tty=False))
    assert not progress_wanted(False, object())  # type: ignore[arg-type]  # no isatty at all


def test_progress_draws_only_when_enabled() -> None:
    for enabled in (True, False):
        stream = _Stream(tty=True)
        progress = Progress(enabled, Console(file=stream, force_terminal=True))
        with progress.status("loading [b]model[/b]"), progress.steps("batches") as advance:
            advance(1, 2)
            advance(2, 2)
        assert bool(stream.getvalue()) is enabled


def test_the_cli_shows_no_progress_in_a_pipe(tmp_path: Path, fed: list[Any]) -> None:
    result = CliRunner().invoke(main, [str(_two_inputs(tmp_path)), "--check"])
    assert result.exit_code == 0 and "matches Keras" in result.output and "\x1b[?25l" not in result.output


def test_an_onnx_files_inputs_feed_the_loader(tmp_path: Path, fed: list[Any]) -> None:
    """What verify --against reads when only the ONNX file declares the inputs."""
    _report(_run(_two_inputs(tmp_path), "--check", "--json"))
    declared = onnx_model_inputs(tmp_path / "two.onnx")
    assert [(i.name, i.shape[1:], i.dtype) for i in declared] == [("a", (2,), "float32"), ("b", (3,), "float32")]
    np.savez(tmp_path / "in.npz", **_samples(5))
    assert [b["b"].shape for b in load_inputs(tmp_path / "in.npz", declared, 2)] == [(2, 3), (2, 3), (1, 3)]
    (tmp_path / "bad.onnx").write_bytes(b"\xff\xff garbage")
    with pytest.raises(FormatError, match="not a readable ONNX model"):
        onnx_model_inputs(tmp_path / "bad.onnx")


def test_batches_are_held_only_when_saved(tmp_path: Path, fed: list[Any]) -> None:
    from application.service import ConversionResult, ConvertRequest, convert

    model = _two_inputs(tmp_path)
    for save, held in ((False, 0), (True, 3)):
        result = convert(ConvertRequest(model, check=True, samples=9, batch_size=4, save_test_data=save))
        assert isinstance(result, ConversionResult) and result.check is not None
        assert len(result.check.sets) == held and result.check.inputs is not None
        assert "9 samples generated (seed 0) in 3 batches" in result.check.inputs.describe()


def test_batch_sizes_start_with_one_and_respect_a_fixed_batch() -> None:
    from runtime.inputs import batch_sizes

    assert batch_sizes(1, 32) == [1] and batch_sizes(4, 32) == [1, 3] and batch_sizes(70, 32) == [1, 32, 32, 5]
    assert batch_sizes(10, 32, fixed=4) == [4, 4, 4]
