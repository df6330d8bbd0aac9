"""Live cross-checks of STFTSpectrogram and MelSpectrogram (Keras 3 only) against Keras' outputs.

String windows of STFTSpectrogram need scipy in Keras; the conversion reads the stored kernels, so a list
window (or None) exercises the same path without it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, keras_outputs
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf


def _stft_outputs(L: Any, audio: Any, planar: Any) -> list[Any]:
    hamming = list(np.hamming(49)[:48])
    outs = []
    for i, mode in enumerate(["log", "magnitude", "psd", "real", "imag", "angle", "stft"]):
        first = i % 2 == 1
        layer = L.STFTSpectrogram(mode=mode, frame_length=48, frame_step=20 + i, fft_length=64 + 16 * (i % 3),
                                  window=None if i % 3 == 2 else hamming, padding=("valid", "same")[i % 2],
                                  expand_dims=i in (1, 4, 6), scaling=(None, "density", "spectrum")[i % 3],
                                  data_format="channels_first" if first else "channels_last")
        outs.append(layer(planar if first else audio))
    return outs


def _mel_outputs(L: Any, mono: Any) -> list[Any]:
    configs: list[dict[str, Any]] = [
        {},
        {"fft_length": 512, "sequence_stride": 128, "sequence_length": 300, "window": "hamming", "num_mel_bins": 40,
         "min_freq": 50.0, "max_freq": 6000, "top_db": 30.0, "ref_power": 2.0},
        {"fft_length": 256, "sequence_stride": 100, "window": None, "power_to_db": False, "mag_exp": 1.0},
        {"fft_length": 256, "sequence_stride": 64, "mag_exp": 1.5, "sampling_rate": 8000, "num_mel_bins": 32,
         "min_power": 1e-5},
    ]
    return [L.MelSpectrogram(**cfg)(mono) for cfg in configs]


@pytest.mark.filterwarnings("ignore:`fft_length` is recommended to be a power of two")
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_spectrograms_match_keras(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    L = keras.layers
    rng = np.random.default_rng(0)
    audio, planar, mono = L.Input((300, 2)), L.Input((2, 300)), L.Input((4000,))
    model = keras.Model([audio, planar, mono], _stft_outputs(L, audio, planar) + _mel_outputs(L, mono))
    for lay in model.layers:  # trained kernels: the stored values, not the initializer, must be used
        lay.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) * 0.01 for w in lay.get_weights()])
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    onnx_model = converter.convert(path)
    for batch in (1, 3):
        xs = [rng.normal(size=(batch, *shape)).astype("float32") for shape in ((300, 2), (2, 300), (4000,))]
        expected = keras_outputs(model, xs)
        got = run_onnx(onnx_model, *xs)
        assert len(got) == len(expected) == 11
        for g, want in zip(got, expected):
            assert_close(g, np.asarray(want))
