"""MelSpectrogram (Keras 3): centred STFT -> |.|^mag_exp -> mel filterbank -> optional dB scale.

As `MelSpectrogram.call` computes it (backend `stft` with center=True): the (batch, time) signal is
reflect-padded by fft_length // 2 on both sides and cut into frames of fft_length every sequence_stride
samples; each frame is multiplied by the periodic window of sequence_length, zero-padded to fft_length in
the middle (no window at all when window=None), and its rfft is taken. Here the rfft is one strided Conv
whose kernels are the windowed DFT basis (cos and -sin, computed in float64). The magnitude
sqrt(re^2 + im^2) is raised to mag_exp, multiplied by the HTK mel matrix (`linear_to_mel_weight_matrix`),
and, with power_to_db, mapped to 10 log10(max(x, min_power)) - 10 log10(max(|ref_power|, min_power)),
clipped below at max - top_db where max is over the WHOLE batch (Keras reduces every axis): the ONNX model
reproduces that, so it matches Keras for the same batch. Output: (batch, num_mel_bins, frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.limits import check_elements
from converter.layers.preprocessing import as_float
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, parse_fields

MEL_BREAK_HZ, MEL_HIGH_Q = 700.0, 1127.0


@dataclass(frozen=True)
class MelSpectrogramSpec(LayerSpec):
    fft_length: int = 2048
    sequence_length: int = 2048  # Keras' default is fft_length: decided at parse
    sequence_stride: int = 512
    # A window name, its weights, or None (an explicit null: no window at all).
    window: str | tuple[float, ...] | None = "hann"
    sampling_rate: float = 16000.0
    num_mel_bins: int = 128
    min_freq: float = 20.0
    max_freq: float = 8000.0  # Keras' default is int(sampling_rate / 2): decided at parse
    power_to_db: bool = True
    top_db: float | None = 80.0  # None: an explicit null (refused with power_to_db)
    mag_exp: float = 2.0
    min_power: float = 1e-10
    ref_power: float = 1.0


def parse_mel(config: Config) -> MelSpectrogramSpec:
    """The defaults that depend on other arguments are decided here; `window` and `top_db` tell an
    explicit null (no window; no top_db) from a missing value (Keras' default)."""
    fft = config.integer("fft_length", 2048)
    rate = config.number("sampling_rate", 16000)
    window = config.raw.get("window", "hann")
    top_db = config.raw.get("top_db", 80.0)
    return parse_fields(MelSpectrogramSpec, config, fft_length=fft, sampling_rate=rate,
                        sequence_length=config.integer("sequence_length", fft),
                        max_freq=config.number("max_freq", int(rate / 2)),
                        window=window if window is None or isinstance(window, str) else
                        tuple(float(w) for w in window),
                        top_db=float(top_db) if isinstance(top_db, (int, float)) else None)


def _refuse(node: Node, what: str, hint: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"MelSpectrogram '{node.layer_name}' has {what}", layer=node.layer_name, hint=hint)


def _spec(node: Node) -> MelSpectrogramSpec:
    spec = node.spec
    assert isinstance(spec, MelSpectrogramSpec)  # parsed at the boundary
    return spec


def _lengths(node: Node) -> tuple[int, int, int]:
    """(fft_length, sequence_length, sequence_stride)."""
    spec = _spec(node)
    return spec.fft_length, spec.sequence_length, spec.sequence_stride


def frame_window(node: Node) -> np.ndarray:
    """The fft_length weights applied to each frame, as the backend stft builds them (float64)."""
    fft, length, _ = _lengths(node)
    window = _spec(node).window
    if window is None:
        return np.ones(fft)  # tf.signal.stft without window_fn uses the whole fft_length frame
    if isinstance(window, str):
        if window not in ("hann", "hamming"):
            raise _refuse(node, f"window={window!r}", "use 'hann', 'hamming', None or a list of weights")
        alpha = 0.5 if window == "hann" else 0.54
        weights = alpha - (1 - alpha) * np.cos(2 * np.pi * np.arange(length) / length)  # periodic
    else:
        weights = np.asarray(window, dtype=np.float64)
        if weights.shape != (length,):
            raise _refuse(node, f"a window of shape {weights.shape}", f"the window needs {length} weights")
    left = (fft - length) // 2
    return np.pad(weights, (left, fft - length - left))


def dft_kernel(node: Node) -> np.ndarray:
    """Conv weights (2 * bins, 1, fft_length): rows are window * cos, then window * -sin."""
    fft = _lengths(node)[0]
    bins = fft // 2 + 1
    # k * n mod fft keeps the angle exact for long frames.
    angle = 2 * np.pi * (np.outer(np.arange(bins), np.arange(fft)) % fft) / fft
    window = frame_window(node)
    kernel = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])
    return kernel[:, None, :].astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    f32 = np.float32
    result: np.ndarray = f32(MEL_HIGH_Q) * np.log(f32(1.0) + hz.astype(f32) / f32(MEL_BREAK_HZ))
    return result


def _linspace(start: np.ndarray, stop: np.ndarray, num: int) -> np.ndarray:
    """tf.linspace in float32: start + i * ((stop - start) / (num - 1)), with the exact stop at the end."""
    values = start + np.arange(num, dtype=np.float32) * ((stop - start) / np.float32(num - 1))
    values[-1] = stop
    result: np.ndarray = values.astype(np.float32)
    return result


def mel_matrix(node: Node) -> np.ndarray:
    """Keras' linear_to_mel_weight_matrix, (bins, num_mel_bins); the DC bin gets no weight (HTK).

    Computed in float32 step by step as Keras does: the slopes cancel, so float64 would differ more."""
    f32 = np.float32
    spec = _spec(node)
    rate, mels, low, high = spec.sampling_rate, spec.num_mel_bins, spec.min_freq, spec.max_freq
    bins = _lengths(node)[0] // 2 + 1
    spectrum = _hz_to_mel(_linspace(f32(0.0), f32(rate) / f32(2.0), bins)[1:])[:, None]
    edges = _linspace(_hz_to_mel(np.asarray(low)), _hz_to_mel(np.asarray(high)), mels + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    slopes = np.minimum((spectrum - lower) / (center - lower), (upper - spectrum) / (upper - center))
    return np.pad(np.maximum(f32(0.0), slopes), [(1, 0), (0, 0)]).astype(f32)


def _frames(node: Node, time: object) -> int | None:
    fft, _, stride = _lengths(node)
    if not isinstance(time, int):
        return None
    return (time + 2 * (fft // 2) - fft) // stride + 1


@LAYERS.register("MelSpectrogram")
class MelSpectrogram(LayerHandler[MelSpectrogramSpec]):
    keras_availability = "keras3"

    def parse(self, config: Config) -> MelSpectrogramSpec:
        return parse_mel(config)

    def check(self, node: Node) -> None:
        fft, length, stride = _lengths(node)
        if not 0 < length <= fft or stride < 1:
            raise _refuse(node, f"sequence_length={length}, fft_length={fft}, sequence_stride={stride}",
                          "need 0 < sequence_length <= fft_length and sequence_stride >= 1")
        bins = fft // 2 + 1
        check_elements(node, (2 * bins, fft), "a DFT kernel", "fft_length")
        check_elements(node, (bins, self.spec(node).num_mel_bins + 2), "a mel filter bank",
                       "fft_length and num_mel_bins")
        frame_window(node)
        if self.spec(node).power_to_db and self.spec(node).top_db is None:
            raise _refuse(node, "power_to_db=True with top_db=None",
                          "Keras itself cannot run this configuration; give top_db a number")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 2, "(batch, time)")
        half = _lengths(node)[0] // 2
        if isinstance(shape[1], int) and shape[1] <= half:
            raise ShapeError(f"MelSpectrogram '{node.layer_name}' reflects {half} samples at each end of a "
                             f"{shape[1]}-sample input, which needs more than {half} samples",
                             layer=node.layer_name, hint="use a longer input or a smaller fft_length")
        return [(shape[0], self.spec(node).num_mel_bins, _frames(node, shape[1]))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        fft, _, stride = _lengths(node)
        signal = b.unsqueeze(as_float(node, b, inputs[0]), [1])
        half = fft // 2
        padded = b.op("Pad", signal, b.ints([0, 0, half, 0, 0, half], "pads"), mode="reflect")
        spectrum = b.op("Conv", padded, b.const(dft_kernel(node), "dft_kernel"), kernel_shape=[fft],
                        strides=[stride])
        bins = fft // 2 + 1
        real, imag = b.split(spectrum, [bins, bins], axis=1)
        power = b.op("Add", b.op("Mul", real, real), b.op("Mul", imag, imag))
        magnitude = self._magnitude(node, b, power)
        mel = b.op("MatMul", b.const(np.ascontiguousarray(mel_matrix(node).T), "mel_matrix"), magnitude)
        return [self._db(node, b, mel) if self.spec(node).power_to_db else mel]

    def _magnitude(self, node: Node, b: OpBuilder, power: str) -> str:
        """sqrt(power) ** mag_exp; exponents 1 and 2 skip the Pow (the same value, fewer roundings)."""
        exponent = self.spec(node).mag_exp
        if exponent == 2.0:
            return power
        root = b.op("Sqrt", power)
        return root if exponent == 1.0 else b.op("Pow", root, b.scalar(exponent, "mag_exp"))

    def _db(self, node: Node, b: OpBuilder, x: str) -> str:
        spec = self.spec(node)
        floor = spec.min_power
        ref = 10.0 * math.log10(max(abs(spec.ref_power), floor))
        log10 = b.op("Mul", b.op("Log", b.op("Max", x, b.scalar(floor, "min_power"))),
                     b.scalar(10.0 / math.log(10.0), "ten_over_ln10"))
        db = b.op("Sub", log10, b.scalar(ref, "ref_db"))
        peak = b.reduce("ReduceMax", db, [0, 1, 2], keepdims=True)
        top_db = 80.0 if spec.top_db is None else spec.top_db  # None only without power_to_db: never here
        return b.op("Max", db, b.op("Sub", peak, b.scalar(top_db, "top_db")))
