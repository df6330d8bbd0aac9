"""Keras Hub's text layers: PositionEmbedding, TokenAndPositionEmbedding, TransformerEncoder, TransformerDecoder.

They serve BERT, DistilBERT, RoBERTa and GPT-2 (converter/keras/hub/text.py) and users' own Functional models
built from `keras_hub.layers` (keras_hub/src/layers/modeling/*.py, version 0.32.0):
- PositionEmbedding(x): the first T rows of a learned (sequence_length, dim) table, broadcast to x's shape;
- TokenAndPositionEmbedding(ids): token rows (a ReversibleEmbedding) + position rows;
- TransformerEncoder / TransformerDecoder (self-attention only): post-LN (`normalize_first=False`,
  x = LN(x + MHA(x)); x = LN(x + FFN(x))) or pre-LN (x = x + MHA(LN(x)); x = x + FFN(LN(x))), where
  FFN = Dense(dim) . activation . Dense(intermediate_dim). The encoder masks padded keys; the decoder also
  masks future keys (`use_causal_mask`).
Attention is emitted heads-first through transformer_ops (the query's 1/sqrt(head_dim) folded into its
projection) and each LayerNormalization as the ONNX op, patterns onnxruntime fuses.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import FormatError, ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers import transformer_ops
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.attention import positional, refuse
from converter.layers.builder import OpBuilder
from converter.layers.hub_args import damaged
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank, expect_rank
from converter.layers.spec import Config, LayerSpec
from converter.layers.transformer_ops import MaskedRows, attend, linear, merge_heads, positions_keep, split_heads

# Arrays of one block, in the order a `.keras` file stores them (converter/keras/weights.py collect_vars:
# children alphabetically by attribute, the attention's projections in _CHILD_ORDER).
BLOCK_WEIGHTS = (
    "ffn_in/kernel", "ffn_in/bias", "ffn_norm/gamma", "ffn_norm/beta", "ffn_out/kernel", "ffn_out/bias",
    "query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias",
    "output/kernel", "output/bias", "attention_norm/gamma", "attention_norm/beta",
)
INT64 = 7
INT32 = 6
BOOL = 9




def _positive(config: Config, key: str, default: int | None = None) -> int:
    """A size argument Keras Hub requires (the boundary does not know these classes' own arguments)."""
    value = config.value(key, default)
    if value is None:
        raise FormatError(f"{config.ctx.kind} '{config.ctx.layer_name}' has no {key}", layer=config.ctx.layer_name,
                          hint=f"Keras Hub's {config.ctx.kind} requires {key}; the config is incomplete")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise damaged(config, key, "expected a positive integer")
    return value


def _number(config: Config, key: str, default: float) -> float:
    value = config.value(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise damaged(config, key, "expected a finite number >= 0")
    return float(value)


def _flag(config: Config, key: str, default: bool) -> bool:
    value = config.value(key, default)
    if not isinstance(value, bool):
        raise damaged(config, key, "expected true or false")
    return value


def _feature_dim(node: Node, shape: Shape) -> int:
    dim = shape[-1]
    if not isinstance(dim, int):
        raise ShapeError(f"{node.kind} '{node.layer_name}' needs a known feature size, got {shape}",
                         layer=node.layer_name, hint="give the model's input a static last dimension")
    return dim


def _no_other_tensors(node: Node, allowed: set[str]) -> None:
    extra = set(node.call.tensor_kwargs) - allowed
    if extra:
        refuse(node, f"is called with {sorted(extra)}", f"kconvert converts calls with {sorted(allowed)} only")


def _start_index(node: Node) -> int:
    """A constant `start_index` call argument (a tensor one is refused by `_no_other_tensors`)."""
    start = node.call.kwargs.get("start_index", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        refuse(node, f"is called with start_index={start!r}", "call it with a constant start_index >= 0")
    return int(start)


def position_rows(b: OpBuilder, table: str, sequence: str, axis: int, start: int) -> str:
    """Rows start .. start + T of `table`, T being dim `axis` of `sequence` (Keras fails past the table's
    end; onnxruntime then fails to broadcast the shorter slice)."""
    length = b.op("Gather", b.op("Shape", sequence), b.ints([axis], "sequence_axis"), axis=0)
    end = b.op("Add", length, b.ints([start], "start"))
    return b.op("Slice", table, b.ints([start], "start"), end, b.ints([0], "rows"))


# -- PositionEmbedding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionEmbeddingSpec(LayerSpec):
    sequence_length: int


@LAYERS.register("keras_hub>PositionEmbedding")
class PositionEmbedding(LayerHandler[PositionEmbeddingSpec]):
    keras_availability = "file"
    required_arguments = ("sequence_length",)

    def parse(self, config: Config) -> PositionEmbeddingSpec:
        return PositionEmbeddingSpec(sequence_length=_positive(config, "sequence_length"))

    def check(self, node: Node) -> None:
        _no_other_tensors(node, set())
        _start_index(node)

    def weight_names(self, node: Node) -> list[str]:
        return ["embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_min_rank(node, input_shapes[0], 3)
        return {"embeddings": (self.spec(node).sequence_length, _feature_dim(node, input_shapes[0]))}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        rank = len(node.inputs[0].shape or ())
        rows = position_rows(b, b.weight("embeddings"), x, rank - 2, _start_index(node))
        return [b.op("Expand", rows, b.op("Shape", x))]


# -- TokenAndPositionEmbedding ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenAndPositionSpec(LayerSpec):
    vocabulary_size: int
    sequence_length: int
    embedding_dim: int
    tie_weights: bool = True


@LAYERS.register("keras_hub>TokenAndPositionEmbedding")
class TokenAndPositionEmbedding(LayerHandler[TokenAndPositionSpec]):
    keras_availability = "file"
    takes_token_ids = True
    required_arguments = ("vocabulary_size", "sequence_length", "embedding_dim")

    def parse(self, config: Config) -> TokenAndPositionSpec:
        if _flag(config, "mask_zero", False):
            raise UnsupportedLayerError(
                f"TokenAndPositionEmbedding '{config.ctx.layer_name}' has mask_zero=True, whose implicit mask "
                "kconvert does not carry into Keras Hub blocks", layer=config.ctx.layer_name,
                hint="build it with mask_zero=False and pass padding_mask to the transformer blocks explicitly")
        return TokenAndPositionSpec(vocabulary_size=_positive(config, "vocabulary_size"),
                                    sequence_length=_positive(config, "sequence_length"),
                                    embedding_dim=_positive(config, "embedding_dim"),
                                    tie_weights=_flag(config, "tie_weights", True))

    def check(self, node: Node) -> None:
        _no_other_tensors(node, set())
        _start_index(node)

    def weight_names(self, node: Node) -> list[str]:
        token = ["token_embeddings"] if self.spec(node).tie_weights else ["token_embeddings", "reverse_embeddings"]
        return ["position_embeddings", *token]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        return {"position_embeddings": (spec.sequence_length, spec.embedding_dim),
                "token_embeddings": (spec.vocabulary_size, spec.embedding_dim),
                "reverse_embeddings": (spec.embedding_dim, spec.vocabulary_size)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_min_rank(node, input_shapes[0], 2)
        return [(*input_shapes[0], self.spec(node).embedding_dim)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ids = inputs[0]
        if node.inputs[0].dtype not in ("int32", "int64"):
            ids = b.op("Cast", ids, to=INT64)  # Keras' Embedding casts ids to int32
        tokens = b.op("Gather", b.weight("token_embeddings"), ids, axis=0)
        rank = len(node.inputs[0].shape or ())
        rows = position_rows(b, b.weight("position_embeddings"), ids, rank - 1, _start_index(node))
        return [b.op("Add", tokens, rows)]


# -- TransformerEncoder / TransformerDecoder --------------------------------------------------------------
@dataclass(frozen=True)
class TransformerBlockSpec(LayerSpec):
    intermediate_dim: int
    num_heads: int
    dropout: float = 0.0
    activation: str = "relu"
    layer_norm_epsilon: float = 1e-5
    normalize_first: bool = False


def parse_block(config: Config) -> TransformerBlockSpec:
    dropout = _number(config, "dropout", 0.0)
    return TransformerBlockSpec(intermediate_dim=_positive(config, "intermediate_dim"),
                                num_heads=_positive(config, "num_heads"), dropout=dropout,
                                activation=parse_activation(config) if config.has("activation") else "relu",
                                layer_norm_epsilon=_number(config, "layer_norm_epsilon", 1e-5),
                                normalize_first=_flag(config, "normalize_first", False))


class TransformerBlock(LayerHandler[TransformerBlockSpec]):
    """What the encoder and the decoder share: weights, shapes, the block's maths; each says its mask."""

    keras_availability = "file"
    required_arguments = ("intermediate_dim", "num_heads")
    # The call's tensor keyword arguments this block converts.
    mask_arguments: frozenset[str] = frozenset()
    # Keras Hub's blocks read an implicit mask (Embedding mask_zero) as their padding mask when none is
    # given; kconvert does not carry it there, so such a model is refused rather than converted wrongly.
    masked_merge_refused_in_keras3 = True

    def parse(self, config: Config) -> TransformerBlockSpec:
        return parse_block(config)

    def check(self, node: Node) -> None:
        if len(positional(node)) != 1:
            refuse(node, "is called with more than one positional tensor", "call it on one sequence")
        _no_other_tensors(node, set(self.mask_arguments))

    def weight_names(self, node: Node) -> list[str]:
        return list(BLOCK_WEIGHTS)

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        dim, heads, head_dim = self._sizes(node, input_shapes[positional(node)[0]])
        inner = self.spec(node).intermediate_dim
        shapes: dict[str, tuple[int | None, ...]] = {
            "ffn_in/kernel": (dim, inner), "ffn_in/bias": (inner,), "ffn_out/kernel": (inner, dim),
            "ffn_out/bias": (dim,), "output/kernel": (heads, head_dim, dim), "output/bias": (dim,)}
        for norm in ("ffn_norm", "attention_norm"):
            shapes[f"{norm}/gamma"] = shapes[f"{norm}/beta"] = (dim,)
        for projection in ("query", "key", "value"):
            shapes[f"{projection}/kernel"] = (dim, heads, head_dim)
            shapes[f"{projection}/bias"] = (heads, head_dim)
        return shapes

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[positional(node)[0]]
        self._sizes(node, shape)
        return [shape]

    def _sizes(self, node: Node, shape: Shape) -> tuple[int, int, int]:
        """(dim, heads, head_dim); Keras Hub refuses a feature size the heads do not divide."""
        expect_rank(node, shape, 3, "(batch, sequence, features)")
        dim, heads = _feature_dim(node, shape), self.spec(node).num_heads
        if dim % heads:
            raise ShapeError(f"{node.kind} '{node.layer_name}': num_heads={heads} does not divide the feature "
                             f"size {dim}", layer=node.layer_name,
                             hint="Keras Hub requires the hidden size to be a multiple of num_heads")
        return dim, heads, dim // heads

    @abstractmethod
    def keep_mask(self, node: Node, b: OpBuilder, inputs: list[str], x: str) -> str | None:
        """The (B|1, 1, T|1, S) bool mask of the block's self-attention, None when nothing is masked."""

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[positional(node)[0]]
        spec = self.spec(node)
        keep = self.keep_mask(node, b, inputs, x)
        attended = self._residual(node, b, x, "attention_norm", lambda y: self._attention(node, b, y, keep))
        return [self._residual(node, b, attended, "ffn_norm", lambda y: self._feedforward(b, y, spec))]

    def _residual(self, node: Node, b: OpBuilder, x: str, norm: str, sublayer: Any) -> str:
        """Pre-LN: x + f(LN(x)); post-LN: LN(x + f(x))."""
        eps = self.spec(node).layer_norm_epsilon
        if self.spec(node).normalize_first:
            return b.op("Add", sublayer(layer_norm(b, x, norm, eps)), x)
        return layer_norm(b, b.op("Add", sublayer(x), x), norm, eps)

    def _feedforward(self, b: OpBuilder, x: str, spec: TransformerBlockSpec) -> str:
        hidden = linear(b, x, _array(b, "ffn_in/kernel"), _array(b, "ffn_in/bias"), "ffn_in")
        hidden = apply_activation(b, hidden, spec.activation)
        return linear(b, hidden, _array(b, "ffn_out/kernel"), _array(b, "ffn_out/bias"), "ffn_out")

    def _attention(self, node: Node, b: OpBuilder, x: str, keep: str | None) -> str:
        """Keras' MultiHeadAttention: heads-first scaled dot product; the masked-row rule follows dropout."""
        heads, head_dim = self.spec(node).num_heads, int(_array(b, "query/kernel").shape[2])
        scale = np.float32(1.0 / math.sqrt(head_dim))  # Keras scales the projected query
        query = linear(b, x, _array(b, "query/kernel") * scale, _array(b, "query/bias") * scale, "query")
        key = linear(b, x, _array(b, "key/kernel"), _array(b, "key/bias"), "key")
        value = linear(b, x, _array(b, "value/kernel"), _array(b, "value/bias"), "value")
        rows = MaskedRows.ZERO if self.spec(node).dropout > 0 else MaskedRows.UNIFORM
        context = attend(b, split_heads(b, query, heads, head_dim), split_heads(b, key, heads, head_dim),
                         split_heads(b, value, heads, head_dim), None, keep, rows)
        merged = merge_heads(b, context, heads, head_dim)
        kernel = _array(b, "output/kernel")  # (heads, head_dim, dim)
        return linear(b, merged, kernel.reshape(heads * head_dim, -1), _array(b, "output/bias"), "output")


def _array(b: OpBuilder, key: str) -> np.ndarray:
    assert b.node is not None
    return np.asarray(b.node.weights[key], dtype=np.float32)


def layer_norm(b: OpBuilder, x: str, key: str, eps: float) -> str:
    """The block's LayerNormalization `key` (its gamma and beta weights) over the last axis."""
    return transformer_ops.layer_norm(b, x, b.weight(f"{key}/gamma"), b.weight(f"{key}/beta"), eps)


def keep_of(b: OpBuilder, mask: str) -> str:
    """A Keras Hub mask as bool: merge_padding_and_attention_mask casts it to int32 first (0.5 -> 0)."""
    return b.op("Cast", b.op("Cast", mask, to=INT32), to=BOOL)


def given_masks(node: Node, b: OpBuilder, inputs: list[str], padding: str, attention: str) -> str | None:
    """The padding mask (B, S) over keys AND the attention mask (B, T, S), as (B, 1, T|1, S) bool."""
    keep: str | None = None
    if node.call.has_tensor(padding):
        keep = b.unsqueeze(keep_of(b, inputs[node.call.tensor_positions(padding)[0]]), [1, 2])
    if node.call.has_tensor(attention):
        given = b.unsqueeze(keep_of(b, inputs[node.call.tensor_positions(attention)[0]]), [1])
        keep = given if keep is None else b.op("And", keep, given)
    return keep


@LAYERS.register("keras_hub>TransformerEncoder")
class TransformerEncoder(TransformerBlock):
    mask_arguments = frozenset({"padding_mask", "attention_mask"})

    def check(self, node: Node) -> None:
        super().check(node)
        if node.call.kwargs.get("return_attention_scores"):
            refuse(node, "is called with return_attention_scores=True", "call it without attention scores")

    def keep_mask(self, node: Node, b: OpBuilder, inputs: list[str], x: str) -> str | None:
        return given_masks(node, b, inputs, "padding_mask", "attention_mask")


@LAYERS.register("keras_hub>TransformerDecoder")
class TransformerDecoder(TransformerBlock):
    mask_arguments = frozenset({"decoder_padding_mask", "decoder_attention_mask"})

    def parse(self, config: Config) -> TransformerBlockSpec:
        if config.value("encoder_sequence_shape") is not None:
            raise UnsupportedLayerError(
                f"TransformerDecoder '{config.ctx.layer_name}' has cross-attention (encoder_sequence_shape="
                f"{config.value('encoder_sequence_shape')!r}), which kconvert does not convert",
                layer=config.ctx.layer_name, hint="kconvert converts decoder-only TransformerDecoder blocks "
                                                  "(called without encoder_sequence), as in GPT-2")
        return parse_block(config)

    def check(self, node: Node) -> None:
        if len(positional(node)) > 1 or node.call.has_tensor("encoder_sequence"):
            refuse(node, "is called with an encoder_sequence (cross-attention)",
                   "kconvert converts decoder-only TransformerDecoder calls, as in GPT-2")
        super().check(node)

    def keep_mask(self, node: Node, b: OpBuilder, inputs: list[str], x: str) -> str | None:
        given = given_masks(node, b, inputs, "decoder_padding_mask", "decoder_attention_mask")
        causal = positions_keep(b, x, 1) if node.call.kwargs.get("use_causal_mask", True) else None
        if given is None or causal is None:
            return given if causal is None else causal
        return b.op("And", given, causal)
