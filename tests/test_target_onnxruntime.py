"""--target-onnxruntime X.Y: the table, the option's errors, the written file's IR version and opset, and
the output loaded and run in older onnxruntime releases (each in its own virtualenv, built on first use)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from application.cli import main
from converter.errors import KconvertWarning, UsageError
from converter.export.targets import RELEASES, choose, find_release, oldest_release_for, readme_table

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# Older releases with Python 3.11 wheels; numpy 2 came after them.
OLD_RELEASES = ["1.16.3", "1.18.1"]


def test_table_rows_as_onnxruntime_lists_them() -> None:
    assert (find_release("1.16").max_opset, find_release("1.16").max_ir) == (19, 9)
    assert (find_release("1.6").max_opset, find_release("1.6").max_ir) == (13, 7)
    assert find_release("1.18.1") == find_release(" 1.18 ") == RELEASES["1.18"]
    assert oldest_release_for(13) == "1.6" and oldest_release_for(17) == "1.12"
    assert oldest_release_for(19) == "1.16" and oldest_release_for(21) == "1.18"  # 1.15 lists IR 8 for opset 19
    # Measured rows (bench/ort_release_limits.py): 1.21 takes opset 22, 1.24 IR 13, 1.32 opset 28 / IR 14.
    assert oldest_release_for(22) == "1.21" and oldest_release_for(23) == "1.23"
    assert oldest_release_for(25) == "1.24" and oldest_release_for(28) == "1.32"
    assert (find_release("1.32").max_opset, find_release("1.32").max_ir) == (28, 14)


@pytest.mark.parametrize("release, opset, expected", [
    ("1.20", None, (17, 8)), ("1.20", 21, (21, 10)), ("1.16", 19, (19, 9)), ("1.11", None, (16, 8)),
    ("1.8", None, (14, 7)), ("1.6", None, (13, 7)), ("1.15", 18, (18, 8)), ("1.6", 13, (13, 7))])
def test_choice_caps_the_default_and_keeps_an_allowed_opset(release: str, opset: int | None,
                                                           expected: tuple[int, int]) -> None:
    choice = choose(release, opset)
    assert (choice.opset, choice.ir_version) == expected


@pytest.mark.parametrize("release, opset, words", [
    ("abc", None, ["MAJOR.MINOR", "known releases: 1.6, 1.7"]), ("1", None, ["MAJOR.MINOR"]),
    ("2.0", None, ["not in kconvert's compatibility table"]),
    ("1.5", None, ["opset 12 at most", "1.6 is the oldest"]), ("0.5", None, ["opset 10 at most"]),
    ("1.16", 20, ["--opset 20", "onnxruntime 1.16", "opset 19 at most"]),
    ("1.15", 19, ["needs ONNX IR version 9", "IR version 8 at most", "--opset 18"])])
def test_choice_refusals(release: str, opset: int | None, words: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        choose(release, opset)
    said = f"{caught.value} {caught.value.hint}"
    assert all(word in said for word in words), said


def test_a_release_newer_than_the_table_gets_the_newest_rows_limits_and_a_warning() -> None:
    """onnxruntime loads whatever an older release loads, so 1.32's limits are safe for 1.40."""
    with pytest.warns(KconvertWarning, match="newer than kconvert's compatibility table"):
        choice = choose("1.40", None)
    assert (choice.release.name, choice.opset, choice.ir_version, choice.release.max_opset) == ("1.40", 17, 8, 28)


def test_readme_table_matches_the_module() -> None:
    assert readme_table() in (ROOT / "README.md").read_text()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("args, words", [
    (["--target-onnxruntime", "2.0"], ["compatibility table"]),
    (["--target-onnxruntime", "x.y"], ["MAJOR.MINOR"]),
    (["--target-onnxruntime", "1.4"], ["opset 12 at most"]),
    (["--target-onnxruntime", "1.8", "--opset", "15"], ["--opset 15", "onnxruntime 1.8", "opset 14 at most"]),
    (["--target-onnxruntime", "1.8", "-o", "out.keras"], ["do not apply to a .keras archive", "--target-onnxruntime"])])
def test_option_errors_exit_2_before_the_model_is_read(tmp_path: Path, args: list[str], words: list[str]) -> None:
    model = tmp_path / "m.h5"
    model.write_bytes(b"not a model: reading it would fail differently")
    args = [a if a != "out.keras" else str(tmp_path / "out.keras") for a in args]
    code, output = _run(str(model), *args)
    assert code == 2, output
    assert all(word in output for word in words), output
    assert not list(tmp_path.glob("*.onnx")) and not (tmp_path / "out.keras").exists()


def _norm_gelu_model(tmp_path: Path, rng: np.random.Generator) -> Path:
    """LayerNormalization (ONNX op at 17) and GELU (ONNX op at 20): both have opset-13 forms."""
    config = sequential([layer("LayerNormalization", "ln", axis=-1, epsilon=1e-3),
                         layer("Dense", "d", units=5, activation="gelu")], (4, 6))
    weights = {"ln": [rng.normal(size=6).astype("float32"), rng.normal(size=6).astype("float32")],
               "d": [rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=5).astype("float32")]}
    return save_keras(tmp_path / "m.keras", config, weights)


@pytest.mark.parametrize("release, opset, ir_version", [("1.6", 13, 7), ("1.8", 14, 7), ("1.16", 17, 8)])
def test_written_file_carries_the_chosen_ir_version_and_opset(tmp_path: Path, rng: np.random.Generator,
                                                               release: str, opset: int, ir_version: int) -> None:
    path = _norm_gelu_model(tmp_path, rng)
    output = tmp_path / f"m{release}.onnx"
    code, printed = _run(str(path), "-o", str(output), "--target-onnxruntime", release, "--json")
    assert code == 0, printed
    report = json.loads(printed)
    assert report["opset"] == opset
    assert report["target"] == {"onnxruntime": release, "opset": opset, "ir_version": ir_version,
                                "max_opset": RELEASES[release].max_opset, "max_ir_version": RELEASES[release].max_ir}
    model = onnx.load(output)
    assert model.ir_version == ir_version
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    assert_close(run_onnx(model, x)[0], run_onnx(converter.convert(path), x)[0])  # same as the default opset 17


def test_terminal_says_the_target(tmp_path: Path, rng: np.random.Generator) -> None:
    code, printed = _run(str(_norm_gelu_model(tmp_path, rng)), "--target-onnxruntime", "1.8")
    assert code == 0, printed
    assert "target onnxruntime 1.8: opset 14, IR version 7" in printed


def _old_runtime(version: str) -> Path:
    """A virtualenv with onnxruntime==version (numpy<2), built once under $KCONVERT_ORT_VENVS (.ci/run sets
    it); skips when it is unset (a cold build takes 30-60 s per release, measured) or when pip cannot
    install the release (no network, no wheel for this platform)."""
    cache = os.environ.get("KCONVERT_ORT_VENVS")
    if not cache:
        pytest.skip(f"set KCONVERT_ORT_VENVS=FOLDER to build onnxruntime {version} there and load the output in it")
    venv = Path(cache) / f"onnxruntime-{version}"
    python = venv / "bin" / "python"
    if (venv / "built").exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-built one from an interrupted run
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          f"onnxruntime=={version}", "numpy<2"], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"pip cannot install onnxruntime=={version}: {pip.stderr.strip().splitlines()[-1:]}")
    (venv / "built").write_text(version)
    return python


RUN_IN_OLD = """
import sys, numpy as np, onnxruntime as ort
model, inputs, outputs = sys.argv[1:]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
with np.load(inputs) as data:
    feeds = {i.name: data[k] for i, k in zip(session.get_inputs(), data.files)}
np.savez(outputs, *session.run(None, feeds), version=ort.__version__)
"""


def _cases(tmp_path: Path, rng: np.random.Generator) -> list[tuple[Path, dict[str, np.ndarray]]]:
    """Converted fixtures (a CNN, a GRU: Scan-free recurrent ops) and the LayerNormalization/GELU model."""
    cases = []
    for name in ("small_cnn", "gru"):
        with np.load(FIXTURES / name / "inputs.npz") as data:
            cases.append((FIXTURES / name / "model.keras", {k: data[k] for k in data.files}))
    cases.append((_norm_gelu_model(tmp_path, rng), {"x0": rng.normal(size=(3, 4, 6)).astype("float32")}))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("version", OLD_RELEASES)
def test_output_loads_and_matches_in_an_older_onnxruntime(tmp_path: Path, rng: np.random.Generator,
                                                          version: str) -> None:
    python = _old_runtime(version)
    release = version.rsplit(".", 1)[0]
    for index, (model, inputs) in enumerate(_cases(tmp_path, rng)):
        output = tmp_path / f"case{index}.onnx"
        code, printed = _run(str(model), "-o", str(output), "--target-onnxruntime", release)
        assert code == 0, printed
        np.savez(tmp_path / "in.npz", **inputs)
        ran = subprocess.run([str(python), "-c", RUN_IN_OLD, str(output), str(tmp_path / "in.npz"),
                              str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        with np.load(tmp_path / "out.npz") as got:
            assert str(got["version"]) == version
            old = [got[k] for k in got.files if k != "version"]
        current = run_onnx(onnx.load(output), *inputs.values())
        assert len(old) == len(current)
        for a, b in zip(old, current):
            assert_close(a, b)


@pytest.mark.slow
def test_without_the_target_an_older_onnxruntime_refuses_the_file(tmp_path: Path, rng: np.random.Generator) -> None:
    """The control: opset 21 (IR 10) is what 1.16 cannot load, so the loads above prove the target matters."""
    python = _old_runtime(OLD_RELEASES[0])
    output = tmp_path / "new.onnx"
    code, printed = _run(str(_norm_gelu_model(tmp_path, rng)), "-o", str(output), "--opset", "21")
    assert code == 0, printed
    np.savez(tmp_path / "in.npz", x0=rng.normal(size=(1, 4, 6)).astype("float32"))
    ran = subprocess.run([str(python), "-c", RUN_IN_OLD, str(output), str(tmp_path / "in.npz"),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0 and ("IR version" in ran.stderr or "opset" in ran.stderr), ran.stderr
