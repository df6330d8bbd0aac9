"""Dot-product attention layers: Attention and AdditiveAttention, plus the helpers MultiHeadAttention shares.

Call conventions: Keras 3 writes `layer([q, v])` as positional refs and `mask=[q_mask, v_mask]` as a
tensor kwarg; Keras 2 writes the same (its kwargs tensors arrive as tensor kwargs too). Flags such as
`use_causal_mask` and `return_attention_scores` are plain call kwargs.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TypeVar

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields

# Keras' padding value for masked scores (both versions subtract 1e9 from a masked score).
MASK_PENALTY = 1e9


def positional(node: Node) -> list[int]:
    """Indices into node.inputs of the positional tensors (a Keras 3 `inputs=` kwarg counts as positional)."""
    return node.call.positional(len(node.inputs))


def call_flag(node: Node, key: str) -> bool:
    return bool(node.call.kwargs.get(key, False))


def refuse(node: Node, what: str, hint: str) -> None:
    raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' {what}", layer=node.layer_name, hint=hint)


def config_refusal(config: Config, what: str, hint: str) -> UnsupportedLayerError:
    """`refuse`'s error, worded the same, for a parse (which has the config, not the node)."""
    return UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' {what}",
                                 layer=config.ctx.layer_name, hint=hint)


def scalar_dim(b: OpBuilder, x: str, axis: int) -> str:
    """Dim `axis` of x as an int64 scalar (for Range)."""
    return b.op("Gather", b.op("Shape", x), b.const(axis, "axis", "int64"), axis=0)


def band_mask(b: OpBuilder, query: str, value: str, causal: bool, window: int | None, axis: int = 1) -> str | None:
    """(1, T, S) bool over dims `axis` of query and value: causal keeps j <= i; a sliding window keeps
    |i - j| < window; None if neither."""
    if not causal and window is None:
        return None
    zero, one = b.const(0, "zero", "int64"), b.const(1, "one", "int64")
    rows = b.unsqueeze(b.op("Range", zero, scalar_dim(b, query, axis), one), [1])
    cols = b.unsqueeze(b.op("Range", zero, scalar_dim(b, value, axis), one), [0])
    causal_mask = b.op("Not", b.op("Less", rows, cols)) if causal else None
    near = None
    if window is not None:
        near = b.op("Less", b.op("Abs", b.op("Sub", rows, cols)), b.const(window, "window", "int64"))
    mask = both(b, causal_mask, near)
    return None if mask is None else b.unsqueeze(mask, [0])


def both(b: OpBuilder, first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first if second is None else second
    return b.op("And", first, second)


def as_bool(b: OpBuilder, x: str) -> str:
    return b.op("Cast", x, to=9)


def given_and_band(node: Node, b: OpBuilder, inputs: list[str], tensors: dict[str, int],
                   window: int | None) -> str | None:
    """A head-attention call's `attention_mask` AND its causal / sliding-window band (None: no mask)."""
    keep = band_mask(b, inputs[tensors["query"]], inputs[tensors["value"]], call_flag(node, "use_causal_mask"),
                     window)
    if "attention_mask" in tensors:
        given = as_bool(b, inputs[tensors["attention_mask"]])
        keep = given if keep is None else both(b, given, keep)
    return keep


def attended_shapes(node: Node, input_shapes: list[Shape]) -> tuple[Shape, Shape, Shape]:
    """(query, value, key) shapes, each of rank 2 at least (the shape rule reads their last two axes)."""
    at = positional(node)
    query, value = input_shapes[at[0]], input_shapes[at[1]]
    key = input_shapes[at[2]] if len(at) > 2 else value
    for shape in (query, value, key):
        expect_min_rank(node, shape, 2)
    return query, value, key


@dataclass(frozen=True)
class DotAttentionSpec(LayerSpec):
    causal: bool = False  # Keras 2's constructor flag; Keras 3 takes use_causal_mask at the call


@dataclass(frozen=True)
class AttentionSpec(DotAttentionSpec):
    use_scale: bool = False
    score_mode: str = "dot"


@dataclass(frozen=True)
class AdditiveAttentionSpec(DotAttentionSpec):
    use_scale: bool = True


D = TypeVar("D", bound=DotAttentionSpec)


class DotAttentionBase(LayerHandler[D]):
    """Shared shape rule and masking of Attention and AdditiveAttention."""

    attention_mask_kind = "dot"

    def check(self, node: Node) -> None:
        count = len(positional(node))
        if count not in (2, 3):
            refuse(node, f"is called on {count} tensors", "call it on [query, value] or [query, value, key]")
        masks = node.call.tensor_kwargs.get("mask")
        if masks is not None and len(masks) < 2:
            refuse(node, "gets a mask list with a None entry", "pass both masks, [query_mask, value_mask]")
        extra = set(node.call.tensor_kwargs) - {"mask", "inputs"}
        if extra:
            refuse(node, f"is called with tensor arguments {sorted(extra)}", "only `mask` is understood")

    def num_outputs(self, node: Node) -> int:
        return 2 if call_flag(node, "return_attention_scores") else 1

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        query, value, key = attended_shapes(node, input_shapes)
        return [(*query[:-1], value[-1]), (*query[:-1], key[-2])][: self.num_outputs(node)]

    @abstractmethod
    def scores(self, node: Node, b: OpBuilder, query: str, key: str, rank: int) -> str:
        """Raw scores, shape (..., Tq, Tv)."""

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        at = positional(node)
        query, value = inputs[at[0]], inputs[at[1]]
        key = inputs[at[2]] if len(at) > 2 else value
        rank = len(node.inputs[at[0]].shape or ())
        scores = self.scores(node, b, query, key, rank)
        masks = node.call.tensor_kwargs.get("mask")
        causal = call_flag(node, "use_causal_mask") or self.spec(node).causal
        keep = band_mask(b, query, key, causal, None, rank - 2)
        if masks is not None:
            keep = both(b, b.unsqueeze(as_bool(b, inputs[masks[1]]), [-2]), keep)
        if keep is not None:
            scores = b.op("Where", keep, scores, b.op("Sub", scores, b.scalar(MASK_PENALTY, "mask_penalty")))
        weights = b.op("Softmax", scores, axis=-1)
        out = b.op("MatMul", weights, value)
        if masks is not None:
            out = b.op("Where", b.unsqueeze(as_bool(b, inputs[masks[0]]), [-1]), out, b.scalar(0.0, "zero"))
        return [out, weights][: self.num_outputs(node)]


def swap_last(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


@LAYERS.register("Attention")
class Attention(DotAttentionBase[AttentionSpec]):
    """Luong attention: scores = q . k (optionally scaled), or concat: w * sum(tanh(scale * (q + k)))."""

    keras3_args = "use_scale score_mode dropout seed"
    keras_list_input = True

    def parse(self, config: Config) -> AttentionSpec:
        spec = parse_fields(AttentionSpec, config)
        if spec.score_mode not in ("dot", "concat"):
            raise config_refusal(config, f"has score_mode={spec.score_mode!r}", "Keras knows only 'dot' and 'concat'")
        return spec

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = ["scale"] if spec.use_scale else []
        return names + (["concat_score_weight"] if spec.score_mode == "concat" else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        return {"scale": (), "concat_score_weight": ()}

    def scores(self, node: Node, b: OpBuilder, query: str, key: str, rank: int) -> str:
        if self.spec(node).score_mode == "dot":
            scores = b.op("MatMul", query, b.transpose(key, swap_last(rank)))
            return b.op("Mul", scores, b.weight("scale")) if "scale" in node.weights else scores
        summed = b.op("Add", b.unsqueeze(query, [-2]), b.unsqueeze(key, [-3]))
        if "scale" in node.weights:
            summed = b.op("Mul", summed, b.weight("scale"))
        total = b.reduce("ReduceSum", b.op("Tanh", summed), [rank], keepdims=False)
        return b.op("Mul", total, b.weight("concat_score_weight"))


@LAYERS.register("AdditiveAttention")
class AdditiveAttention(DotAttentionBase[AdditiveAttentionSpec]):
    """Bahdanau attention: scores = sum(scale * tanh(q + k)) over features; scale has shape (dim,)."""

    keras3_args = "use_scale dropout seed"
    keras_list_input = True

    def parse(self, config: Config) -> AdditiveAttentionSpec:
        return parse_fields(AdditiveAttentionSpec, config)

    def weight_names(self, node: Node) -> list[str]:
        return ["scale"] if self.spec(node).use_scale else []

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        dim = attended_shapes(node, input_shapes)[0][-1]
        return {"scale": (dim if isinstance(dim, int) else None,)}

    def scores(self, node: Node, b: OpBuilder, query: str, key: str, rank: int) -> str:
        summed = b.op("Tanh", b.op("Add", b.unsqueeze(query, [-2]), b.unsqueeze(key, [-3])))
        if "scale" in node.weights:
            summed = b.op("Mul", summed, b.weight("scale"))
        return b.reduce("ReduceSum", summed, [rank], keepdims=False)
