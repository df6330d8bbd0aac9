"""What each command imports, in a fresh process (timings live in bench/startup.py, never in a test).

A conversion needs onnx's protobuf classes and its C++ checker and strict type inference, loaded by
converter/export/onnx_core.py without onnx/__init__ (which imports onnx.helper and ml_dtypes, ~0.65 s);
it never needs TensorFlow, Keras or onnxruntime unless --check / --reference ask for a comparison.
`--help` imports none of the heavy packages; `inspect` and `-o model.keras` do not import onnx at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "small_cnn" / "model.keras"
CHILD = """
import json, sys
sys.argv = ["kconvert", *json.loads(sys.argv[1])]
from application.cli import main
try:
    main()
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.__stderr__)
"""
NEVER = {"tensorflow", "keras", "tf_keras", "torch", "jax", "onnxruntime"}
HEAVY = {"numpy", "h5py", "onnx", "ml_dtypes", "rich", *NEVER}


def _imported(*args: str) -> set[str]:
    """The top-level packages a command imports, in a fresh process."""
    return {name.split(".")[0] for name in _modules(*args)}


def _modules(*args: str) -> set[str]:
    """Every module (dotted names) a command imports, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(args))], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return set(report["modules"])


def test_help_imports_no_heavy_package() -> None:
    assert not _imported("--help") & HEAVY


def test_inspect_does_not_import_onnx() -> None:
    assert not _imported("inspect", str(FIXTURE)) & {"onnx", "ml_dtypes", *NEVER}


def test_writing_a_keras_archive_does_not_import_onnx(tmp_path: Path) -> None:
    assert not _imported(str(FIXTURE), "-o", str(tmp_path / "m.keras")) & {"onnx", "ml_dtypes", *NEVER}


@pytest.mark.parametrize("float16", [False, True])
def test_a_conversion_imports_onnx_and_nothing_of_keras_or_onnxruntime(tmp_path: Path, float16: bool) -> None:
    modules = _imported(str(FIXTURE), "-o", str(tmp_path / "m.onnx"), *(["--float16"] if float16 else []))
    assert "onnx" in modules  # onnx.checker and strict type inference run on every conversion
    assert not modules & NEVER


@pytest.mark.parametrize("float16", [False, True])
def test_a_conversion_skips_onnx_init_and_ml_dtypes(tmp_path: Path, float16: bool) -> None:
    """Only onnx's protobuf module and C++ extension are loaded: not onnx/__init__, onnx.helper, ml_dtypes."""
    modules = _modules(str(FIXTURE), "-o", str(tmp_path / "m.onnx"), *(["--float16"] if float16 else []))
    assert {"onnx.onnx_ml_pb2", "onnx.onnx_cpp2py_export"} <= modules
    assert not {"onnx", "onnx.helper", "onnx.numpy_helper"} & modules
    assert not any(name == "ml_dtypes" or name.startswith("ml_dtypes.") for name in modules)


def test_verify_from_test_data_loads_neither_keras_nor_the_converter(tmp_path: Path) -> None:
    """`kconvert verify` in CI needs onnxruntime, numpy and protobuf: no TensorFlow or Keras, not h5py or the
    Keras reader, no layer handlers, no onnx/__init__ (ml_dtypes)."""
    model = tmp_path / "model.keras"
    model.write_bytes(FIXTURE.read_bytes())
    reference = ROOT / "fixtures" / "small_cnn" / "reference.npz"
    _modules(str(model), "--reference", str(reference), "--save-test-data")
    modules = _modules("verify", str(tmp_path / "model.onnx"))
    top = {name.split(".")[0] for name in modules}
    assert not top & {"h5py", "ml_dtypes", "tensorflow", "keras", "tf_keras", "torch", "jax"}
    assert "onnxruntime" in top and "onnx" not in modules  # onnx's protobuf classes only, not its package
    assert not {m for m in modules if m.startswith(("converter.layers", "converter.keras", "converter.passes"))}
