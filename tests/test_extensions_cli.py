"""`--extension FILE.py` on the command line, package-prefixed class names, and --custom-objects' checks
(without TensorFlow: numpy references)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from application.cli import main
from application.extension_files import extensions_loaded
from converter.errors import UnsupportedLayerError, UsageError
from converter.extensions import register_layer, registrations

SCALE_HANDLERS = '''
from converter.extensions import register_layer, register_lambda

@register_layer("{name}", weights=("gamma",))
def scale(b, inputs, node):
    return b.op("Mul", inputs[0], b.weight("gamma"))
'''


# Each test starts and ends without user registrations (conftest.clean_extension_registrations).
pytestmark = pytest.mark.usefixtures("clean_extension_registrations")


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _scale_model(tmp_path: Path, fmt: str, saved_as: str, gamma: np.ndarray) -> Path:
    """Dense(identity) then a custom Scale, saved the way each format spells a registered class."""
    custom = layer(saved_as, "scale")
    if fmt == "keras":  # Keras 3 archives: class_name without the package, registered_name with it
        custom = {**layer(saved_as.rsplit(">", 1)[-1], "scale"), "registered_name": saved_as, "module": "my_layers"}
    dense = [np.eye(3, dtype="float32"), np.zeros(3, "float32")]
    save = save_keras if fmt == "keras" else save_legacy_h5
    return save(tmp_path / f"m.{fmt}", sequential([layer("Dense", "d", units=3), custom], (3,)),
                {"d": dense, "scale": [gamma]})


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("saved_as", ["Scale", "my>Scale"])
@pytest.mark.parametrize("registered", ["Scale", "my>Scale"])
def test_extension_file_converts_either_spelling(tmp_path: Path, rng: np.random.Generator, fmt: str, saved_as: str,
                                                 registered: str) -> None:
    gamma = rng.normal(size=3).astype("float32")
    model = _scale_model(tmp_path, fmt, saved_as, gamma)
    handlers = tmp_path / "my_layers.py"
    handlers.write_text(SCALE_HANDLERS.format(name=registered))
    result = _cli(model, "-o", tmp_path / "m.onnx", "--extension", handlers)
    assert result.exit_code == 0, result.output
    x = rng.normal(size=(2, 3)).astype("float32")
    (y,) = run_onnx(onnx.load(str(tmp_path / "m.onnx")), x)
    assert_close(y, x * gamma)
    assert registrations() == {"layers": [], "lambdas": []}  # unregistered when the command ends


def test_without_the_extension_the_error_points_at_the_table(tmp_path: Path, rng: np.random.Generator) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    result = _cli(model, "--json")
    error = json.loads(result.output)["error"]
    assert result.exit_code == 3 and error["layer"] == "scale"
    assert "'scale' (my>Scale): a custom layer class" in error["message"]
    assert "README.md#supported-layers" in error["hint"] and "--extension" in error["hint"]
    assert "Conv2D" not in error["hint"] + error["message"]  # no list of every supported class


BROKEN = {
    "syntax": ("x = 1\ndef f(:\n", "line 2: syntax error"),
    "import": ("import no_such_module_kconvert\n", "line 1: ModuleNotFoundError"),
    "raises": ("x = 1\nraise ValueError('bad handler file')\n", "line 2: ValueError: bad handler file"),
    "nothing": ("x = 1\n", "registers no handler"),
    "twice": (SCALE_HANDLERS.format(name="Scale") + SCALE_HANDLERS.format(name="Scale"), "already has a registered"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_extension_files_are_usage_errors(tmp_path: Path, rng: np.random.Generator, case: str) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    source, expected = BROKEN[case]
    handlers = tmp_path / "handlers.py"
    handlers.write_text(source)
    result = _cli(model, "--extension", handlers)
    assert result.exit_code == 2, result.output
    assert f"--extension {handlers}" in result.stderr and expected in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "m.onnx").exists()
    assert registrations() == {"layers": [], "lambdas": []}  # what it registered before failing is gone


@pytest.mark.parametrize("name", ["missing.py", "folder", "handlers.txt"])
def test_extension_paths_that_are_not_python_files(tmp_path: Path, rng: np.random.Generator, name: str) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "handlers.txt").write_text(SCALE_HANDLERS.format(name="Scale"))
    result = _cli(model, "--extension", tmp_path / name)
    assert result.exit_code == 2 and str(tmp_path / name) in result.stderr and "Traceback" not in result.stderr


def test_two_extension_files(tmp_path: Path, rng: np.random.Generator) -> None:
    gamma = rng.normal(size=3).astype("float32")
    model = save_legacy_h5(tmp_path / "m.h5", sequential([layer("my>Scale", "scale"), layer("Neg", "neg")], (3,)),
                           {"scale": [gamma]})
    (tmp_path / "a.py").write_text(SCALE_HANDLERS.format(name="Scale"))
    (tmp_path / "b.py").write_text("from converter.extensions import register_layer\n"
                                   "register_layer('Neg', lambda b, xs, node: b.op('Neg', xs[0]))\n")
    result = _cli(model, "-o", tmp_path / "m.onnx", "--extension", tmp_path / "a.py", "--extension", tmp_path / "b.py")
    assert result.exit_code == 0, result.stderr
    x = rng.normal(size=(2, 3)).astype("float32")
    assert_close(run_onnx(onnx.load(str(tmp_path / "m.onnx")), x)[0], -x * gamma)


def test_extensions_loaded_twice_in_one_program(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(SCALE_HANDLERS.format(name="Scale"))
    for _ in range(2):
        with extensions_loaded([tmp_path / "a.py"]) as added:
            assert added == {"layers": ["Scale"], "lambdas": []}
    assert registrations()["layers"] == []


def test_an_ambiguous_bare_name_matches_no_prefixed_registration(tmp_path: Path, rng: np.random.Generator) -> None:
    for package in ("a", "b"):
        register_layer(f"{package}>Scale", lambda b, xs, node: b.op("Neg", xs[0]))
    model = _scale_model(tmp_path, "keras", "Scale", rng.normal(size=3).astype("float32"))
    with pytest.raises(UnsupportedLayerError):
        converter.convert(model)


@pytest.mark.parametrize("args, expected", [
    (["--custom-objects", "{objects}"], "--check was not given"),
    (["--check", "--custom-objects", "{missing}"], "no such file"),
])
def test_custom_objects_option_checks(tmp_path: Path, rng: np.random.Generator, args: list[str], expected: str) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    objects = tmp_path / "objects.py"
    objects.write_text("class Scale: pass\n")
    given = [a.format(objects=objects, missing=tmp_path / "none.py") for a in args]
    result = _cli(model, *given)
    assert result.exit_code == 2 and expected in result.stderr, result.stderr


def test_verify_extension_options_need_against(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "a.py").write_text(SCALE_HANDLERS.format(name="Scale"))
    result = _cli("verify", tmp_path / "m.onnx", "--extension", tmp_path / "a.py")
    assert result.exit_code == 2 and "--against was not given" in result.stderr


def test_user_code_errors_name_the_file() -> None:
    from runtime.user_code import run_user_file

    with pytest.raises(UsageError, match="no such file"):
        run_user_file(Path("/nonexistent/x.py"), "--custom-objects")


def test_a_relative_path_still_names_the_line(tmp_path: Path, rng: np.random.Generator,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    (tmp_path / "bad.py").write_text("x = 1\nimport no_such_module_kconvert\n")
    monkeypatch.chdir(tmp_path)
    result = _cli(model, "--extension", "bad.py")
    assert result.exit_code == 2 and "--extension bad.py, line 2: ModuleNotFoundError" in result.stderr


def test_a_failing_handler_is_the_users_error_not_a_kconvert_bug(tmp_path: Path, rng: np.random.Generator) -> None:
    model = _scale_model(tmp_path, "h5", "my>Scale", rng.normal(size=3).astype("float32"))
    handlers = tmp_path / "typo.py"
    handlers.write_text(SCALE_HANDLERS.format(name="Scale").replace('b.weight("gamma")', 'b.weight("gama")'))
    result = _cli(model, "--extension", handlers)
    assert result.exit_code == 2, result.stderr
    assert "the registered handler scale for my>Scale 'scale' failed: KeyError" in result.stderr
    assert "kconvert bug" not in result.stderr and "Traceback" not in result.stderr
