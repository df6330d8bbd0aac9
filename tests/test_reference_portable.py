"""The Keras reference (runtime/reference.py) runs on any x86-64 CPU (issue 9).

Without AVX-512 TensorFlow leaves oneDNN off and has no CPU kernel for channels_first convolutions and
poolings, so `model.predict` and `kconvert --check` failed there. The reference imports TensorFlow with
oneDNN on, and runs channels_first models through XLA where the kernels are still missing. Here every
path is held against a channels_last twin with the same weights (and a numpy convolution), and a
reference Keras cannot compute ends in a KconvertError, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter.errors import KconvertError
from runtime import reference
from runtime.reference import ONEDNN_ENV, ReferenceFailed

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["keras", "tf_keras"]

# id -> (layer built for a data_format from the `layers` module, channels_first sample shape). Widths
# differ from output channels: Keras 3 adds a channels_first depthwise bias on the wrong axis otherwise.
Make = Callable[[Any, str], Any]
CASES: dict[str, tuple[Make, tuple[int, ...]]] = {
    "conv2d": (lambda L, f: L.Conv2D(5, 3, strides=(2, 1), data_format=f), (3, 9, 8)),
    "max_pool2d": (lambda L, f: L.MaxPooling2D(3, strides=2, padding="same", data_format=f), (3, 9, 8)),
    "conv1d": (lambda L, f: L.Conv1D(4, 3, padding="same", data_format=f), (3, 11)),
    "separable2d": (lambda L, f: L.SeparableConv2D(4, 3, depth_multiplier=2, data_format=f), (3, 8, 9)),
    "depthwise2d": (lambda L, f: L.DepthwiseConv2D(3, depth_multiplier=2, data_format=f), (3, 8, 9)),
    "conv2d_transpose": (lambda L, f: L.Conv2DTranspose(3, 3, strides=2, padding="same", data_format=f),
                         (2, 4, 5)),
    "conv3d": (lambda L, f: L.Conv3D(3, 2, data_format=f), (2, 4, 5, 6)),
}


def _keras(module: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip(module)


def _twins(module: str, case: str) -> tuple[Any, Any]:
    """The layer as a channels_first model and as a channels_last one, holding the same weights."""
    keras = _keras(module)
    make, shape = CASES[case]
    first, last = keras.Input(shape), keras.Input((*shape[1:], shape[0]))
    cf_model = keras.Model(first, make(keras.layers, "channels_first")(first), name=f"{case}_cf")
    cl_model = keras.Model(last, make(keras.layers, "channels_last")(last))
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=w.shape).astype("float32") for w in cf_model.get_weights()]
    cf_model.set_weights(weights)
    cl_model.set_weights(weights)
    return cf_model, cl_model


def _channels_last_answer(cl_model: Any, x: np.ndarray) -> np.ndarray:
    """The twin's output for the channels_first input, moved back to channels_first."""
    to_last, to_first = (0, *range(2, x.ndim), 1), (0, x.ndim - 1, *range(1, x.ndim - 1))
    return np.transpose(np.asarray(cl_model(np.transpose(x, to_last), training=False)), to_first)


def _assert_float32_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def _sample(case: str, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(batch).normal(size=(batch, *CASES[case][1])).astype("float32")


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_channels_first_reference_equals_channels_last_keras(module: str, case: str) -> None:
    """The path the reference picks on this CPU (eager with oneDNN, or XLA) answers like channels_last Keras."""
    cf_model, cl_model = _twins(module, case)
    x = _sample(case)
    (got,) = reference.reference_outputs(cf_model, [x])
    _assert_float32_equal(got, _channels_last_answer(cl_model, x))


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_xla_fallback_equals_channels_last_keras(module: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The XLA path, forced: what CPUs without the kernels take, checked on every CPU (AVX-512 ones too)."""
    cf_model, cl_model = _twins(module, case)
    monkeypatch.setattr(reference, "needs_xla", lambda model: True)
    x = _sample(case)
    (got,) = reference.reference_outputs(cf_model, [x])
    _assert_float32_equal(got, _channels_last_answer(cl_model, x))


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
def test_channels_first_conv2d_equals_numpy(module: str) -> None:
    cf_model, _ = _twins(module, "conv2d")
    kernel, bias = cf_model.get_weights()  # (kh, kw, in, out), (out,)
    x = _sample("conv2d").astype("float64")
    patches = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(2, 3))[:, :, ::2, :]
    want = np.einsum("ncijhw,hwco->noij", patches, kernel) + bias[:, None, None]
    (got,) = reference.reference_outputs(cf_model, [x.astype("float32")])
    _assert_float32_equal(got, want.astype("float32"))


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
def test_only_channels_first_models_may_take_xla(module: str) -> None:
    """Detection is up front and from the model: channels_last models never pay for an XLA compile."""
    keras = _keras(module)
    L = keras.layers
    frames = keras.Input((2, 3, 6, 5))
    nested = keras.Sequential([keras.Input((3, 6, 5)), L.Conv2D(2, 2, data_format="channels_first")])
    wrapped = keras.Model(frames, L.TimeDistributed(nested)(frames))
    image = keras.Input((3, 4, 5))
    resampled = L.Flatten(data_format="channels_first")(L.UpSampling2D(2, data_format="channels_first")(image))
    runs_anywhere = keras.Model(image, L.GlobalAveragePooling2D(data_format="channels_first")(image) + resampled[:, :3])
    cf_model, cl_model = _twins(module, "max_pool2d")
    assert reference.holds_channels_first_conv(cf_model) and reference.holds_channels_first_conv(wrapped)
    assert not reference.holds_channels_first_conv(cl_model) and not reference.needs_xla(cl_model)
    assert not reference.needs_xla(runs_anywhere)  # channels_first, but no NCHW kernel: XLA not needed
    assert reference.needs_xla(wrapped) == reference.channels_first_kernels_missing()


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
def test_op_failure_is_a_clean_error(module: str) -> None:
    """TensorFlow refusing to compute (ids past the Embedding's table) is a KconvertError naming the model."""
    keras = _keras(module)
    ids = keras.Input((4,), dtype="int32")
    model = keras.Model(ids, keras.layers.Embedding(5, 2)(ids), name="lookup_model")
    with pytest.raises(ReferenceFailed) as caught:
        reference.reference_outputs(model, [np.array([[0, 1, 2, 50]], dtype="int32")])
    message = str(caught.value)
    assert isinstance(caught.value, KconvertError) and caught.value.exit_code == 3
    assert "'lookup_model'" in message and "InvalidArgumentError" in message and "hint:" in message
    assert "Arguments received" not in message and "\x1b[" not in message


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("force_xla", [False, True])
def test_inputs_the_model_refuses_are_a_clean_error(module: str, force_xla: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cf_model, _ = _twins(module, "conv2d")
    monkeypatch.setattr(reference, "needs_xla", lambda model: force_xla)
    with pytest.raises(ReferenceFailed, match="conv2d_cf.*ValueError") as caught:
        reference.reference_outputs(cf_model, [_sample("conv2d")[:, 0]])
    assert "File \"" not in str(caught.value) and "in user code" not in str(caught.value)


@pytest.mark.tf
@pytest.mark.parametrize("module", MODULES)
def test_missing_kernel_is_a_clean_error_naming_the_layer(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where eager TensorFlow lacks the channels_first kernel, running without the fallback says so cleanly."""
    if not reference.channels_first_kernels_missing():
        pytest.skip("TensorFlow has channels_first CPU kernels here (oneDNN on)")
    cf_model, _ = _twins(module, "conv2d")
    monkeypatch.setattr(reference, "needs_xla", lambda model: False)
    with pytest.raises(ReferenceFailed, match="NHWC") as caught:
        reference.reference_outputs(cf_model, [_sample("conv2d")])
    assert "conv2d" in str(caught.value).lower()


@pytest.mark.tf
def test_op_xla_cannot_compile_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """XLA has no bicubic resize: a channels_first model holding one cannot take the fallback. Clean error,
    and where this TensorFlow lacks the kernels, the hint says how to give them (oneDNN)."""
    keras = _keras("keras")
    L = keras.layers
    image = keras.Input((2, 4, 5))
    y = L.UpSampling2D(2, interpolation="bicubic", data_format="channels_first")(image)
    model = keras.Model(image, L.Conv2D(3, 3, data_format="channels_first")(y), name="bicubic_model")
    monkeypatch.setattr(reference, "needs_xla", lambda model: True)
    with pytest.raises(ReferenceFailed, match="'bicubic_model'.*ResizeBicubic") as caught:
        reference.reference_outputs(model, [np.zeros((1, 2, 4, 5), "float32")])
    assert (ONEDNN_ENV in str(caught.value)) == reference.channels_first_kernels_missing()


def test_onednn_is_on_for_the_import_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set while TensorFlow is first imported, gone afterwards: nothing leaks into the user's process."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    with reference._onednn_during_import():
        assert os.environ[ONEDNN_ENV] == "1"
    assert ONEDNN_ENV not in os.environ


@pytest.mark.parametrize("users_value", ["0", "1"])
def test_onednn_setting_of_the_user_is_kept(users_value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setenv(ONEDNN_ENV, users_value)
    with reference._onednn_during_import():
        assert os.environ[ONEDNN_ENV] == users_value
    assert os.environ[ONEDNN_ENV] == users_value


def test_tensorflow_already_imported_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", sys)  # too late to change how it was imported
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    with reference._onednn_during_import():
        assert ONEDNN_ENV not in os.environ


def _save_channels_first(tmp_path: Path, module: str, suffix: str) -> Path:
    keras = _keras(module)
    L = keras.layers
    image = keras.Input((3, 9, 8))
    y = L.MaxPooling2D(2, data_format="channels_first")(L.Conv2D(4, 3, data_format="channels_first")(image))
    y = L.DepthwiseConv2D(2, data_format="channels_first")(y)
    path = tmp_path / f"cf{suffix}"
    keras.Model(image, L.Conv2DTranspose(2, 3, strides=2, data_format="channels_first")(y)).save(path)
    return path


@pytest.mark.tf
@pytest.mark.parametrize(("module", "suffix", "onednn"), [("keras", ".keras", None), ("tf_keras", ".h5", "0")],
                         ids=["keras3-onednn-default", "tf_keras-onednn-forced-off"])
def test_kconvert_check_on_channels_first_model(tmp_path: Path, module: str, suffix: str,
                                                onednn: str | None) -> None:
    """`kconvert MODEL --check` in a fresh process, as a user runs it: exit 0, outputs match Keras."""
    model = _save_channels_first(tmp_path, module, suffix)
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV} | ({ONEDNN_ENV: onednn} if onednn else {})
    code = "import sys; from application.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, str(model), "-o", str(tmp_path / "m.onnx"), "--check",
                           "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["check"]["ok"] and report["check"]["against"] == "keras"
