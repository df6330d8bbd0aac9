"""GroupQueryAttention (Keras 3's `GroupedQueryAttention` class, exported as `keras.layers.GroupQueryAttention`).

A `.keras` config names it by the export, `GroupQueryAttention`; a legacy `.h5` written by Keras 3 by the
Python class, `GroupedQueryAttention`; both are registered.

Query (B, T, dim) -> (B, T, Hq, D); key/value (B, S, dim) -> (B, S, Hkv, D), each head of key and
value repeated Hq/Hkv times (`ops.repeat` on the head axis: kv head j serves query heads
j*r .. j*r + r - 1); scores = q k^T / sqrt(D) over (T, S) per query head, masked softmax, weighted
values, optional sigmoid gate (a projection of the query) multiplied in, output projection
(Hq, D, dim). Weights are stored query, key, [gate,] value, output (kernel then bias each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError
from converter.ir import Node, Shape
from converter.layers.activation_layers import softmax
from converter.layers.attention import call_flag, config_refusal, given_and_band, refuse
from converter.layers.builder import OpBuilder
from converter.layers.multi_head_attention import MASK_VALUE, call_tensors
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class GroupQueryAttentionSpec(LayerSpec):
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    use_bias: bool = True
    use_gate: bool = False
    dropout: float = 0.0
    sliding_window: int | None = None

    @property
    def projections(self) -> tuple[str, ...]:
        """The projections in the order their weights are stored."""
        return ("query", "key", "gate", "value", "output") if self.use_gate else ("query", "key", "value", "output")


@LAYERS.register("GroupQueryAttention", "GroupedQueryAttention")
class GroupQueryAttention(LayerHandler[GroupQueryAttentionSpec]):
    keras_availability = {
        "GroupQueryAttention": "keras3",
        "GroupedQueryAttention": "file",
    }
    attention_mask_kind = "heads"

    required_arguments = ("head_dim", "num_query_heads", "num_key_value_heads")

    def parse(self, config: Config) -> GroupQueryAttentionSpec:
        spec = parse_fields(GroupQueryAttentionSpec, config)
        heads, kv_heads = spec.num_query_heads, spec.num_key_value_heads
        if kv_heads <= 0 or heads % kv_heads:
            raise config_refusal(config, f"has num_query_heads={heads}, num_key_value_heads={kv_heads}",
                                 "num_query_heads must be a multiple of num_key_value_heads")
        return spec

    def check(self, node: Node) -> None:
        tensors = call_tensors(node)
        if "query" not in tensors or "value" not in tensors:
            refuse(node, "is not called with both query and value tensors", "call it as gqa(query, value)")
        extra = set(node.call.tensor_kwargs) - {"query", "value", "key", "attention_mask"}
        if extra:
            refuse(node, f"is called with {sorted(extra)}", "pass an explicit attention_mask tensor instead")

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        suffixes = ("kernel", "bias") if spec.use_bias else ("kernel",)
        return [f"{p}_{s}" for p in spec.projections for s in suffixes]

    def num_outputs(self, node: Node) -> int:
        return 2 if call_flag(node, "return_attention_scores") else 1

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        tensors = call_tensors(node)
        for name in ("query", "value", "key"):  # the rank error says more than a weight mismatch
            expect_rank(node, input_shapes[tensors[name]], 3, "(batch, sequence, features)")
        dim = input_shapes[tensors["query"]][-1]
        feature = dim if isinstance(dim, int) else None
        spec = self.spec(node)
        heads, kv_heads, head_dim = spec.num_query_heads, spec.num_key_value_heads, spec.head_dim
        shapes: dict[str, tuple[int | None, ...]] = {"output_kernel": (heads, head_dim, feature),
                                                     "output_bias": (feature,)}
        for name, count in (("query", heads), ("gate", heads), ("key", kv_heads), ("value", kv_heads)):
            source = input_shapes[tensors.get(name, tensors["query"] if name == "gate" else tensors["value"])]
            shapes[f"{name}_kernel"] = (source[-1] if isinstance(source[-1], int) else None, count, head_dim)
            shapes[f"{name}_bias"] = (count, head_dim)
        return shapes

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        tensors = call_tensors(node)
        query, value = input_shapes[tensors["query"]], input_shapes[tensors["value"]]
        key = input_shapes[tensors["key"]]
        for shape in (query, value, key):
            expect_rank(node, shape, 3, "(batch, sequence, features)")
        if query[-1] != value[-1] and all(isinstance(d, int) for d in (query[-1], value[-1])):
            raise ShapeError(f"GroupQueryAttention '{node.layer_name}': query and value feature sizes differ "
                             f"({query[-1]} != {value[-1]})", layer=node.layer_name,
                             hint="Keras projects query and value with kernels of one input size")
        shapes: list[Shape] = [query]
        if self.num_outputs(node) == 2:
            shapes.append((query[0], self.spec(node).num_query_heads, query[1], key[1]))
        return shapes

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        tensors = call_tensors(node)
        spec = self.spec(node)
        heads, kv_heads, head_dim = spec.num_query_heads, spec.num_key_value_heads, spec.head_dim
        query = self._project(node, b, inputs[tensors["query"]], "query")
        key = _repeat_heads(b, self._project(node, b, inputs[tensors["key"]], "key"), kv_heads, heads, head_dim)
        value = _repeat_heads(b, self._project(node, b, inputs[tensors["value"]], "value"), kv_heads, heads,
                             head_dim)
        query = b.op("Mul", query, b.scalar(1.0 / math.sqrt(float(head_dim)), "inv_sqrt_head_dim"))
        # (B, T, H, D) x (B, S, H, D) -> (B, H, T, S)
        scores = b.op("MatMul", b.transpose(query, [0, 2, 1, 3]), b.transpose(key, [0, 2, 3, 1]))
        mask = self._mask(node, b, inputs, tensors)
        if mask is not None:
            scores = b.op("Where", mask, scores, b.scalar(MASK_VALUE, "mask_value"))
        weights = softmax(b, scores, [3])
        explicit = self.num_outputs(node) == 2 or spec.dropout > 0.0
        if mask is not None and explicit:
            # The explicit-scores path (returned scores, or dropout configured) uses Keras' Softmax layer,
            # which zeroes masked entries; the fused dot_product_attention path leaves fully masked rows
            # uniform.
            weights = b.op("Where", mask, weights, b.scalar(0.0, "zero"))
        context = b.transpose(b.op("MatMul", weights, b.transpose(value, [0, 2, 1, 3])), [0, 2, 1, 3])
        if "gate_kernel" in node.weights:
            gate = b.op("Sigmoid", self._project(node, b, inputs[tensors["query"]], "gate"))
            context = b.op("Mul", context, gate)
        flat = b.reshape(context, [0, 0, heads * head_dim])
        kernel = node.weights["output_kernel"]
        output = b.op("MatMul", flat, b.weight("output_kernel", np.reshape(kernel, (heads * head_dim, -1))))
        if "output_bias" in node.weights:
            output = b.op("Add", output, b.weight("output_bias"))
        return [output, weights][: self.num_outputs(node)]

    def _project(self, node: Node, b: OpBuilder, x: str, name: str) -> str:
        """einsum('bqm,muh->bquh') + bias as MatMul on the flattened (heads, head_dim) kernel."""
        kernel = node.weights[f"{name}_kernel"]
        dim, heads, head_dim = kernel.shape
        y = b.op("MatMul", x, b.weight(f"{name}_kernel", np.reshape(kernel, (dim, heads * head_dim))))
        y = b.reshape(y, [0, 0, int(heads), int(head_dim)])
        if f"{name}_bias" in node.weights:
            y = b.op("Add", y, b.weight(f"{name}_bias"))
        return y

    def _mask(self, node: Node, b: OpBuilder, inputs: list[str], tensors: dict[str, int]) -> str | None:
        """attention_mask AND causal AND sliding window, as (B|1, 1, T, S) bool."""
        keep = given_and_band(node, b, inputs, tensors, self.spec(node).sliding_window)
        if keep is None:
            return None
        given_rank = len(node.inputs[tensors["attention_mask"]].shape or ()) if "attention_mask" in tensors else 3
        for _ in range(4 - max(3, given_rank)):
            keep = b.unsqueeze(keep, [-3])
        return keep


def _repeat_heads(b: OpBuilder, x: str, kv_heads: int, heads: int, head_dim: int) -> str:
    """ops.repeat(x, heads // kv_heads, axis=2) on (B, S, Hkv, D): each kv head repeated in a row."""
    if kv_heads == heads:
        return x
    tiled = b.op("Expand", b.unsqueeze(x, [3]), b.ints([1, 1, 1, heads // kv_heads, 1], "repeats"))
    return b.reshape(tiled, [0, 0, heads, head_dim])
