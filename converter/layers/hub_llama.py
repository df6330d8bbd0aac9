"""Keras Hub's Llama and Mistral layers: the RMS norms (LlamaLayerNorm, MistralLayerNormalization) and the
decoder blocks (LlamaTransformerDecoder, MistralTransformerDecoder), keras_hub/src/models/{llama,mistral}/.

Norm: x * rsqrt(mean(x^2, -1) + epsilon) * scale (float32), emitted as Pow -> ReduceMean -> Add -> Sqrt ->
Div -> Mul, the pattern onnxruntime fuses into SimplifiedLayerNormalization.

Decoder block (pre-norm, SwiGLU feedforward, grouped-query attention with rotary position embedding):
    x = x + attention(norm_1(x));  h = norm_2(x);  x = x + W_out((h W_up) * silu(h W_gate))
Attention: q (heads), k and v (key/value heads, each serving heads / kv_heads query heads), rotary on q and
k (half-split), scores scaled by 1/sqrt(head_dim), masked by causal AND padding (AND Mistral's sliding
window i - j < sliding_window) with keras.layers.Softmax, whose fully masked rows attend to nothing.
Llama's rotary frequencies take Llama 3.1's band adjustment when its four factors are set; Mistral's
are divided by rope_scaling_factor (Llama's rope_position_scaling_factor changes nothing in Keras Hub).
Weights, in the order a `.keras` file lists them (children alphabetically, attention's by _CHILD_ORDER):
gate, intermediate, feedforward norm, feedforward output, query, key, value, attention output, attention norm.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.hub_args import damaged
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec
from converter.layers.transformer_ops import (
    MaskedRows,
    attend,
    both,
    linear,
    merge_heads,
    padding_keep,
    positions_keep,
    repeat_heads,
    rms_norm,
    rope_inverse_frequencies,
    rotary,
    split_heads,
)

LLAMA_DECODER = "keras_hub>LlamaTransformerDecoder"
MISTRAL_DECODER = "keras_hub>MistralTransformerDecoder"
# Llama 3.1's rotary band adjustment: all four set, or none (Keras Hub raises otherwise).
LLAMA3_ROPE = ("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
               "rope_pretraining_sequence_length")
DECODER_WEIGHTS = ("gate_kernel", "intermediate_kernel", "feedforward_norm_scale", "feedforward_output_kernel",
                   "query_kernel", "key_kernel", "value_kernel", "attention_output_kernel", "attention_norm_scale")




def _number(config: Config, key: str, default: float | None, positive: bool = True) -> float | None:
    """A finite (positive) number argument; `default` when absent (None: optional)."""
    value = config.value(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0):
        raise damaged(config, key, "expected a finite positive number" if positive else "expected a finite number")
    return float(value)


# -- the norm ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubRMSNormSpec(LayerSpec):
    epsilon: float = 1e-6


@LAYERS.register("keras_hub>LlamaLayerNorm", "keras_hub>MistralLayerNormalization")
class HubRMSNorm(LayerHandler[HubRMSNormSpec]):
    """x * rsqrt(mean(x^2) + epsilon) * scale over the last axis."""

    keras_availability = "file"

    def parse(self, config: Config) -> HubRMSNormSpec:
        epsilon = _number(config, "epsilon", 1e-6, positive=False)
        assert epsilon is not None
        return HubRMSNormSpec(epsilon=epsilon)

    def weight_names(self, node: Node) -> list[str]:
        return ["scale"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        return {"scale": (_features(node, input_shapes[0]),)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        _features(node, input_shapes[0])
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [rms_norm(b, inputs[0], b.weight("scale"), self.spec(node).epsilon)]


def _features(node: Node, shape: Shape) -> int:
    if not shape or not isinstance(shape[-1], int):
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' normalises a last axis of unknown size "
                                    f"({shape})", layer=node.layer_name,
                                    hint="give the input a static feature size")
    return shape[-1]


# -- the decoder block --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubDecoderSpec(LayerSpec):
    intermediate_dim: int
    num_query_heads: int
    num_key_value_heads: int
    rope_max_wavelength: float = 10000.0
    rope_scaling_factor: float = 1.0  # Mistral's (Llama's position factor has no effect in Keras Hub)
    llama3_rope: tuple[float, float, float, float] | None = None  # factor, low, high, pretraining length
    head_dim: int | None = None  # None: hidden_dim // num_query_heads
    sliding_window: int | None = None
    layer_norm_epsilon: float = 1e-5
    activation: str = "silu"


class HubDecoder(LayerHandler[HubDecoderSpec]):
    """LlamaTransformerDecoder / MistralTransformerDecoder called as block(x, decoder_padding_mask=mask)."""

    keras_availability = "file"
    argument_kinds = {"intermediate_dim": "positive"}
    required_arguments = ("intermediate_dim", "num_query_heads", "num_key_value_heads")

    def __init__(self, mistral: bool) -> None:
        self.mistral = mistral

    def parse(self, config: Config) -> HubDecoderSpec:
        heads, kv_heads = config.integer("num_query_heads"), config.integer("num_key_value_heads")
        if heads % kv_heads:
            raise damaged(config, "num_key_value_heads", f"it must divide num_query_heads ({heads})")
        wavelength = _number(config, "rope_max_wavelength", 10000.0)
        epsilon = _number(config, "layer_norm_epsilon", 1e-5, positive=False)
        assert wavelength is not None and epsilon is not None
        spec = HubDecoderSpec(intermediate_dim=config.integer("intermediate_dim"), num_query_heads=heads,
                              num_key_value_heads=kv_heads, rope_max_wavelength=wavelength,
                              layer_norm_epsilon=epsilon, activation=parse_activation(config))
        if not self.mistral:
            return dataclasses.replace(spec, llama3_rope=_llama3_rope(config))
        scaling = _number(config, "rope_scaling_factor", 1.0)
        assert scaling is not None
        return dataclasses.replace(spec, rope_scaling_factor=scaling, head_dim=config.optional_integer("head_dim"),
                                   # Absent: the block's default window (512); null: no window.
                                   sliding_window=config.optional_integer("sliding_window")
                                   if "sliding_window" in config.raw else 512)

    def check(self, node: Node) -> None:
        extra = set(node.call.tensor_kwargs) - {"decoder_padding_mask"}
        if extra or len(node.inputs) - len(node.call.tensor_positions("decoder_padding_mask")) != 1:
            raise UnsupportedLayerError(
                f"{node.kind} '{node.layer_name}' is called with {sorted(extra) or 'several sequences'}",
                layer=node.layer_name, hint="kconvert converts block(sequence, decoder_padding_mask=mask); "
                                            "a decoder_attention_mask or a cache (generation) is not converted")

    def weight_names(self, node: Node) -> list[str]:
        return list(DECODER_WEIGHTS)

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        hidden = _features(node, input_shapes[0])
        spec = self.spec(node)
        inner, heads, kv_heads = spec.intermediate_dim, spec.num_query_heads, spec.num_key_value_heads
        head_dim = _head_dim(node, spec, hidden)
        return {"gate_kernel": (hidden, inner), "intermediate_kernel": (hidden, inner),
                "feedforward_norm_scale": (hidden,), "feedforward_output_kernel": (inner, hidden),
                "query_kernel": (hidden, heads, head_dim), "key_kernel": (hidden, kv_heads, head_dim),
                "value_kernel": (hidden, kv_heads, head_dim), "attention_output_kernel": (heads, head_dim, hidden),
                "attention_norm_scale": (hidden,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_rank(node, input_shapes[0], 3, "(batch, sequence, features)")
        _head_dim(node, self.spec(node), _features(node, input_shapes[0]))
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        x = inputs[node.call.positional(len(inputs))[0]]
        padding = node.call.tensor_positions("decoder_padding_mask")
        keep = both(b, padding_keep(b, inputs[padding[0]]) if padding else None,
                    positions_keep(b, x, axis=1, causal=True,
                                   max_back=None if spec.sliding_window is None else spec.sliding_window - 1))
        w = node.weights
        attention_norm = rms_norm(b, x, b.weight("attention_norm_scale"), spec.layer_norm_epsilon)
        x = b.op("Add", x, self._attention(node, b, attention_norm, keep))
        h = rms_norm(b, x, b.weight("feedforward_norm_scale"), spec.layer_norm_epsilon)
        gate = apply_activation(b, linear(b, h, w["gate_kernel"], None, "gate"), spec.activation)
        up = linear(b, h, w["intermediate_kernel"], None, "intermediate")
        return [b.op("Add", x, linear(b, b.op("Mul", up, gate), w["feedforward_output_kernel"], None,
                                      "feedforward_output"))]

    def _attention(self, node: Node, b: OpBuilder, x: str, keep: str | None) -> str:
        spec, w = self.spec(node), node.weights
        heads, kv_heads, head_dim = spec.num_query_heads, spec.num_key_value_heads, w["query_kernel"].shape[-1]
        frequencies = self.inverse_frequencies(spec, int(head_dim))
        query = rotary(b, split_heads(b, linear(b, x, w["query_kernel"], None, "query"), heads, head_dim),
                       frequencies, sequence_axis=2)
        key = rotary(b, split_heads(b, linear(b, x, w["key_kernel"], None, "key"), kv_heads, head_dim),
                     frequencies, sequence_axis=2)
        value = split_heads(b, linear(b, x, w["value_kernel"], None, "value"), kv_heads, head_dim)
        groups = heads // kv_heads
        context = attend(b, query, repeat_heads(b, key, groups), repeat_heads(b, value, groups),
                         1.0 / math.sqrt(head_dim), keep, MaskedRows.ZERO)
        output_kernel = w["attention_output_kernel"]  # (heads, head_dim, hidden)
        return linear(b, merge_heads(b, context, heads, head_dim),
                      output_kernel.reshape(-1, output_kernel.shape[-1]), None, "attention_output")

    def inverse_frequencies(self, spec: HubDecoderSpec, head_dim: int) -> np.ndarray:
        if self.mistral:
            return rope_inverse_frequencies(head_dim, spec.rope_max_wavelength, spec.rope_scaling_factor)
        plain = rope_inverse_frequencies(head_dim, spec.rope_max_wavelength)
        return plain if spec.llama3_rope is None else llama3_frequencies(plain, *spec.llama3_rope)


def _llama3_rope(config: Config) -> tuple[float, float, float, float] | None:
    given = [_number(config, key, None) for key in LLAMA3_ROPE]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        missing = LLAMA3_ROPE[[v is None for v in given].index(True)]
        raise damaged(config, missing, f"the Llama 3.1 rope arguments {list(LLAMA3_ROPE)} are all set or all null")
    factor, low, high, length = (float(v) for v in given if v is not None)
    if high == low:
        raise damaged(config, "rope_high_freq_factor", "it must differ from rope_low_freq_factor")
    return factor, low, high, length


def llama3_frequencies(inverse: np.ndarray, factor: float, low: float, high: float, length: float) -> np.ndarray:
    """LlamaRotaryEmbedding._get_inverse_freq's band adjustment, in float32 as Keras computes it: long
    wavelengths divided by `factor`, short ones kept, the band between smoothly interpolated."""
    f32 = np.float32
    wavelength = f32(2 * math.pi) / inverse
    low_wavelength, high_wavelength = f32(length / low), f32(length / high)
    adjusted = np.where(wavelength > low_wavelength, inverse / f32(factor), inverse)
    smooth = (f32(length) / wavelength - f32(low)) / f32(high - low)
    smoothed = (f32(1) - smooth) * (adjusted / f32(factor)) + smooth * adjusted
    medium = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
    result: np.ndarray = np.where(medium, smoothed, adjusted).astype(np.float32)
    return result


def _head_dim(node: Node, spec: HubDecoderSpec, hidden: int) -> int:
    head_dim = spec.head_dim if spec.head_dim is not None else hidden // spec.num_query_heads
    if head_dim < 1 or head_dim % 2:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has head_dim {head_dim} (hidden size "
                                    f"{hidden}, {spec.num_query_heads} query heads)", layer=node.layer_name,
                                    hint="rotary embedding needs an even head_dim of at least 2")
    return head_dim


LAYERS.add(LLAMA_DECODER, HubDecoder(mistral=False))
LAYERS.add(MISTRAL_DECODER, HubDecoder(mistral=True))
