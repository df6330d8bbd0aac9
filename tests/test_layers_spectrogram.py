"""STFTSpectrogram and MelSpectrogram (Keras 3), from both writers, against numpy references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError, UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
EPS = 1e-7
FRAME, STEP, FFT = 16, 6, 32


def _frames(x: np.ndarray, length: int, step: int) -> np.ndarray:
    """(..., time) -> (..., frames, length)."""
    return np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)[..., ::step, :]


def _stft_reference(x: np.ndarray, kernels: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """STFTSpectrogram.call in numpy: per-channel strided correlation, then the mode, then the layout."""
    first = cfg["data_format"] == "channels_first"
    signal = (x if first else x.transpose(0, 2, 1)).astype(np.float64)  # (B, C, T)
    if cfg["padding"] == "same":
        total = max((-(-signal.shape[-1] // STEP) - 1) * STEP + FRAME - signal.shape[-1], 0)
        signal = np.pad(signal, [(0, 0), (0, 0), (total // 2, total - total // 2)])
    frames = _frames(signal, FRAME, STEP)
    conv = {k: np.einsum("bctk,kf->bcft", frames, w[:, 0, :]) for k, w in kernels.items()}
    y = _mode(conv, cfg["mode"])
    batch, channels, bins, steps = y.shape
    if cfg["expand_dims"]:
        return y.transpose(0, 1, 3, 2) if first else y.transpose(0, 3, 2, 1)
    flat = y.reshape(batch, channels * bins, steps)
    return flat if first else flat.transpose(0, 2, 1)


def _mode(conv: dict[str, np.ndarray], mode: str) -> np.ndarray:
    if mode in ("real", "imag"):
        return conv[f"{mode}_kernel"]
    real, imag = conv["real_kernel"], conv["imag_kernel"]
    power = real ** 2 + imag ** 2
    outputs = {
        "angle": lambda: np.arctan2(imag, real),
        "stft": lambda: np.concatenate([real, imag], axis=2),
        "psd": lambda: power + np.pad(power[:, :, 1:-1], [(0, 0), (0, 0), (1, 1), (0, 0)]),
        "magnitude": lambda: np.sqrt(np.maximum(power, EPS)),
        "log": lambda: np.log(np.maximum(np.sqrt(np.maximum(power, EPS)), EPS)),
    }
    return outputs[mode]()


def _stft_model(tmp_path: Path, fmt: str, rng: np.random.Generator, cfg: dict[str, Any],
                input_shape: tuple[Any, ...]) -> tuple[Path, dict[str, np.ndarray]]:
    names = [n for n, skip in (("real_kernel", "imag"), ("imag_kernel", "real")) if cfg["mode"] != skip]
    kernels = {n: rng.normal(size=(FRAME, 1, FFT // 2 + 1)).astype("float32") for n in names}
    spec = layer("STFTSpectrogram", "stft", frame_length=FRAME, frame_step=STEP, fft_length=FFT, window="hann",
                 periodic=False, scaling="density", **cfg)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([spec], input_shape), {"stft": list(kernels.values())})
    return path, kernels


LAYOUTS = [
    {"data_format": "channels_last", "padding": "valid", "expand_dims": False},
    {"data_format": "channels_last", "padding": "same", "expand_dims": True},
    {"data_format": "channels_first", "padding": "same", "expand_dims": False},
    {"data_format": "channels_first", "padding": "valid", "expand_dims": True},
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("mode", ["log", "magnitude", "psd", "real", "imag", "angle", "stft"])
def test_stft_spectrogram(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, layout: int,
                          mode: str) -> None:
    cfg = {"mode": mode, **LAYOUTS[layout]}
    shape = (2, 75) if cfg["data_format"] == "channels_first" else (75, 2)
    path, kernels = _stft_model(tmp_path, fmt, rng, cfg, shape)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, _stft_reference(x, kernels, cfg).astype("float32"))


def test_stft_spectrogram_with_unknown_time_and_same_padding(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"mode": "magnitude", "data_format": "channels_last", "padding": "same", "expand_dims": False}
    path, kernels = _stft_model(tmp_path, "keras", rng, cfg, (None, 1))
    for length in (40, 53):
        x = rng.normal(size=(2, length, 1)).astype("float32")
        (y,) = run_onnx(converter.convert(path), x)
        assert_close(y, _stft_reference(x, kernels, cfg).astype("float32"))


def test_stft_spectrogram_refuses_an_unknown_channel_count(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = {"mode": "log", "data_format": "channels_last", "padding": "valid", "expand_dims": False}
    path, _ = _stft_model(tmp_path, "keras", rng, cfg, (50, None))
    with pytest.raises(UnsupportedLayerError, match="unknown number of input channels"):
        converter.convert(path)


# ---- MelSpectrogram -------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def _mel_matrix(bins: int, mels: int, rate: float, low: float, high: float) -> np.ndarray:
    """HTK triangles on the mel scale, peak 1, the DC bin left out (Keras' linear_to_mel_weight_matrix)."""
    spectrum = _hz_to_mel(np.linspace(0.0, rate / 2, bins)[1:])[:, None]
    edges = np.linspace(_hz_to_mel(np.float64(low)), _hz_to_mel(np.float64(high)), mels + 2)
    rising = (spectrum - edges[:-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[2:] - spectrum) / (edges[2:] - edges[1:-1])
    return np.pad(np.maximum(0.0, np.minimum(rising, falling)), [(1, 0), (0, 0)])


def _window(name: Any, length: int, fft: int) -> np.ndarray:
    if name is None:
        return np.ones(fft)
    n = np.arange(length)
    weights = {"hann": 0.5 - 0.5 * np.cos(2 * np.pi * n / length),
               "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * n / length)}[name]
    left = (fft - length) // 2
    return np.pad(weights, (left, fft - length - left))


def _mel_reference(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    fft, stride = cfg["fft_length"], cfg["sequence_stride"]
    padded = np.pad(x.astype(np.float64), [(0, 0), (fft // 2, fft // 2)], mode="reflect")
    frames = _frames(padded, fft, stride) * _window(cfg["window"], cfg["sequence_length"], fft)
    spectrum = np.abs(np.fft.rfft(frames, axis=-1)) ** cfg["mag_exp"]
    mel = spectrum @ _mel_matrix(fft // 2 + 1, cfg["num_mel_bins"], cfg["sampling_rate"], cfg["min_freq"],
                                 cfg["max_freq"])
    if cfg["power_to_db"]:
        mel = 10 * np.log10(np.maximum(mel, cfg["min_power"]))
        mel -= 10 * np.log10(max(abs(cfg["ref_power"]), cfg["min_power"]))
        mel = np.maximum(mel, mel.max() - cfg["top_db"])
    return mel.transpose(0, 2, 1)


MEL_BASE = {"fft_length": 256, "sequence_stride": 64, "sequence_length": 256, "window": "hann",
            "sampling_rate": 16000, "num_mel_bins": 32, "min_freq": 20.0, "max_freq": 8000, "power_to_db": True,
            "top_db": 80.0, "mag_exp": 2.0, "min_power": 1e-10, "ref_power": 1.0}
MEL_CASES = {
    "default": {},
    "hamming_short_frames": {"window": "hamming", "sequence_length": 200, "sequence_stride": 100},
    "no_window_linear": {"window": None, "power_to_db": False, "mag_exp": 1.0},
    "odd_exponent_bands": {"mag_exp": 1.5, "min_freq": 100.0, "max_freq": 3000, "sampling_rate": 8000},
    "top_db_clips": {"top_db": 20.0, "ref_power": 3.0, "min_power": 1e-3, "fft_length": 512,
                     "sequence_length": 400, "num_mel_bins": 40},
}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", sorted(MEL_CASES))
def test_mel_spectrogram(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, case: str) -> None:
    cfg = {**MEL_BASE, **MEL_CASES[case]}
    config = sequential([layer("MelSpectrogram", "mel", **cfg)], (1000,))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {})
    x = rng.normal(size=(batch, 1000)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert y.shape == (batch, cfg["num_mel_bins"], 1000 // cfg["sequence_stride"] + 1)
    assert_close(y, _mel_reference(x, cfg).astype("float32"))


@pytest.mark.parametrize("change, message", [
    ({"top_db": None}, "top_db=None"),
    ({"window": "blackman"}, "window='blackman'"),
    ({"window": [1.0, 2.0]}, "window of shape"),
])
def test_mel_spectrogram_refusals(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    config = sequential([layer("MelSpectrogram", "mel", **{**MEL_BASE, **change})], (1000,))
    with pytest.raises(UnsupportedLayerError, match=message):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


def test_mel_spectrogram_wants_batch_and_time(tmp_path: Path) -> None:
    config = sequential([layer("MelSpectrogram", "mel", **MEL_BASE)], (1000, 2))
    with pytest.raises(ShapeError, match=r"expects a 2-D input \(batch, time\)"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_spectrograms_across_opsets(tmp_path: Path, rng: np.random.Generator, opset: int) -> None:
    """ReduceMax takes its axes as an input from opset 18; Pad's reflect mode and Conv are stable."""
    cfg = {"mode": "angle", "data_format": "channels_last", "padding": "same", "expand_dims": False}
    stft_path, kernels = _stft_model(tmp_path, "keras", rng, cfg, (60, 1))
    x = rng.normal(size=(2, 60, 1)).astype("float32")
    (y,) = run_onnx(converter.convert(stft_path, opset=opset), x)
    assert_close(y, _stft_reference(x, kernels, cfg).astype("float32"))
    mel_cfg = {**MEL_BASE, "top_db": 10.0}
    mel_path = save_keras(tmp_path / "mel.keras", sequential([layer("MelSpectrogram", "mel", **mel_cfg)], (800,)), {})
    signal = rng.normal(size=(2, 800)).astype("float32")
    (mel,) = run_onnx(converter.convert(mel_path, opset=opset), signal)
    assert_close(mel, _mel_reference(signal, mel_cfg).astype("float32"))


def test_mel_spectrogram_with_unknown_length(tmp_path: Path, rng: np.random.Generator) -> None:
    config = sequential([layer("MelSpectrogram", "mel", **MEL_BASE)], (None,))
    onnx_model = converter.convert(save_keras(tmp_path / "m.keras", config, {}))
    for length in (500, 777):
        x = rng.normal(size=(2, length)).astype("float32")
        (y,) = run_onnx(onnx_model, x)
        assert_close(y, _mel_reference(x, MEL_BASE).astype("float32"))
