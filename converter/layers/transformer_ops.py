"""The emission transformer blocks share (Keras Hub's encoder and decoder blocks, ViT, Gemma, Llama, Mistral).

Attention is emitted heads-first, (batch, heads, time, head_dim), as MatMul -> Softmax -> MatMul with the
projections as plain MatMul + Add: the pattern onnxruntime's CPU and CUDA kernels run fastest and its graph
fusions (MatMul+Add -> Gemm/FusedMatMul, LayerNormalization + Add -> SkipLayerNormalization, Gelu) match.

Masks are bool "keep" tensors broadcastable to the scores (batch, heads, query, key). How a fully masked
query row ends differs in Keras, and each block says which it follows (`MaskedRows`):
- `ZERO`: keras.layers.Softmax with a mask (MultiHeadAttention with dropout > 0, and every Gemma / Llama /
  Mistral block on the TensorFlow backend): -1e9 added where masked, softmax, then the masked weights set
  to zero, so such a row attends to nothing;
- `UNIFORM`: ops.dot_product_attention (MultiHeadAttention with dropout == 0): the row's logits all become
  the same large negative number, so it averages every value.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from converter.layers.attention import scalar_dim
from converter.layers.builder import OpBuilder

MASK_VALUE = -1e9  # keras.layers.Softmax: _large_negative_number(float32)
# TensorFlow's dot_product_attention (keras/src/backend/tensorflow/nn.py `_apply_masks`).
UNIFORM_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


class MaskedRows(enum.Enum):
    ZERO = "zero"
    UNIFORM = "uniform"


def linear(b: OpBuilder, x: str, kernel: np.ndarray, bias: np.ndarray | None, key: str) -> str:
    """x (..., dim) @ kernel flattened to (dim, out) [+ bias flattened]; `key` names the initializers."""
    weight = b.weight(f"{key}/kernel", kernel.reshape(kernel.shape[0], -1))
    y = b.op("MatMul", x, weight)
    return y if bias is None else b.op("Add", y, b.weight(f"{key}/bias", bias.reshape(-1)))


def split_heads(b: OpBuilder, x: str, heads: int, head_dim: int) -> str:
    """(B, T, heads * head_dim) -> (B, heads, T, head_dim)."""
    return b.transpose(b.reshape(x, [0, 0, heads, head_dim]), [0, 2, 1, 3])


def merge_heads(b: OpBuilder, x: str, heads: int, head_dim: int) -> str:
    """(B, heads, T, head_dim) -> (B, T, heads * head_dim)."""
    return b.reshape(b.transpose(x, [0, 2, 1, 3]), [0, 0, heads * head_dim])


def repeat_heads(b: OpBuilder, x: str, groups: int) -> str:
    """(B, kv, S, D) -> (B, kv * groups, S, D), key/value head j serving query heads j*groups ... as
    ops.repeat(axis=heads) does (grouped-query attention)."""
    if groups == 1:
        return x
    shape = b.op("Shape", x)
    expanded = b.op("Concat", b.slice(shape, [0], [2], [0]), b.ints([groups], "groups"), b.slice(shape, [2], [4], [0]),
                    axis=0)
    tiled = b.op("Expand", b.unsqueeze(x, [2]), expanded)
    merged = b.op("Concat", b.ints([0], "keep"), b.ints([-1], "heads"), b.slice(shape, [2], [4], [0]), axis=0)
    return b.op("Reshape", tiled, merged)


def attend(b: OpBuilder, query: str, key: str, value: str, scale: float | None, keep: str | None = None,
           masked_rows: MaskedRows = MaskedRows.ZERO, soft_cap: float | None = None) -> str:
    """softmax(q k^T * scale [soft-capped], masked) v over heads-first tensors (key and value already
    repeated to the query's heads). `scale` None: the query is already scaled."""
    scores = b.op("MatMul", query, b.transpose(key, [0, 1, 3, 2]))
    if scale is not None:
        scores = b.op("Mul", scores, b.scalar(scale, "scale"))
    if soft_cap is not None:
        cap = b.scalar(soft_cap, "soft_cap")
        scores = b.op("Mul", b.op("Tanh", b.op("Div", scores, cap)), cap)
    if keep is None:
        return b.op("MatMul", b.op("Softmax", scores, axis=-1), value)
    if masked_rows is MaskedRows.UNIFORM:
        scores = b.op("Where", keep, scores, b.scalar(UNIFORM_MASK_VALUE, "masked"))
        return b.op("MatMul", b.op("Softmax", scores, axis=-1), value)
    weights = b.op("Softmax", b.op("Where", keep, scores, b.scalar(MASK_VALUE, "masked")), axis=-1)
    weights = b.op("Where", keep, weights, b.scalar(0.0, "zero"))
    return b.op("MatMul", weights, value)


def padding_keep(b: OpBuilder, padding_mask: str) -> str:
    """A (B, S) padding mask (nonzero = a real token) -> (B, 1, 1, S) bool over the keys."""
    return b.unsqueeze(b.op("Cast", padding_mask, to=9), [1, 2])


def positions_keep(b: OpBuilder, sequence: str, axis: int = 1, causal: bool = True, max_back: int | None = None,
                   max_ahead: int | None = None) -> str | None:
    """(1, 1, T, T) bool over query i and key j of a self-attention whose length is dim `axis` of
    `sequence`: causal keeps j <= i; `max_back` keeps i - j <= max_back; `max_ahead` keeps
    j - i <= max_ahead (sliding windows). None when nothing is masked."""
    if not causal and max_back is None and max_ahead is None:
        return None
    zero, one = b.const(0, "zero", "int64"), b.const(1, "one", "int64")
    index = b.op("Range", zero, scalar_dim(b, sequence, axis), one)
    rows, cols = b.unsqueeze(index, [1]), b.unsqueeze(index, [0])
    ahead = b.op("Sub", cols, rows)  # j - i
    keep: str | None = None
    for limit, distance in ((0 if causal else max_ahead, ahead), (max_back, b.op("Neg", ahead))):
        if limit is not None:
            within = b.op("Not", b.op("Greater", distance, b.const(limit, "limit", "int64")))
            keep = within if keep is None else b.op("And", keep, within)
    return None if keep is None else b.unsqueeze(keep, [0, 1])


def both(b: OpBuilder, first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first if second is None else second
    return b.op("And", first, second)


def rope_inverse_frequencies(head_dim: int, max_wavelength: float, scaling_factor: float = 1.0) -> np.ndarray:
    """keras_hub RotaryEmbedding (rope_type "linear"): 1 / max_wavelength ** (2i / head_dim), divided by
    the scaling factor; computed in float32, as Keras computes it."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inverse = np.float32(1.0) / np.power(np.float32(max_wavelength), exponents, dtype=np.float32)
    scaled: np.ndarray = (inverse / np.float32(scaling_factor)).astype(np.float32)
    return scaled


def rotary(b: OpBuilder, x: str, inverse_frequencies: np.ndarray, sequence_axis: int) -> str:
    """Rotary position embedding of x (..., T, ..., D) at positions 0..T-1 along `sequence_axis`, halves
    rotated (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) as keras_hub's RotaryEmbedding does (not the
    interleaved pairing). x's rank is 4; the angle table is (T, D) placed on (sequence_axis, -1)."""
    half = int(inverse_frequencies.shape[0])
    zero, one = b.const(0.0, "zero"), b.const(1.0, "one")
    length = b.op("Cast", scalar_dim(b, x, sequence_axis), to=1)
    positions = b.unsqueeze(b.op("Range", zero, length, one), [1])  # (T, 1)
    frequencies = b.op("Mul", positions, b.const(inverse_frequencies.reshape(1, half), "inverse_frequencies"))
    angles = b.op("Concat", frequencies, frequencies, axis=-1)  # (T, D)
    if sequence_axis == 1:  # (B, T, H, D): the table on axes 1 and 3
        angles = b.unsqueeze(angles, [1])
    cos, sin = b.op("Cos", angles), b.op("Sin", angles)
    first, second = b.split(x, [half, half], axis=-1)
    rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
    return b.op("Add", b.op("Mul", x, cos), b.op("Mul", rotated, sin))


def layer_norm(b: OpBuilder, x: str, gamma: str, beta: str, epsilon: float) -> str:
    """keras.layers.LayerNormalization over the last axis (gamma, beta: initializer names): ONNX's op from
    opset 17 (which onnxruntime fuses with the residual Add), else its maths."""
    if b.opset >= 17:
        return b.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=epsilon)
    mean = b.reduce("ReduceMean", x, [-1], keepdims=True)
    centred = b.op("Sub", x, mean)
    variance = b.reduce("ReduceMean", b.op("Mul", centred, centred), [-1], keepdims=True)
    normal = b.op("Div", centred, b.op("Sqrt", b.op("Add", variance, b.scalar(epsilon, "epsilon"))))
    return b.op("Add", b.op("Mul", normal, gamma), beta)


def rms_norm(b: OpBuilder, x: str, scale: str, epsilon: float) -> str:
    """x * rsqrt(mean(x^2, -1) + epsilon) * scale (an initializer name), emitted as Pow -> ReduceMean -> Add
    -> Sqrt -> Div -> Mul, the pattern onnxruntime fuses into SimplifiedLayerNormalization."""
    mean_square = b.reduce("ReduceMean", b.op("Pow", x, b.scalar(2.0, "two")), [-1], keepdims=True)
    root = b.op("Sqrt", b.op("Add", mean_square, b.scalar(epsilon, "epsilon")))
    return b.op("Mul", b.op("Div", x, root), scale)


def inverse_sqrt(size: int) -> float:
    return 1.0 / math.sqrt(size)
