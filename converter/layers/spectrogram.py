"""STFTSpectrogram (Keras 3): the STFT as a strided 1-D convolution with the layer's stored kernels.

As `STFTSpectrogram.call` computes it: each input channel is convolved on its own (Keras folds channels
into the batch; here one grouped Conv per kernel, whose output channel c * F + f is exactly Keras'
(channels * freq) order) with `real_kernel` / `imag_kernel` (frame_length, 1, F), stride frame_step,
padding valid or TF-style same. Then per mode: real, imag, angle = atan2(imag, real), stft = [real, imag]
along the freq axis, psd = power with the interior bins doubled, magnitude = sqrt(max(power, eps)),
log = log(max(magnitude, eps)), eps = 1e-7. The stored kernels are used, so trained kernels convert too.
MelSpectrogram lives in `mel_spectrogram.py`.
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
from converter.layers.windows import CHANNELS_FIRST, CHANNELS_LAST, pad_attrs, window_lengths, window_pads

MODES = ("log", "magnitude", "psd", "real", "imag", "angle", "stft")
EPSILON = 1e-7  # keras.backend.epsilon()


@dataclass(frozen=True)
class STFTSpectrogramSpec(LayerSpec):
    mode: str = "log"
    frame_length: int = 256
    frame_step: int = 128  # Keras' default is frame_length // 2: decided at parse
    fft_length: int = 256  # Keras' default is the power of 2 >= frame_length: decided at parse
    padding: str = "valid"
    data_format: str = CHANNELS_LAST
    expand_dims: bool = False

    @property
    def bins(self) -> int:
        return self.fft_length // 2 + 1

    @property
    def output_bins(self) -> int:
        """Frequency rows per channel: mode 'stft' stacks the real and imaginary parts."""
        return self.bins * (2 if self.mode == "stft" else 1)


def _refuse(node: Node, what: str, hint: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has {what}", layer=node.layer_name, hint=hint)


def _spec(node: Node) -> STFTSpectrogramSpec:
    spec = node.spec
    assert isinstance(spec, STFTSpectrogramSpec)  # parsed at the boundary
    return spec


def _format(node: Node) -> str:
    value = _spec(node).data_format
    if value not in (CHANNELS_LAST, CHANNELS_FIRST):
        raise _refuse(node, f"data_format={value!r}", "use channels_last or channels_first")
    return value


def _channels(node: Node, shape: Shape) -> int:
    channels = shape[1 if _format(node) == CHANNELS_FIRST else 2]
    if not isinstance(channels, int):
        raise _refuse(node, "an unknown number of input channels", "give the input a fixed channel count")
    return channels


def atan2(b: OpBuilder, y: str, x: str) -> str:
    """atan2(y, x) from Atan (ONNX has no Atan2): atan(y / x), moved by +-pi where x < 0, and
    +-pi/2 (or 0) where x == 0, as the C library defines it for finite inputs."""
    zero = b.scalar(0.0, "zero")
    base = b.op("Atan", b.op("Div", y, x))
    shift = b.op("Where", b.op("Less", y, zero), b.scalar(-math.pi, "minus_pi"), b.scalar(math.pi, "pi"))
    turned = b.op("Where", b.op("Less", x, zero), b.op("Add", base, shift), base)
    axis = b.op("Mul", b.op("Sign", y), b.scalar(math.pi / 2, "half_pi"))
    return b.op("Where", b.op("Equal", x, zero), axis, turned)


@LAYERS.register("STFTSpectrogram")
class STFTSpectrogram(LayerHandler[STFTSpectrogramSpec]):
    keras_availability = "keras3"

    argument_kinds = {"mode": "text"}

    def parse(self, config: Config) -> STFTSpectrogramSpec:
        frame_length = config.integer("frame_length", 256)
        fft_length = config.integer("fft_length", 2 ** int(math.ceil(math.log2(frame_length))))
        return parse_fields(STFTSpectrogramSpec, config, frame_length=frame_length, fft_length=fft_length,
                            frame_step=config.integer("frame_step", frame_length // 2))

    def check(self, node: Node) -> None:
        spec = self.spec(node)
        if spec.mode not in MODES:
            raise _refuse(node, f"mode={spec.mode!r}", "supported: " + ", ".join(MODES))
        if spec.padding not in ("valid", "same"):
            raise _refuse(node, f"padding={spec.padding!r}", "use 'valid' or 'same'")
        _format(node)
        if spec.mode == "psd" and spec.bins < 2:
            raise _refuse(node, "mode='psd' with a single frequency bin", "use fft_length >= 2")

    def weight_names(self, node: Node) -> list[str]:
        mode = self.spec(node).mode
        return [name for name, skip in (("real_kernel", "imag"), ("imag_kernel", "real")) if mode != skip]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        shape = (self.spec(node).frame_length, 1, self.spec(node).bins)
        return {name: shape for name in self.weight_names(node)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, spec = input_shapes[0], self.spec(node)
        expect_rank(node, shape, 3, "(batch, time, channels)")
        first = _format(node) == CHANNELS_FIRST
        channels, time = _channels(node, shape), shape[2 if first else 1]
        check_elements(node, (channels, spec.frame_length, spec.bins),
                       "channel-tiled STFT kernels", "frame_length, fft_length and input channels")
        bins = spec.output_bins
        (steps,) = window_lengths(node, "frame_length", [time], [spec.frame_length], [spec.frame_step], [1],
                                  spec.padding)
        if spec.expand_dims:
            return [(shape[0], channels, steps, bins) if first else (shape[0], steps, bins, channels)]
        return [(shape[0], channels * bins, steps) if first else (shape[0], steps, channels * bins)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        first = _format(node) == CHANNELS_FIRST
        x = as_float(node, b, inputs[0])
        if not first:
            x = b.transpose(x, [0, 2, 1])
        shape = node.inputs[0].shape
        if shape is None:
            raise ShapeError(f"STFTSpectrogram '{node.layer_name}' has an input of unknown rank", layer=node.layer_name,
                             hint="give the model input a shape")
        channels, time = _channels(node, shape), shape[2 if first else 1]
        convs = {key: self._conv(node, b, x, key, channels, time) for key in self.weight_names(node)}
        y = self._mode(node, b, convs, channels)
        return [self._layout(node, b, y, channels, first)]

    def _conv(self, node: Node, b: OpBuilder, x: str, key: str, channels: int, time: object) -> str:
        """(batch, channels, time) -> (batch, channels * F, steps), each channel with the same kernel."""
        kernel = np.transpose(node.weights[key], (2, 1, 0))  # (F, 1, frame_length)
        stride = self.spec(node).frame_step
        pads = window_pads([time if isinstance(time, int) else None], [kernel.shape[-1]], [stride], [1],
                           self.spec(node).padding)
        return b.op("Conv", x, b.weight(key, np.tile(kernel, (channels, 1, 1))), group=channels,
                    kernel_shape=[kernel.shape[-1]], strides=[stride], **pad_attrs(pads))

    def _mode(self, node: Node, b: OpBuilder, convs: dict[str, str], channels: int) -> str:
        mode = self.spec(node).mode
        if mode in ("real", "imag"):
            return convs[f"{mode}_kernel"]
        real, imag = convs["real_kernel"], convs["imag_kernel"]
        if mode == "angle":
            return atan2(b, imag, real)
        bins = self.spec(node).bins
        if mode == "stft":
            parts = [b.reshape(t, [0, channels, bins, -1]) for t in (real, imag)]
            return b.reshape(b.op("Concat", *parts, axis=2), [0, channels * 2 * bins, -1])
        power = b.op("Add", b.op("Mul", real, real), b.op("Mul", imag, imag))
        if mode == "psd":
            # Keras adds the interior bins to themselves (power + pad(power[1:-1])): doubling is exact.
            scale = np.ones((channels, bins, 1), dtype=np.float32)
            scale[:, 1:-1] = 2.0
            return b.op("Mul", power, b.const(scale.reshape(channels * bins, 1), "psd_scale"))
        eps = b.scalar(EPSILON, "epsilon")
        magnitude = b.op("Sqrt", b.op("Max", power, eps))
        if mode == "magnitude":
            return magnitude
        return b.op("Log", b.op("Max", magnitude, eps))

    def _layout(self, node: Node, b: OpBuilder, y: str, channels: int, first: bool) -> str:
        """(batch, channels * F', steps) -> the layer's output layout."""
        if self.spec(node).expand_dims:
            bins = self.spec(node).output_bins
            split = b.reshape(y, [0, channels, bins, -1])
            return b.transpose(split, [0, 1, 3, 2] if first else [0, 3, 2, 1])
        return y if first else b.transpose(y, [0, 2, 1])
