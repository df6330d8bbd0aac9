"""Keras 3 `model.quantize("int8")` layers (Dense, EinsumDense, Embedding), read as Keras computes them.

Such a layer's dtype is a `QuantizedDTypePolicy` ({"mode": "int8", ...}; older files write the string
"int8_from_float32") and its file holds an int8 kernel (or embeddings table) with a float32 scale per
output channel (per row for Embedding). At inference Keras (`_int8_call`) quantizes the INPUT too, per
row: scale = high / (max|x| + epsilon) over the contracted axes, x_q = clip(round(x * scale), low, high);
multiplies the int8 operands exactly (int32 accumulation) and divides by inputs_scale * kernel_scale.
The ONNX does the same: the int8 initializers stay int8 (a quarter of the float size), the input is
quantized by ReduceMax(Abs)/Div/Mul/Round/Clip, the integers are multiplied in float32 (exact while a
sum stays under 2**24, i.e. up to ~1000 features at full range), and the product is rescaled in Keras' order. An
activation quantizer written as null means weight-only quantization: the float input meets the kernel.
Other modes (int4, float8, gptq, awq) store packed or calibrated values and are refused by their mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.layers.builder import OpBuilder
from converter.layers.spec import Config

# Keras' AbsMaxQuantizer defaults (keras/src/quantizers/quantizers.py; backend.epsilon() is 1e-7).
DEFAULT_RANGE = (-127.0, 127.0)
DEFAULT_EPSILON = 1e-7
_HINT = "save the float model (before model.quantize) or quantize it with mode 'int8'"


@dataclass(frozen=True)
class InputQuantizer:
    """An AbsMaxQuantizer applied to the layer's input at each call."""

    low: float = DEFAULT_RANGE[0]
    high: float = DEFAULT_RANGE[1]
    epsilon: float = DEFAULT_EPSILON


@dataclass(frozen=True)
class Int8:
    """An int8-quantized layer; `inputs` None: weight-only (Keras' activation_quantizer=None)."""

    inputs: InputQuantizer | None = InputQuantizer()


def quantization_mode(dtype: Any) -> str | None:
    """The mode a layer's dtype policy names ("int8", "int4", ...), None for a float policy."""
    if isinstance(dtype, dict):
        if "Quantized" not in str(dtype.get("class_name", "")):
            return None
        config = dtype.get("config")
        config = config if isinstance(config, dict) else {}
        if config.get("mode") is not None:
            return str(config["mode"])
        # Keras 3.0-3.3 named the policy "int8_from_float32" instead of writing its mode.
        return quantization_mode(config.get("name")) or "unknown"
    if isinstance(dtype, str) and "_from_" in dtype:
        return dtype.split("_from_")[0]
    return None


def parse_int8(config: Config) -> Int8 | None:
    """The layer's int8 quantization; None when it is a float layer; any other mode is refused by name."""
    kind, layer = config.ctx.kind, config.ctx.layer_name
    mode = quantization_mode(config.value("dtype"))
    if mode is None:
        return None
    if mode != "int8":
        raise UnsupportedLayerError(f"{kind} '{layer}' is quantized in mode '{mode}'; kconvert reads "
                                    "mode 'int8' only", layer=layer, hint=_HINT)
    if config.value("lora_rank"):
        raise UnsupportedLayerError(f"{kind} '{layer}' is int8-quantized with LoRA enabled", layer=layer,
                                    hint="merge the LoRA weights (model.quantize after merging) before saving")
    qconfig = config.value("quantization_config")
    if qconfig is None:
        return Int8()  # Keras' activation_quantizer_or_default: no config, the default AbsMaxQuantizer
    inner = qconfig.get("config") if isinstance(qconfig, dict) else None
    if not isinstance(inner, dict):
        raise UnsupportedLayerError(f"{kind} '{layer}' has a quantization_config that is not a Keras "
                                    "serialized object", layer=layer, hint="the config is damaged")
    return Int8(_input_quantizer(kind, layer, inner.get("activation_quantizer")))


def _input_quantizer(kind: str, layer: str, raw: Any) -> InputQuantizer | None:
    if raw is None:
        return None
    if raw == "default":
        return InputQuantizer()
    settings = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or raw.get("class_name") != "AbsMaxQuantizer" or not isinstance(settings, dict):
        name = raw.get("class_name") if isinstance(raw, dict) else raw
        raise UnsupportedLayerError(f"{kind} '{layer}' quantizes its inputs with {name!r}; kconvert reads "
                                    "AbsMaxQuantizer only", layer=layer, hint=_HINT)
    value_range = settings.get("value_range", DEFAULT_RANGE)
    epsilon = settings.get("epsilon", DEFAULT_EPSILON)
    if settings.get("output_dtype", "int8") != "int8" or not _number_pair(value_range) or \
            not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool):
        raise UnsupportedLayerError(f"{kind} '{layer}' has an input quantizer with output_dtype="
                                    f"{settings.get('output_dtype')!r}, value_range={value_range!r}, "
                                    f"epsilon={epsilon!r}", layer=layer, hint=_HINT)
    return InputQuantizer(float(value_range[0]), float(value_range[1]), float(epsilon))


def _number_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and \
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and -128 <= v <= 127 for v in value)


def quantize_input(b: OpBuilder, x: str, axes: Sequence[int], q: InputQuantizer) -> tuple[str, str]:
    """(x_q as float32 integers, scale with `axes` kept as 1): abs_max_quantize, op for op in Keras' order
    so that every rounding lands on the same integer."""
    high = b.const(np.float32(q.high), "quant_high")
    absmax = b.reduce("ReduceMax", b.op("Abs", x), axes, keepdims=True)
    scale = b.op("Div", high, b.op("Add", absmax, b.const(np.float32(q.epsilon), "quant_epsilon")))
    rounded = b.op("Round", b.op("Mul", x, scale))
    clipped = b.op("Clip", rounded, b.const(np.float32(q.low), "quant_low"), high)
    return clipped, scale


def int8_weight(b: OpBuilder, key: str, array: np.ndarray) -> str:
    """An int8 initializer kept int8 in the file, read as float32 integers by a Cast (which onnxruntime
    folds once at load); the layer's scale is applied to the product, as Keras does. Not
    DequantizeLinear: onnxruntime's optimizer rewrites DequantizeLinear + MatMul into MatMulNBits, which
    quantizes the activations again (1% off Keras on a weight-only layer). MatMulInteger would be exact
    too but measured 4-5x slower than this on onnxruntime 1.32's CPU provider."""
    stored = b.const(np.ascontiguousarray(array, dtype=np.int8), key)
    return b.op("Cast", stored, to=1)  # 1 = TensorProto.FLOAT; handlers do not import onnx


def rescale(b: OpBuilder, product: str, kernel_scale: str, input_scale: str | None) -> str:
    """product / (kernel_scale * inputs_scale): Keras multiplies the scales first, then divides once."""
    scale = kernel_scale if input_scale is None else b.op("Mul", kernel_scale, input_scale)
    return b.op("Div", product, scale)
