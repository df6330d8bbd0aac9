"""The CLI's error contract (issue 9): whatever a user or a file causes ends in one clear answer, never a
traceback; a kconvert bug asks for a report in one line (exit 70) and shows its traceback only with
--debug; options are checked before any work; output folders are created; written files get the
umask's mode; a run that fails leaves no file (a check that runs and finds a mismatch keeps it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from kmodels import functional, input_layer, layer, save_keras, save_legacy_h5, sequential

import converter
from application.cli import main
from converter.errors import EXIT_INTERNAL, KconvertWarning

KERNEL = np.arange(6, dtype="float32").reshape(3, 2) / 6


def _dense(tmp_path: Path, name: str = "m.h5") -> Path:
    config = sequential([layer("Dense", "dense", units=2, activation="tanh", use_bias=False)], (3,))
    return save_legacy_h5(tmp_path / name, config, {"dense": [KERNEL]})


def _cli(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _fake_keras(monkeypatch: pytest.MonkeyPatch, outputs: Any) -> None:
    """Keras replaced by numpy: `outputs(inputs)` gives the expected outputs (no TensorFlow needed)."""
    import application.options as options
    import application.service as service
    import runtime.check as check

    monkeypatch.setattr(options, "tensorflow_installed", lambda: True)

    monkeypatch.setattr(service, "load_keras_model", lambda artifact, weights, custom_objects=None: object())
    monkeypatch.setattr(check, "reference_outputs", lambda model, inputs, names=None: outputs(inputs))


def _no_model_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the model becomes a bug: an option error must be found before it (exit 2, not 70)."""
    import converter.api as api

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was read before the options were checked")

    monkeypatch.setattr(api, "load", refuse)


# ---------------------------------------------------------------------------------------------------
# 1. One top-level handler: bugs are one line with the version, exit 70; tracebacks only with --debug.
# ---------------------------------------------------------------------------------------------------

def _bug(monkeypatch: pytest.MonkeyPatch) -> None:
    import converter.api as api

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(api, "load", broken)


def test_a_bug_is_one_line_asking_for_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bug(monkeypatch)
    result = _cli(_dense(tmp_path))
    assert result.exit_code == EXIT_INTERNAL == 70
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internal error (ValueError: boom second line)")
    assert f"kconvert {converter.__version__}" in lines[0] and "--debug" in lines[0] and "bug" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_shows_the_traceback_wherever_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        where: str) -> None:
    _bug(monkeypatch)
    model = _dense(tmp_path)
    result = _cli("--debug", model) if where == "first" else _cli(model, "--debug")
    assert result.exit_code == 70 and "Traceback" in result.stderr and "ValueError: boom" in result.stderr


def test_debug_is_accepted_by_a_working_run_and_by_inspect(tmp_path: Path) -> None:
    model = _dense(tmp_path)
    assert _cli("--debug", model).exit_code == 0 and (tmp_path / "m.onnx").exists()
    assert _cli(model, "-o", tmp_path / "b.onnx", "--debug").exit_code == 0 and (tmp_path / "b.onnx").exists()
    assert _cli("inspect", model, "--debug").exit_code == 0


def test_a_bug_in_json_mode_is_a_json_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bug(monkeypatch)
    result = _cli(_dense(tmp_path), "--json")
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 70 and error["type"] == "InternalError" and error["exception"] == "ValueError"
    assert error["kconvert_version"] == converter.__version__ and error["exit_code"] == 70


def test_a_bug_during_the_check_removes_the_written_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.check as check

    _fake_keras(monkeypatch, lambda inputs: [np.tanh(inputs[0] @ KERNEL)])
    monkeypatch.setattr(check, "compare", lambda *args: [][0])  # IndexError after the ONNX was written
    result = _cli(_dense(tmp_path), "--check")
    assert result.exit_code == 70 and "IndexError" in result.stderr and not (tmp_path / "m.onnx").exists()


def test_a_real_process_prints_no_traceback_for_a_bug(tmp_path: Path) -> None:
    code = ("import sys, converter.api as c\n"
            "c.load = lambda *a, **k: {}['missing']\n"
            "from application.cli import main\nsys.exit(main())")
    result = subprocess.run([sys.executable, "-c", code, str(_dense(tmp_path))], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 70 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: internal error (KeyError: 'missing')")


def test_user_errors_show_their_traceback_only_with_debug(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model")
    assert "Traceback" not in _cli(bad).stderr
    debug = _cli(bad, "--debug")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "error: " in debug.stderr


def test_click_usage_errors_are_json_in_json_mode(tmp_path: Path) -> None:
    result = _cli(_dense(tmp_path), "--json", "--opset", "seventeen")
    payload = json.loads(result.stdout)
    assert result.exit_code == 2 and not payload["ok"] and "seventeen" in payload["error"]["message"]


# ---------------------------------------------------------------------------------------------------
# 2. Tracebacks users hit with valid models.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".onnx", ".keras"])
def test_output_folders_are_created(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "out" / "deeper" / f"model{suffix}"
    result = _cli(_dense(tmp_path), "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_an_output_folder_that_cannot_be_created_is_a_usage_error(tmp_path: Path) -> None:
    model = _dense(tmp_path)
    result = _cli(model, "-o", tmp_path / "m.h5" / "sub" / "x.onnx")
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr
    _no_traceback(result)


def test_a_full_disk_is_a_usage_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from converter.export import onnx as onnx_export

    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export, "_write_inline", full)
    result = _cli(_dense(tmp_path), "-o", tmp_path / "out" / "m.onnx")
    assert result.exit_code == 2 and "cannot write" in result.stderr and "No space left" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def _reference(tmp_path: Path, **arrays: np.ndarray) -> Path:
    np.savez(tmp_path / "ref.npz", **arrays)  # type: ignore[arg-type]
    return tmp_path / "ref.npz"


X = np.ones((2, 3), "float32")


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x0": np.ones((2, 4), "float32"), "y0": np.ones((2, 2))},
     "input 'input_layer' has shape (2, 4), and the model's input has shape (None, 3)"),
    ({"x0": np.ones((2, 3, 1), "float32"), "y0": np.ones((2, 2))}, "input 'input_layer' has shape (2, 3, 1)"),
    ({"x0": X, "y0": np.ones((2, 5))}, "output 'dense' has shape (2, 5), and the model's output has shape (None, 2)"),
    ({"x0": np.array([["a", "b", "c"]]), "y0": np.ones((1, 2))}, "input 'input_layer' holds <U1 values"),
    ({"x0": X, "y0": np.ones((3, 2))}, "different batch sizes (input 'input_layer' 2, output 'dense' 3)"),
    ({"x0": X}, "has neither 'output:dense' nor 'y0'"),
])
def test_a_reference_that_does_not_fit_is_a_usage_error(tmp_path: Path, arrays: dict[str, np.ndarray],
                                                        message: str) -> None:
    result = _cli(_dense(tmp_path), "--reference", _reference(tmp_path, **arrays))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    _no_traceback(result)
    assert not (tmp_path / "m.onnx").exists()


def test_a_fitting_reference_passes(tmp_path: Path) -> None:
    result = _cli(_dense(tmp_path), "--reference", _reference(tmp_path, x0=X, y0=np.tanh(X @ KERNEL)))
    assert result.exit_code == 0 and "matches Keras" in result.stdout


def _unknown_size_conv(tmp_path: Path, kernel: int) -> Path:
    conv = layer("Conv2D", "conv", filters=2, kernel_size=[kernel, kernel], strides=[2, 2], padding="valid",
                 data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear", use_bias=False)
    config = sequential([conv, layer("GlobalAveragePooling2D", "pool", data_format="channels_last")], (None, None, 3))
    return save_keras(tmp_path / "m.keras", config, {"conv": [np.ones((kernel, kernel, 3, 2), "float32")]})


def test_check_picks_a_size_the_model_accepts_for_unknown_dimensions(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7x7 kernel does not fit the 4x4 images a plain guess would give; the check uses 8x8."""
    seen: list[tuple[int, ...]] = []

    def keras(inputs: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs[0].shape)
        x = inputs[0]
        windows = [x[:, i:i + 7, j:j + 7, :].sum(axis=(1, 2, 3)) for i in range(0, x.shape[1] - 6, 2)
                   for j in range(0, x.shape[2] - 6, 2)]
        return [np.repeat(np.mean(windows, axis=0)[:, None], 2, axis=1)]

    _fake_keras(monkeypatch, keras)
    result = _cli(_unknown_size_conv(tmp_path, 7), "--check", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["check"]["ok"] and seen == [(1, 8, 8, 3), (3, 8, 8, 3)]


def test_unknown_dimensions_no_size_fits_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sequential([layer("Reshape", "reshape", target_shape=[5, 3])], (None, 3))
    model = save_keras(tmp_path / "m.keras", config, {})
    _fake_keras(monkeypatch, lambda inputs: [inputs[0]])
    result = _cli(model, "--check")
    assert result.exit_code == 2 and "runs at none of the sizes tried" in result.stderr
    assert "--reference" in result.stderr and not (tmp_path / "m.onnx").exists()
    _no_traceback(result)


def test_check_feeds_string_inputs_from_the_vocabulary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vocabulary = ["a", "b", "c"]
    config = functional([(input_layer("text", (2,), dtype="string"), []),
                         (layer("StringLookup", "lookup", vocabulary=vocabulary, num_oov_indices=1, mask_token=None,
                                oov_token="[UNK]", output_mode="int"), ["text"])], ["text"], ["lookup"])
    seen: list[np.ndarray] = []

    def keras(inputs: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs[0])
        ids = {token: i + 1 for i, token in enumerate(vocabulary)}
        return [np.vectorize(lambda t: ids.get(t, 0))(inputs[0]).astype(np.int64)]

    _fake_keras(monkeypatch, keras)
    result = _cli(save_keras(tmp_path / "m.keras", config, {}), "--check", "--json")
    assert result.exit_code == 0, result.output
    tokens = {str(t) for batch in seen for t in batch.ravel()}
    assert tokens <= {*vocabulary, "[kconvert-out-of-vocabulary]"} and len(tokens) >= 3


def test_float16_io_check_feeds_float16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[np.dtype[Any]] = []

    def keras(inputs: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(inputs[0].dtype)
        return [np.tanh(inputs[0] @ KERNEL)]

    _fake_keras(monkeypatch, keras)
    result = _cli(_dense(tmp_path), "--float16", "--float16-io", "--check", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["check"]["ok"] and set(seen) == {np.dtype("float32")}


def test_paths_and_names_print_as_themselves_not_as_markup(tmp_path: Path) -> None:
    folder = tmp_path / "[red]x"
    folder.mkdir()
    config = sequential([layer("Dense", "[bold]dense", units=2, use_bias=False)], (3,))
    model = save_keras(folder / "m[1].keras", config, {"[bold]dense": [KERNEL]})
    converted = _cli(model)
    assert converted.exit_code == 0 and f"wrote {folder / 'm[1].onnx'}" in converted.stdout
    summary = _cli("inspect", model)
    assert summary.exit_code == 0 and "[bold]dense (Dense)" in summary.stdout
    reference = _reference(folder, x0=X, y0=X @ KERNEL)
    checked = _cli(model, "--reference", reference)
    assert checked.exit_code == 0 and "[bold]dense" in checked.stdout and f"({reference})" in checked.stdout


# ---------------------------------------------------------------------------------------------------
# 3. Options are checked before any work.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--float16-io"], "--float16 was not given"),
    (["--rtol", "1e-3"], "--rtol applies only to a check"),
    (["--atol", "1e-3", "--provider", "cpu"], "--atol and --provider apply only to a check"),
    (["--check", "--rtol", "-1"], "--rtol -1.0: a tolerance is a finite number >= 0"),
    (["--check", "--atol", "nan"], "--atol nan: a tolerance"),
    (["--reference", "missing.npz"], "no such file"),
    (["--weights", "missing.h5"], "no such file"),
    (["-o", "m.txt"], "the output must end in .onnx or .keras"),
    (["-o", "m"], "the output must end in .onnx or .keras"),
    (["-o", "m.keras", "--float16", "--opset", "13"],
     "ONNX options do not apply to a .keras archive: --float16, --opset"),
    (["-o", "m.keras", "--check"], "ONNX options do not apply to a .keras archive: --check"),
    (["--check", "--reference", "m.h5"], "--check and --reference are two ways"),
    (["--opset", "12"], "opset 12 is not supported"),
])
def test_bad_options_are_refused_before_the_model_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          args: list[str], message: str) -> None:
    model = _dense(tmp_path)
    monkeypatch.chdir(tmp_path)
    _no_model_reading(monkeypatch)
    result = _cli(model, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "hint:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]


def test_check_without_tensorflow_is_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import application.options as options

    _no_model_reading(monkeypatch)
    monkeypatch.setattr(options, "tensorflow_installed", lambda: False)
    result = _cli(_dense(tmp_path), "--check")
    assert result.exit_code == 2 and "--check needs TensorFlow" in result.stderr and "--reference" in result.stderr


def test_cuda_without_cuda_is_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.session as session

    _no_model_reading(monkeypatch)
    monkeypatch.setattr(session.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = _cli(_dense(tmp_path), "--reference", _reference(tmp_path, x0=X, y0=X), "--provider", "cuda")
    assert result.exit_code == 2 and "no CUDAExecutionProvider" in result.stderr


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "default"])
def test_the_output_never_overwrites_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               spelling: str) -> None:
    model = _dense(tmp_path, "m.onnx" if spelling == "default" else "m.h5")
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path)
    if spelling == "symlink":
        (tmp_path / "link.onnx").symlink_to(model)
    output = {"same": ["-o", str(model)], "dot": ["-o", f"./{model.name}"], "symlink": ["-o", "link.onnx"],
              "default": []}[spelling]
    result = _cli(model, *output)
    assert result.exit_code == 2 and "writing it would destroy it" in result.stderr
    assert model.read_bytes() == before


# ---------------------------------------------------------------------------------------------------
# What is left behind: a failed check keeps the ONNX, an error in or before the check leaves nothing.
# ---------------------------------------------------------------------------------------------------

def test_a_mismatch_keeps_the_onnx_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_keras(monkeypatch, lambda inputs: [np.full((inputs[0].shape[0], 2), 9.0)])
    result = _cli(_dense(tmp_path), "--check")
    assert result.exit_code == 4 and (tmp_path / "m.onnx").exists()
    assert f"{tmp_path / 'm.onnx'} is kept for inspection" in result.stdout


def test_keras_failing_to_load_leaves_no_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import application.service as service
    from runtime.reference import ReferenceUnavailable

    def unavailable(artifact: Any, weights: Any, custom_objects: Any = None) -> None:
        raise ReferenceUnavailable("Keras 2 could not load m.h5", hint="-")

    monkeypatch.setattr(service, "load_keras_model", unavailable)
    monkeypatch.setattr("application.options.tensorflow_installed", lambda: True)
    result = _cli(_dense(tmp_path), "--check")
    assert result.exit_code == 2 and "could not load" in result.stderr and not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------------------------------
# 4. Files get the umask's mode.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("suffix", [".onnx", ".keras"])
def test_written_files_get_the_umask(tmp_path: Path, umask: int, suffix: str) -> None:
    model = _dense(tmp_path)
    old = os.umask(umask)
    try:
        result = _cli(model, "-o", tmp_path / f"out{suffix}")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"out{suffix}").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------------
# 5. Warnings: a KconvertWarning is one `warning:` line and in the JSON report; others are hidden.
# ---------------------------------------------------------------------------------------------------

def _warning_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import converter.api as api

    original = api.load

    def load(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("the file does not record its backend; read as TensorFlow", KconvertWarning, stacklevel=2)
        warnings.warn("the file does not record its backend; read as TensorFlow", KconvertWarning, stacklevel=2)
        warnings.warn("some library noise", UserWarning, stacklevel=1)  # from this (non-kconvert) file
        warnings.warn("more library noise", DeprecationWarning, stacklevel=1)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "load", load)


def test_kconvert_warnings_are_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _warning_load(monkeypatch)
    result = _cli(_dense(tmp_path))
    assert result.exit_code == 0
    assert result.stderr == "warning: the file does not record its backend; read as TensorFlow\n"


def test_kconvert_warnings_are_listed_in_the_json_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _warning_load(monkeypatch)
    report = json.loads(_cli(_dense(tmp_path), "--json").stdout)
    assert report["ok"] and report["warnings"] == ["the file does not record its backend; read as TensorFlow"]


def test_debug_shows_library_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _warning_load(monkeypatch)
    result = _cli(_dense(tmp_path), "--debug")
    assert "UserWarning: some library noise" in result.stderr and "warning: the file" in result.stderr


def test_float16_check_of_a_dense_after_a_sequence_lstm_survives(tmp_path: Path, rng: np.random.Generator) -> None:
    """onnxruntime's NCHWc pass crashes the process (SIGSEGV) on a float16 Transpose -> MatMul; the check's
    session leaves that pass out. Run in a child process: a crash must not take pytest down."""
    cell = [(0.5 * rng.normal(size=shape)).astype("float32") for shape in ((3, 8), (2, 8), (8,))]
    config = sequential([layer("LSTM", "lstm", units=2, return_sequences=True),
                         layer("Dense", "dense", units=4, activation="softmax", use_bias=True)], (None, 3))
    weights = {"lstm": {"cell": cell}, "dense": [rng.normal(size=(2, 4)).astype("float32"), np.zeros(4, "float32")]}
    model = save_keras(tmp_path / "m.keras", config, weights)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    from kmodels import run_onnx

    reference = _reference(tmp_path, x0=x, y0=run_onnx(converter.convert(model), x)[0])
    result = subprocess.run([sys.executable, "-m", "application.cli", str(model), "--float16", "--reference",
                             str(reference)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "matches Keras" in result.stdout


# ---------------------------------------------------------------------------------------------------
# The same user paths against live Keras (channels_last models: they run on any x86-64 CPU).
# ---------------------------------------------------------------------------------------------------

def _live_model(name: str) -> Any:
    keras = pytest.importorskip("keras")
    layers = keras.layers
    if name == "unknown_size_conv":
        x = keras.Input((None, None, 3))
        y = layers.Conv2D(4, 7)(x)
        y = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(layers.MaxPooling2D()(y)))
    elif name == "strings":
        x = keras.Input((2,), dtype="string")
        y = layers.StringLookup(vocabulary=["a", "b", "c"])(x)
    elif name == "masked_lstm":
        x = keras.Input((5,), dtype="int32")
        y = layers.LSTM(3)(layers.Embedding(10, 4, mask_zero=True)(x))
    else:  # dense
        x = keras.Input((4,))
        y = layers.Dense(2, activation="tanh")(x)
    return keras.Model(x, y)


@pytest.mark.tf
@pytest.mark.parametrize(("name", "flags"), [
    ("unknown_size_conv", []), ("strings", []), ("masked_lstm", ["--float16"]),
    ("dense", ["--float16", "--float16-io"]),
])
def test_live_check_of_what_used_to_crash(tmp_path: Path, name: str, flags: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    path = tmp_path / "m.keras"
    _live_model(name).save(path)
    result = _cli(path, "--check", "--json", *flags)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["check"]["ok"] and report["warnings"] == []


def test_a_plain_user_warning_from_kconvert_code_is_shown_too(tmp_path: Path, rng: np.random.Generator) -> None:
    """converter/keras/weight_matching.py warns (UserWarning) when it pairs weights by order: a fact about
    the file, so it is a `warning:` line, not hidden with the libraries' warnings."""
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    model = save_legacy_h5(tmp_path / "m.h5", config, {"dense": [KERNEL]})
    import h5py

    with h5py.File(model, "r+") as handle:  # the weights group under another name, as renamed layers give
        handle.move("model_weights/dense", "model_weights/dense_7")
        handle["model_weights"].attrs["layer_names"] = [b"dense_7"]
        handle["model_weights/dense_7"].attrs["weight_names"] = [b"dense_7/w0:0"]
        handle.move("model_weights/dense_7/dense", "model_weights/dense_7/dense_7")
    result = _cli(model)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: layer names in the weights file differ"), result.stderr
