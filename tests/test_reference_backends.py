"""A Keras reference without TensorFlow (issue 11 item 7): Keras 3 files are checked with Keras 3 on any
installed backend (runtime/reference.py choose_backend), tf_keras files still need the tf extra.

The fast tests cover the choice and the refusals without importing Keras. The `keras3` tests run the CLI
and runtime/reference.py in a virtualenv WITHOUT TensorFlow that holds the keras3 extra, named by
KCONVERT_KERAS3_VENV (.ci/run builds one: python3 -m venv .venv-keras3 && .venv-keras3/bin/pip install
-e '.[keras3,test]'); they skip without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converter.keras.artifacts import open_artifact
from runtime import reference
from runtime.reference import BACKEND_ENV, ReferenceUnavailable, choose_backend

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
VENV = os.environ.get("KCONVERT_KERAS3_VENV")


def _has(*modules: str) -> object:
    return lambda module: module in modules


@pytest.mark.parametrize(("requested", "present", "chosen"), [
    (None, ("tensorflow", "jax", "torch", "numpy", "scipy"), "tensorflow"),
    (None, ("jax", "torch", "numpy", "scipy"), "jax"),
    (None, ("torch", "numpy"), "torch"),
    ("torch", ("tensorflow", "jax", "torch"), "torch"),  # the user's choice, when installed
    ("torch", ("tensorflow", "jax"), "tensorflow"),  # ... and the usual order when it is not
    ("numpy", ("numpy", "jax", "scipy"), "numpy"),
    ("numpy", ("numpy",), None),  # Keras' NumPy backend convolves with jax.lax: not alone
    ("mlx", ("jax",), "jax"),  # a backend kconvert does not know is not asked for
    (None, ("numpy",), None),
])
def test_the_backend_choice(requested: str | None, present: tuple[str, ...], chosen: str | None) -> None:
    assert choose_backend(requested, _has(*present)) == chosen  # type: ignore[arg-type]


def test_the_backend_variable_is_the_users_again_after_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    with reference._backend_during_import("jax"):
        assert os.environ[BACKEND_ENV] == "jax"
    assert os.environ[BACKEND_ENV] == "torch"
    monkeypatch.delenv(BACKEND_ENV)
    with reference._backend_during_import("jax"):
        assert os.environ[BACKEND_ENV] == "jax"
    assert BACKEND_ENV not in os.environ


def test_a_keras2_file_without_tensorflow_names_the_tf_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "installed", lambda module: module in ("keras", "jax"))
    artifact = open_artifact(FIXTURES / "small_cnn" / "model_k2.h5")
    with pytest.raises(ReferenceUnavailable, match="Keras 1/2.*TensorFlow is not installed") as caught:
        reference.load_keras_model(artifact)
    artifact.close()
    assert "kconvert-onnx[tf]" in str(caught.value.hint)


def test_a_keras3_file_without_a_backend_names_the_keras3_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setattr(reference, "installed", lambda module: module in ("keras", "numpy"))
    assert not reference.reference_installed()
    artifact = open_artifact(FIXTURES / "small_cnn" / "model.keras")
    with pytest.raises(ReferenceUnavailable, match="none of its backends") as caught:
        reference.load_keras_model(artifact)
    artifact.close()
    assert "kconvert-onnx[keras3]" in str(caught.value.hint)


# --- In a virtualenv without TensorFlow --------------------------------------------------------------

keras3 = pytest.mark.skipif(VENV is None, reason="set KCONVERT_KERAS3_VENV to a venv with kconvert[keras3] and "
                                                  "no TensorFlow (.ci/run builds one)")
MODELS = ["small_cnn", "lstm_stack", "conv_channels_first"]  # conv + dense, an RNN, channels_first

# What the reference computes in the venv: the backend, and the last layer's value through layer_outputs
# against the model's own output (so intermediate values work on that backend too).
PROBE = """
import json, sys
import numpy as np
from converter.keras.artifacts import open_artifact
from runtime import reference
model = reference.load_keras_model(open_artifact(sys.argv[1]))
shape = [d or 4 for d in model.inputs[0].shape[1:]]
x = np.random.default_rng(0).normal(size=[2, *shape]).astype("float32")
(whole,) = reference.reference_outputs(model, [x])
last = model.layers[-1].name
(layer,) = reference.layer_outputs(model, [x], [last])[last]
print(json.dumps({**reference.reference_backend(model).to_dict(), "tf": "tensorflow" in sys.modules,
                  "same": bool(np.allclose(whole, layer, rtol=1e-5, atol=1e-6))}))
"""


def _venv_run(args: list[str], tmp_path: Path, backend: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV}
    env["PYTHONPATH"] = str(ROOT)  # this checkout, whatever the venv installed
    if backend is not None:
        env[BACKEND_ENV] = backend
    python = Path(str(VENV)) / "bin" / "python"
    return subprocess.run([str(python), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@keras3
@pytest.mark.slow
def test_the_venv_has_no_tensorflow(tmp_path: Path) -> None:
    found = _venv_run(["-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)"], tmp_path)
    assert found.stdout.strip() == "True", "KCONVERT_KERAS3_VENV must be a venv without TensorFlow"


@keras3
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_check_matches_keras_without_tensorflow(name: str, tmp_path: Path) -> None:
    done = _venv_run(["-m", "application.cli", str(FIXTURES / name / "model.keras"), "-o",
                      str(tmp_path / "m.onnx"), "--check"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches Keras" in done.stdout and "Traceback" not in done.stderr


@keras3
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
@pytest.mark.parametrize("name", ["small_cnn", "lstm_stack", "conv_channels_first"])
def test_each_installed_backend_computes_the_reference(backend: str, name: str, tmp_path: Path) -> None:
    """channels_first convolutions run natively on JAX, PyTorch and NumPy (no XLA step: TensorFlow's)."""
    chosen = _venv_run(["-c", f"from runtime.reference import choose_backend; print(choose_backend('{backend}'))"],
                       tmp_path, backend)
    if chosen.stdout.strip() != backend:
        pytest.skip(f"Keras' {backend} backend is not installed in {VENV}")
    done = _venv_run(["-c", PROBE, str(FIXTURES / name / "model.keras")], tmp_path, backend)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert (answer["keras"], answer["backend"], answer["tf"], answer["same"]) == ("keras", backend, False, True)


@keras3
@pytest.mark.slow
def test_a_keras2_file_asks_for_the_tf_extra(tmp_path: Path) -> None:
    done = _venv_run(["-m", "application.cli", str(FIXTURES / "small_cnn" / "model_k2.h5"), "-o",
                      str(tmp_path / "m.onnx"), "--check"], tmp_path)
    assert done.returncode == 2 and "kconvert-onnx[tf]" in done.stderr and "Traceback" not in done.stderr
