"""Live checks of the Keras 3 upgrade path (`kconvert FILE -o model.keras`): Keras 3's own
`keras.saving.load_model` (safe_mode=True) loads the written archive and computes the source's outputs.

- every committed fixture, from every file format it has, against the outputs Keras stored;
- models built with tf_keras (Keras 2) whose Keras 3 meaning differs (hard_sigmoid, masks with
  initial_state or through SpatialDropout1D), against tf_keras' own predictions;
- corpus entries from Keras 1 / Keras 2 (most of which Keras 3 refuses to load), against the ONNX
  conversion of the source file. Entries holding a Lambda never reach TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import keras_outputs
from test_fixtures import KERAS_HUB_PREFIX

import converter

pytestmark = pytest.mark.tf
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
RTOL, ATOL = 1e-4, 1e-5

# (source file, weights file, key prefix in expected.npz)
SOURCES = {"model.keras": (None, "k3"), "model.h5": (None, "k3"), "model.json": ("model.weights.h5", "k3"),
           "model_k2.h5": (None, "k2"), "model_k2.json": ("weights_k2.h5", "k2")}
FIXTURE_FILES = [(case.name, source) for case in sorted(FIXTURES.iterdir())
                 if case.is_dir() and not case.name.startswith(KERAS_HUB_PREFIX)
                 for source in SOURCES if (case / source).exists()]
HUB_FIXTURES = sorted(case for case in FIXTURES.iterdir() if case.name.startswith(KERAS_HUB_PREFIX))


def _keras() -> Any:
    return pytest.importorskip("keras")


def _predict(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """As `kconvert --check` computes Keras' answer: also for channels_first layers on CPUs without AVX-512."""
    return keras_outputs(model, inputs)


def _load_archive(path: Path) -> Any:
    return _keras().saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("case", HUB_FIXTURES, ids=lambda p: p.name)
def test_keras_hub_models_are_not_written_as_plain_archives(tmp_path: Path, case: Path) -> None:
    """A Keras Hub task's layers are Keras Hub classes: no Keras 3 built-in archive holds them; refused by
    name (exit 3), nothing written."""
    from converter.errors import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError, match="cannot be written as Keras 3"):
        converter.save_keras(case / "model.keras", tmp_path / "up.keras")
    assert not (tmp_path / "up.keras").exists()


@pytest.mark.parametrize(("case", "source"), FIXTURE_FILES, ids=[f"{c}-{s}" for c, s in FIXTURE_FILES])
def test_fixture_archive_loads_in_keras3(tmp_path: Path, case: str, source: str) -> None:
    folder = FIXTURES / case
    weights, prefix = SOURCES[source]
    written = converter.save_keras(folder / source, tmp_path / "up.keras",
                                   weights=None if weights is None else folder / weights)
    stored_inputs, expected = np.load(folder / "inputs.npz"), np.load(folder / "expected.npz")
    inputs = [stored_inputs[f"x{i}"] for i in range(len(stored_inputs.files))]
    outputs = _predict(_load_archive(written.path), inputs)
    assert len(outputs) == len([k for k in expected.files if k.startswith(prefix)])
    for i, got in enumerate(outputs):
        np.testing.assert_allclose(got, expected[f"{prefix}_{i}"], rtol=RTOL, atol=ATOL)


def _keras2_model(name: str) -> Any:
    """tf_keras models whose Keras 3 meaning differs unless the writer translates them, and layers
    whose Keras 3 weights sit in sub-objects (MultiHeadAttention's projections, a Bidirectional's cells)."""
    tk = pytest.importorskip("tf_keras")
    layers = tk.layers
    if name == "dense":
        x = tk.Input((6,))
        return tk.Model(x, layers.Dense(3, activation="hard_sigmoid")(layers.Dense(4, activation="relu")(x)))
    if name == "recurrent":
        x = tk.Input((7,))
        e = layers.SpatialDropout1D(0.3)(layers.Embedding(6, 4, mask_zero=True)(x))  # Keras 2 passes the mask on
        s = layers.LSTM(3, recurrent_activation="hard_sigmoid")(e)
        g = layers.Bidirectional(layers.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False,
                                            return_sequences=True))(e, initial_state=[s, s])
        y = layers.TimeDistributed(layers.Dense(2, activation="hard_sigmoid"))(g)
        return tk.Model(x, layers.BatchNormalization(center=False)(y))
    if name == "masked_rnn":
        x = tk.Input((7, 3))
        return tk.Model(x, layers.SimpleRNN(4, activation="hard_sigmoid")(layers.Masking(0.0)(x)))
    if name == "attention":
        x = tk.Input((7, 4))
        y = layers.MultiHeadAttention(2, 3)(x, x)
        z = layers.AdditiveAttention()([x, layers.Attention(use_scale=True)([x, y])])
        return tk.Model(x, layers.Conv1D(3, 2)(z))
    if name == "conv_lstm":
        x = tk.Input((3, 6, 6, 2))
        return tk.Model(x, layers.ConvLSTM2D(2, 3, recurrent_activation="hard_sigmoid")(x))
    x = tk.Input((9, 9, 3))  # "convs"
    y = layers.DepthwiseConv2D(3)(layers.SeparableConv2D(4, 3, depth_multiplier=2)(x))
    y = layers.ThresholdedReLU(0.1)(layers.PReLU()(layers.Conv2DTranspose(2, 3, strides=2)(y)))
    return tk.Model(x, layers.GlobalAveragePooling2D()(y))


def _keras2_inputs(name: str, model: Any, batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    if name != "recurrent":
        x = rng.normal(size=(batch, *model.input_shape[1:])).astype("float32") * 2
        if name == "masked_rnn":
            x[:, 2] = 0  # a masked step
        return x
    ids = rng.integers(1, 6, size=(batch, 7)).astype("float32")
    ids[:, 2] = 0  # masked steps inside and at the end of every sequence
    ids[:, 5:] = 0
    return ids


@pytest.mark.parametrize("name", ["dense", "recurrent", "masked_rnn", "attention", "convs", "conv_lstm"])
def test_keras2_models_survive_the_upgrade(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    model = _keras2_model(name)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.8 for w in model.get_weights()]
    if name == "recurrent":
        weights[-1] = np.abs(weights[-1]) + 0.5  # moving variance
    model.set_weights(weights)
    model.save(tmp_path / "k2.h5")
    upgraded = _load_archive(converter.save_keras(tmp_path / "k2.h5", tmp_path / "up.keras").path)
    for batch in (1, 3):
        x = _keras2_inputs(name, model, batch)
        (got,) = _predict(upgraded, [x])
        (want,) = _predict(model, [x])
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- the real-world corpus -------------------------------------------------------------------------

_spec = importlib.util.spec_from_file_location("corpus_report", ROOT / "bench" / "corpus_report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("corpus_report", report)
_spec.loader.exec_module(report)
CORPUS = Path(os.environ.get("KCONVERT_CORPUS", report.DEFAULT_CORPUS))
ENTRIES = report.load_manifest(CORPUS) if (CORPUS / "manifest.json").exists() else []
# Files from before Keras 3 (Keras 3 refuses Keras 1 files, tf.keras 2.13-2.15 zips and many Keras 2 .h5).
UPGRADABLE = [e for e in ENTRIES if e["era"] in ("keras1", "keras2") and e["format"] != "weights-only"]


@pytest.mark.corpus
@pytest.mark.skipif(not ENTRIES, reason=f"the real-world corpus is not at {CORPUS}")
@pytest.mark.parametrize("entry", UPGRADABLE, ids=[e["id"] for e in UPGRADABLE])
def test_corpus_entry_upgrades_to_keras3(tmp_path: Path, entry: dict[str, Any]) -> None:
    from converter.errors import KconvertError

    model_path, weights = report.entry_paths(CORPUS, entry)
    try:
        written = converter.save_keras(model_path, tmp_path / "up.keras", weights=weights,
                                       backend=report.backend_of(entry))
    except KconvertError as err:  # the ONNX corpus test shows these are refusals with a reason
        pytest.skip(f"not upgraded: {err.message[:160]}")
    if report.holds_code(CORPUS, entry):  # checked before anything imports TensorFlow
        pytest.fail("an entry holding code was written as an archive")
    source_onnx, _ = report.convert_entry(CORPUS, entry)
    inputs = report.sample_inputs(source_onnx)
    want = report.run_onnx_model(source_onnx, inputs)
    got = _predict(_load_archive(written.path), inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=RTOL, atol=ATOL)
