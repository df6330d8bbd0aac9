"""Gemma's Keras Hub layers (keras_hub/src/models/gemma/, gemma3/, version 0.32.0).

- `RMSNormalization` (Gemma's and Gemma 3's, one formula): x * rsqrt(mean(x^2) + epsilon) * (1 + scale).
  Keras has a class of the same name that multiplies by `scale`; this one is handled under its Keras Hub
  name (`keras_hub>RMSNormalization`, see layer_configs.hub_layer_kind).
- `Gemma3MeanPooling`: EmbeddingGemma's mean over the real tokens.
- `GemmaDecoderBlock` (Gemma 1 and 2) and `Gemma3DecoderBlock`: pre-norm attention and gated-gelu feed
  forward, each optionally post-normed, added to the residual:
    h = norm(x); a = attention(h); [a = norm(a)]; x = x + a
    h = norm(x); f = ffw_linear(gelu_tanh(gating_ffw(h)) * gating_ffw_2(h)); [f = norm(f)]; x = x + f
  Attention is grouped-query without biases, RoPE on query and key (Gemma 3: after an RMS norm of each
  head, `use_query_key_norm`), the query scaled by 1/sqrt(head_dim) (both blocks pass
  `query_head_dim_normalize=True` to their attention whatever their own argument says), logits optionally
  soft-capped, the mask causal AND padding (Gemma 3 `use_bidirectional_attention`: padding of query AND
  key) AND an optional sliding band. On TensorFlow the blocks take the explicit path: Keras' masked
  Softmax, then rows with no key left are zeroed (MaskedRows.ZERO).
  Gemma 1's RoPE ends in a permutation of the head dims applied alike to query and key, which leaves
  q . k unchanged: it is not emitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.activations import ACTIVATIONS
from converter.layers.builder import OpBuilder
from converter.layers.hub_args import damaged
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, NoArgs, parse_fields
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

# CachedGemma3Attention builds its query/key norms with its own default epsilon; the block passes none.
QUERY_KEY_NORM_EPSILON = 1e-6
GEMMA_ROPE_WAVELENGTH = 10_000.0




def _checked_kinds(config: Config, flags: tuple[str, ...], numbers: tuple[str, ...]) -> None:
    """Keras Hub arguments the boundary's table does not know: true/false flags and finite numbers."""
    for key in flags:
        if config.raw.get(key) is not None and not isinstance(config.raw[key], bool):
            raise damaged(config, key, "expected true or false")
    for key in numbers:
        value = config.raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise damaged(config, key, "expected a finite number")


def gemma_norm(b: OpBuilder, x: str, scale: np.ndarray, epsilon: float, key: str) -> str:
    """x * rsqrt(mean(x^2, -1) + epsilon) * (1 + scale), over the last axis; (1 + scale) is computed in
    float32 as Keras computes it, once, as the initializer."""
    one_plus_scale = (np.float32(1.0) + np.asarray(scale, np.float32)).astype(np.float32)
    return rms_norm(b, x, b.weight(f"{key}/one_plus_scale", one_plus_scale), epsilon)


@dataclass(frozen=True)
class GemmaNormSpec(LayerSpec):
    epsilon: float = 1e-6


@LAYERS.register("keras_hub>RMSNormalization")
class GemmaRMSNormalization(LayerHandler[GemmaNormSpec]):
    keras_availability = "file"

    def parse(self, config: Config) -> GemmaNormSpec:
        _checked_kinds(config, (), ("epsilon",))
        return parse_fields(GemmaNormSpec, config)

    def weight_names(self, node: Node) -> list[str]:
        return ["scale"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        last = input_shapes[0][-1] if input_shapes[0] else None
        return {"scale": (last if isinstance(last, int) else None,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if not input_shapes[0] or len(input_shapes[0]) < 2:
            expect_rank(node, input_shapes[0], 2, "(batch, ..., features)")
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [gemma_norm(b, inputs[0], node.weights["scale"], self.spec(node).epsilon, "scale")]


@dataclass(frozen=True)
class GemmaBlockSpec(LayerSpec):
    hidden_dim: int
    intermediate_dim: int
    head_dim: int
    num_query_heads: int
    num_key_value_heads: int
    query_head_dim_normalize: bool = True  # read, but the block's attention always gets True (see above)
    use_post_ffw_norm: bool = False
    use_post_attention_norm: bool = False
    logit_soft_cap: float | None = None
    use_sliding_window_attention: bool = False
    sliding_window_size: int = 4096
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    # Gemma3DecoderBlock's own arguments (GemmaDecoderBlock: fixed at these values).
    use_query_key_norm: bool = False
    gate_dim_reduction: int = 2
    rope_wavelength: float = GEMMA_ROPE_WAVELENGTH
    rope_scaling_factor: float = 1.0
    use_bidirectional_attention: bool = False

    @property
    def gate_dim(self) -> int:
        return self.intermediate_dim // self.gate_dim_reduction

    def keep_band(self, b: OpBuilder, sequence: str) -> str | None:
        """The sliding band and causality over (query i, key j), (1, 1, T, T) bool. TensorFlow's band
        (band_part with min(T, size - 1)) keeps |i - j| <= size - 1, and everything when size < 1; the
        bidirectional band keeps -(size // 2) <= i - j <= size - size // 2 - 1."""
        causal = not self.use_bidirectional_attention
        if not self.use_sliding_window_attention:
            return positions_keep(b, sequence, 1, causal=causal)
        size = self.sliding_window_size
        if causal:
            return positions_keep(b, sequence, 1, causal=True, max_back=size - 1 if size >= 1 else None)
        ahead = size // 2
        return positions_keep(b, sequence, 1, causal=False, max_back=size - ahead - 1, max_ahead=ahead)


_BLOCK_FLAGS = ("query_head_dim_normalize", "use_post_ffw_norm", "use_post_attention_norm",
                "use_sliding_window_attention", "use_query_key_norm", "use_bidirectional_attention")
_BLOCK_NUMBERS = ("logit_soft_cap", "layer_norm_epsilon", "dropout", "rope_wavelength", "rope_scaling_factor")
# Arguments of Gemma3DecoderBlock that GemmaDecoderBlock does not have (it computes as their defaults).
_GEMMA3_ONLY = ("use_query_key_norm", "gate_dim_reduction", "rope_wavelength", "rope_scaling_factor",
                "use_bidirectional_attention")
_FEEDFORWARD = ("ffw_linear", "gating_ffw", "gating_ffw_2")


class GemmaDecoderBlock(LayerHandler[GemmaBlockSpec]):
    """Both Gemma block classes; `gemma3` says which one (its extra arguments read or fixed)."""

    keras_availability = "file"
    argument_kinds = {"hidden_dim": "positive", "intermediate_dim": "positive", "gate_dim_reduction": "positive",
                      "sliding_window_size": "int"}
    required_arguments = ("hidden_dim", "intermediate_dim", "head_dim", "num_query_heads", "num_key_value_heads")

    def __init__(self, gemma3: bool) -> None:
        self.gemma3 = gemma3

    def parse(self, config: Config) -> GemmaBlockSpec:
        _checked_kinds(config, _BLOCK_FLAGS, _BLOCK_NUMBERS)
        fixed = {} if self.gemma3 else {key: getattr(GemmaBlockSpec, key) for key in _GEMMA3_ONLY}
        spec = parse_fields(GemmaBlockSpec, config, **fixed)
        if spec.num_query_heads % spec.num_key_value_heads:
            raise damaged(config, "num_key_value_heads", f"num_query_heads={spec.num_query_heads} is not a "
                                "multiple of it (each key/value head serves a group of query heads)")
        if spec.head_dim % 2:
            raise damaged(config, "head_dim", "rotary position embedding needs an even head_dim")
        if spec.gate_dim < 1:
            raise damaged(config, "intermediate_dim", f"the gate width intermediate_dim // "
                                f"{spec.gate_dim_reduction} is 0")
        return spec

    def check(self, node: Node) -> None:
        extra = sorted(set(node.call.tensor_kwargs) - {"padding_mask"})
        if extra:
            hint = ("kconvert converts Gemma 3 text-only models (vision_encoder=None)" if "vision_mask" in extra
                    else "kconvert converts the block called on (x, padding_mask=...) without a cache")
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called with {extra}",
                                        layer=node.layer_name, hint=hint)
        if len(node.call.positional(len(node.inputs))) != 1:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called on "
                                        f"{len(node.call.positional(len(node.inputs)))} positional tensors",
                                        layer=node.layer_name, hint="Keras Hub calls it as block(x, padding_mask=...)")
        if self.spec(node).use_bidirectional_attention and not node.call.has_tensor("padding_mask"):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has use_bidirectional_attention=true and "
                                        "no padding_mask", layer=node.layer_name,
                                        hint="Keras Hub builds the bidirectional mask from the padding mask; pass one")

    def weight_names(self, node: Node) -> list[str]:
        """Keras' order: the attention's projections (and Gemma 3's key/query norms), then the block's
        other sublayers alphabetically (weights._CHILD_ORDER)."""
        spec = self.spec(node)
        names = ["query", "key", "value", "output"]
        names += ["key_norm", "query_norm"] if spec.use_query_key_norm else []
        names += list(_FEEDFORWARD)
        names += ["post_attention_norm"] if spec.use_post_attention_norm else []
        names += ["post_ffw_norm"] if spec.use_post_ffw_norm else []
        return names + ["pre_attention_norm", "pre_ffw_norm"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        hidden, heads, kv_heads, head_dim = spec.hidden_dim, spec.num_query_heads, spec.num_key_value_heads, \
            spec.head_dim
        shapes: dict[str, tuple[int | None, ...]] = {
            "query": (heads, hidden, head_dim), "key": (kv_heads, hidden, head_dim),
            "value": (kv_heads, hidden, head_dim), "output": (heads, head_dim, hidden),
            "key_norm": (head_dim,), "query_norm": (head_dim,), "gating_ffw": (hidden, spec.gate_dim),
            "gating_ffw_2": (hidden, spec.gate_dim), "ffw_linear": (spec.gate_dim, hidden)}
        for norm in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            shapes[norm] = (hidden,)
        return shapes

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        x = input_shapes[self._x(node)]
        expect_rank(node, x, 3, "(batch, sequence, hidden_dim)")
        if isinstance(x[-1], int) and x[-1] != self.spec(node).hidden_dim:
            raise ShapeError(f"{node.kind} '{node.layer_name}' has hidden_dim={self.spec(node).hidden_dim} but "
                             f"receives {x[-1]} features", layer=node.layer_name,
                             hint="the block adds its output to its input: both must have hidden_dim features")
        if node.call.has_tensor("padding_mask"):
            expect_rank(node, input_shapes[node.call.tensor_positions("padding_mask")[0]], 2,
                        "padding_mask (batch, sequence)")
        return [x]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec, w = self.spec(node), node.weights
        x = inputs[self._x(node)]
        padding = inputs[node.call.tensor_positions("padding_mask")[0]] if node.call.has_tensor("padding_mask") \
            else None
        attention = self._attention(node, b, gemma_norm(b, x, w["pre_attention_norm"], spec.layer_norm_epsilon,
                                                        "pre_attention_norm"), padding)
        if spec.use_post_attention_norm:
            attention = gemma_norm(b, attention, w["post_attention_norm"], spec.layer_norm_epsilon,
                                   "post_attention_norm")
        x = b.op("Add", x, attention)
        h = gemma_norm(b, x, w["pre_ffw_norm"], spec.layer_norm_epsilon, "pre_ffw_norm")
        gate = ACTIVATIONS["gelu"](b, b.op("MatMul", h, b.weight("gating_ffw")), {"approximate": True})
        f = b.op("MatMul", b.op("Mul", gate, b.op("MatMul", h, b.weight("gating_ffw_2"))), b.weight("ffw_linear"))
        if spec.use_post_ffw_norm:
            f = gemma_norm(b, f, w["post_ffw_norm"], spec.layer_norm_epsilon, "post_ffw_norm")
        return [b.op("Add", x, f)]

    def _x(self, node: Node) -> int:
        return node.call.positional(len(node.inputs))[0]

    def _attention(self, node: Node, b: OpBuilder, h: str, padding: str | None) -> str:
        spec, w = self.spec(node), node.weights
        heads, kv_heads, head_dim = spec.num_query_heads, spec.num_key_value_heads, spec.head_dim
        query = self._heads(b, h, w["query"], heads, "query")
        key = self._heads(b, h, w["key"], kv_heads, "key")
        value = self._heads(b, h, w["value"], kv_heads, "value")
        if spec.use_query_key_norm:  # over each head's dims, before RoPE
            query = gemma_norm(b, query, w["query_norm"], QUERY_KEY_NORM_EPSILON, "query_norm")
            key = gemma_norm(b, key, w["key_norm"], QUERY_KEY_NORM_EPSILON, "key_norm")
        inverse_frequencies = rope_inverse_frequencies(head_dim, spec.rope_wavelength, spec.rope_scaling_factor)
        query = rotary(b, query, inverse_frequencies, sequence_axis=2)
        key = repeat_heads(b, rotary(b, key, inverse_frequencies, sequence_axis=2), heads // kv_heads)
        # Keras scales the query (not the logits) before its einsum.
        query = b.op("Mul", query, b.scalar(1.0 / math.sqrt(head_dim), "query_normalization"))
        keep = both(b, _padding_keep(b, padding, spec.use_bidirectional_attention), spec.keep_band(b, h))
        context = attend(b, query, key, repeat_heads(b, value, heads // kv_heads), None, keep, MaskedRows.ZERO,
                         spec.logit_soft_cap)
        output = np.reshape(w["output"], (heads * head_dim, -1))
        return linear(b, merge_heads(b, context, heads, head_dim), output, None, "output")

    def _heads(self, b: OpBuilder, h: str, kernel: np.ndarray, heads: int, key: str) -> str:
        """EinsumDense "btd,ndh->btnh" (kernel (heads, hidden, head_dim)) -> (B, heads, T, head_dim)."""
        flat = np.transpose(kernel, (1, 0, 2))
        return split_heads(b, linear(b, h, flat, None, key), heads, kernel.shape[2])



def _padding_keep(b: OpBuilder, padding: str | None, bidirectional: bool) -> str | None:
    """Keys must be real tokens; with bidirectional attention (Keras: mask * mask^T) queries too."""
    if padding is None:
        return None
    keys = padding_keep(b, padding)
    return both(b, keys, b.unsqueeze(b.op("Cast", padding, to=9), [1, 3])) if bidirectional else keys


# Gemma3MeanPooling's floor on the real-token count (an all-padding row pools to zeros).
MIN_TOKEN_COUNT = 1e-9


@LAYERS.register("keras_hub>Gemma3MeanPooling")
class Gemma3MeanPooling(LayerHandler[NoArgs]):
    """EmbeddingGemma's pooling: sum(x * mask, axis=1) / max(sum(mask, axis=1), 1e-9), (B, T, H) -> (B, H).
    Called as pool(x, padding_mask=m) or pool([x, m])."""

    keras_availability = "file"

    def check(self, node: Node) -> None:
        if len(self._operands(node)) != 2:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called without a padding mask",
                                        layer=node.layer_name, hint="Keras Hub calls it as pool(x, padding_mask=m)")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        x, mask = (input_shapes[i] for i in self._operands(node))
        expect_rank(node, x, 3, "(batch, sequence, features)")
        expect_rank(node, mask, 2, "padding_mask (batch, sequence)")
        return [(x[0], x[2])]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, padding = (inputs[i] for i in self._operands(node))
        mask = b.op("Cast", padding, to=1)
        total = b.reduce("ReduceSum", b.op("Mul", x, b.unsqueeze(mask, [2])), [1], keepdims=False)
        count = b.op("Max", b.reduce("ReduceSum", mask, [1], keepdims=True), b.scalar(MIN_TOKEN_COUNT, "floor"))
        return [b.op("Div", total, count)]

    def _operands(self, node: Node) -> list[int]:
        return node.call.positional(len(node.inputs)) + node.call.tensor_positions("padding_mask")


def _register() -> None:
    LAYERS.add("keras_hub>GemmaDecoderBlock", GemmaDecoderBlock(gemma3=False))
    LAYERS.add("keras_hub>Gemma3DecoderBlock", GemmaDecoderBlock(gemma3=True))


_register()

