"""MultiHeadAttention: einsum projections, scaled dot-product attention over `attention_axes`, output projection.

The equations are built exactly as Keras builds them (`_build_proj_equation`, `_build_attention_equation`),
so custom attention axes and output shapes follow Keras' own index bookkeeping. Weights arrive flattened in
the order query, key, value, output (kernel then bias each); both file layouts store that order.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

from converter.errors import ShapeError
from converter.ir import Node, Shape
from converter.layers.activation_layers import softmax
from converter.layers.attention import call_flag, config_refusal, given_and_band, refuse
from converter.layers.axes import AxisArg, optional_axis_arg
from converter.layers.builder import OpBuilder
from converter.layers.einsum_dense import Equation, project
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields

PROJECTIONS = ("query", "key", "value", "output")
CALL_NAMES = ("query", "value", "key")
MASK_VALUE = -1e9


def proj_equation(free_dims: int, bound_dims: int, output_dims: int) -> str:
    letters = string.ascii_lowercase
    free, bound = letters[:free_dims], letters[free_dims:free_dims + bound_dims]
    out = letters[free_dims + bound_dims:free_dims + bound_dims + output_dims]
    return f"{free}{bound},{bound}{out}->{free}{out}"


def attention_equations(rank: int, axes: tuple[int, ...]) -> tuple[str, str, int]:
    """Keras' (dot_product_equation, combine_equation, scores rank) for projected tensors of `rank`."""
    letters = string.ascii_lowercase
    target = letters[:rank]
    batch_dims = [i for i in range(rank) if i not in axes and i != rank - 1]
    source, offset = "", rank
    for i in range(rank):
        if i in batch_dims or i == rank - 1:
            source += target[i]
        else:
            source += letters[offset]
            offset += 1
    product = "".join([target[i] for i in batch_dims] + [target[i] for i in axes] + [source[i] for i in axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}", len(product)


def call_tensors(node: Node) -> dict[str, int]:
    """query/value/key (and a given attention_mask) -> index into node.inputs; key defaults to value."""
    return node.call.named_tensors(len(node.inputs), CALL_NAMES, also=("attention_mask",))


@dataclass(frozen=True)
class MultiHeadAttentionSpec(LayerSpec):
    num_heads: int
    key_dim: int
    value_dim: int | None = None  # None: key_dim
    dropout: float = 0.0
    use_bias: bool = True
    output_shape: tuple[int, ...] | None = None  # None: the query's feature size
    attention_axes: AxisArg | None = None  # None: every axis between batch and features
    sliding_window: int | None = None
    # Keras 3's Softmax zeroes masked weights outside its fused rank-4 path; Keras 2's does not.
    zero_masked_weights: bool = True

    @property
    def value_size(self) -> int:
        return self.key_dim if self.value_dim is None else self.value_dim


def attention_axes(node: Node, axes: AxisArg | None, query_rank: int) -> tuple[int, ...]:
    rank = query_rank + 1  # projected: (batch, ..., heads, channels)
    if axes is None:
        return tuple(range(1, rank - 2))
    values = [axes] if isinstance(axes, int) else list(axes)
    found = tuple(int(a) if int(a) >= 0 else (rank - 1) + int(a) for a in values)
    if not found or len(set(found)) != len(found) or not all(1 <= a < query_rank - 1 for a in found):
        shown = axes if isinstance(axes, int) else values  # as the config spelled it (a list)
        raise ShapeError(f"MultiHeadAttention '{node.layer_name}' has attention_axes={shown!r}, which does not name "
                         f"the attention axes of its rank-{query_rank} query", layer=node.layer_name,
                         hint=f"attention_axes are axes of the query between 1 and {query_rank - 2} (not the batch "
                              "or the feature axis), each once")
    return found


@LAYERS.register("MultiHeadAttention")
class MultiHeadAttention(LayerHandler[MultiHeadAttentionSpec]):
    keras3_args = ("num_heads key_dim value_dim dropout use_bias output_shape attention_axes "
                   "sliding_window flash_attention kernel_initializer bias_initializer "
                   "kernel_regularizer bias_regularizer kernel_constraint bias_constraint use_gate "
                   "seed")
    attention_mask_kind = "heads"

    required_arguments = ("num_heads", "key_dim")

    def parse(self, config: Config) -> MultiHeadAttentionSpec:
        if config.flag("use_gate", False):
            raise config_refusal(config, "uses use_gate=True", "kconvert does not convert the gated variant")
        return parse_fields(MultiHeadAttentionSpec, config, output_shape=config.int_list("output_shape") or None,
                            attention_axes=optional_axis_arg(config, "attention_axes"),
                            zero_masked_weights=config.ctx.keras3)

    def check(self, node: Node) -> None:
        tensors = call_tensors(node)
        if "query" not in tensors or "value" not in tensors:
            refuse(node, "is not called with both query and value tensors", "call it as mha(query, value)")
        extra = set(node.call.tensor_kwargs) - {*CALL_NAMES, "attention_mask"}
        if extra:
            refuse(node, f"is called with {sorted(extra)}", "pass an explicit attention_mask tensor instead")

    def weight_names(self, node: Node) -> list[str]:
        suffixes = ("kernel", "bias") if self.spec(node).use_bias else ("kernel",)
        return [f"{p}_{s}" for p in PROJECTIONS for s in suffixes]

    def num_outputs(self, node: Node) -> int:
        return 2 if call_flag(node, "return_attention_scores") else 1

    def _dims(self, node: Node) -> tuple[int, int, int]:
        spec = self.spec(node)
        return spec.num_heads, spec.key_dim, spec.value_size

    def _axes(self, node: Node, query_rank: int) -> tuple[int, ...]:
        return attention_axes(node, self.spec(node).attention_axes, query_rank)

    def _out_dims(self, node: Node, query: Shape) -> list[int]:
        shape = self.spec(node).output_shape
        if shape:
            return list(shape)
        return [int(query[-1])] if isinstance(query[-1], int) else [int(node.weights["output_kernel"].shape[-1])]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        tensors = call_tensors(node)
        for name in CALL_NAMES:  # (batch, ..., features): the rank error says more than a weight mismatch
            expect_min_rank(node, input_shapes[tensors[name]], 3)
        if len({len(input_shapes[tensors[name]]) for name in CALL_NAMES}) != 1:
            raise ShapeError(f"MultiHeadAttention '{node.layer_name}' gets query, value and key of different ranks "
                             f"{[tuple(input_shapes[tensors[n]]) for n in CALL_NAMES]}", layer=node.layer_name,
                             hint="Keras projects all three with one equation: give them the same rank")
        self._axes(node, len(input_shapes[tensors["query"]]))
        heads, key_dim, value_dim = self._dims(node)
        feature = {n: input_shapes[tensors[n]][-1] for n in CALL_NAMES}
        dims = {n: d if isinstance(d, int) else None for n, d in feature.items()}
        out = tuple(self._out_dims(node, input_shapes[tensors["query"]]))
        return {"query_kernel": (dims["query"], heads, key_dim), "query_bias": (heads, key_dim),
                "key_kernel": (dims["key"], heads, key_dim), "key_bias": (heads, key_dim),
                "value_kernel": (dims["value"], heads, value_dim), "value_bias": (heads, value_dim),
                "output_kernel": (heads, value_dim, *out), "output_bias": out}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        tensors = call_tensors(node)
        query, key = input_shapes[tensors["query"]], input_shapes[tensors["key"]]
        heads = self.spec(node).num_heads
        shapes: list[Shape] = [(*query[:-1], *self._out_dims(node, query))]
        if self.num_outputs(node) == 2:
            axes = self._axes(node, len(query))
            batch = [query[i] for i in range(len(query) - 1) if i not in axes]
            shapes.append((*batch, heads, *(query[a] for a in axes), *(key[a] for a in axes)))
        return shapes

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        tensors = call_tensors(node)
        q_rank = len(node.inputs[tensors["query"]].shape or ())
        projected = {name: self._project(node, b, inputs[tensors[name]], name) for name in CALL_NAMES}
        axes = self._axes(node, q_rank)
        rank = q_rank + 1
        query = b.op("Mul", projected["query"], b.scalar(1.0 / math.sqrt(self._dims(node)[1]), "inv_sqrt_key_dim"))
        dot_eq, combine_eq, scores_rank = attention_equations(rank, axes)
        fast = rank == 4 and axes == (1,)
        scores = (b.op("MatMul", b.transpose(query, [0, 2, 1, 3]), b.transpose(projected["key"], [0, 2, 3, 1]))
                  if fast else b.op("Einsum", projected["key"], query, equation=dot_eq))
        mask = self._mask(node, b, inputs, tensors, len(axes), scores_rank)
        if mask is not None:
            scores = b.op("Where", mask, scores, b.scalar(MASK_VALUE, "mask_value"))
        weights = softmax(b, scores, list(range(scores_rank - len(axes), scores_rank)))
        if mask is not None and self.spec(node).zero_masked_weights and not self._keras3_fused_path(node, rank):
            weights = b.op("Where", mask, weights, b.scalar(0.0, "zero"))  # Keras' Softmax zeroes masked entries
        if fast:
            context = b.transpose(b.op("MatMul", weights, b.transpose(projected["value"], [0, 2, 1, 3])), [0, 2, 1, 3])
        else:
            context = b.op("Einsum", weights, projected["value"], equation=combine_eq)
        out_dims = self._out_dims(node, node.inputs[tensors["query"]].shape or ())
        out_eq = Equation.parse(proj_equation(q_rank - 1, 2, len(out_dims)))
        output = project(b, context, rank, out_eq, node.weights["output_kernel"], node.weights.get("output_bias"),
                         "output_")
        return [output, weights][: self.num_outputs(node)]

    def _project(self, node: Node, b: OpBuilder, x: str, name: str) -> str:
        rank = len(node.inputs[call_tensors(node)[name]].shape or ())
        eq = Equation.parse(proj_equation(rank - 1, 1, 2))
        return project(b, x, rank, eq, node.weights[f"{name}_kernel"], node.weights.get(f"{name}_bias"), f"{name}_")

    def _keras3_fused_path(self, node: Node, rank: int) -> bool:
        """Keras 3 sends rank-4 attention without dropout or returned scores to dot_product_attention,
        which leaves a fully masked row uniform instead of zero."""
        return rank == 4 and not self.spec(node).dropout and not call_flag(node, "return_attention_scores")

    def _mask(self, node: Node, b: OpBuilder, inputs: list[str], tensors: dict[str, int], n_axes: int,
              scores_rank: int) -> str | None:
        """attention_mask AND causal AND sliding window, expanded to the scores' rank as Keras expands it."""
        keep = given_and_band(node, b, inputs, tensors, self.spec(node).sliding_window)
        if keep is None:
            return None
        given_rank = len(node.inputs[tensors["attention_mask"]].shape or ()) if "attention_mask" in tensors else 0
        mask_rank = max(3, given_rank)
        for _ in range(scores_rank - mask_rank):
            keep = b.unsqueeze(keep, [-n_axes * 2 - 1])
        return keep
