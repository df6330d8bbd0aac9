"""ReversibleEmbedding (Keras 3): an Embedding that can also be called with `reverse=True`.

Forward: row lookup, as Embedding. Reverse (a call kwarg): logits = x @ embeddings^T (tied weights)
or x @ reverse_embeddings (untied), then `logit_soft_cap * tanh(logits / logit_soft_cap)` when a cap
is set. One layer is usually called both ways (input embedding and output head), sharing the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.embedding import Embedding, EmbeddingSpec, integer_dim, refuse_quantized
from converter.layers.registry import LAYERS
from converter.layers.spec import Config


@dataclass(frozen=True)
class ReversibleEmbeddingSpec(EmbeddingSpec):
    tie_weights: bool = True
    logit_soft_cap: float | None = None


def _output_dim(config: Config) -> int:
    """The class-independent rename table turns Keras 1's `output_dim` into `units`; only Embedding is exempt."""
    value = config.value("output_dim", config.value("units"))
    if not isinstance(value, int):
        raise UnsupportedLayerError(f"ReversibleEmbedding '{config.ctx.layer_name}' has no integer output_dim",
                                    layer=config.ctx.layer_name, hint="the config is incomplete")
    return value


def _reverse(node: Node) -> bool:
    return bool(node.call.kwargs.get("reverse", False))


@LAYERS.register("ReversibleEmbedding")
class ReversibleEmbedding(Embedding):
    keras3_args = None  # not among the Keras 3.15 built-ins the writer is checked against
    keras_availability = "keras3"

    required_arguments = ("input_dim",)  # output_dim arrives renamed to units (dialects' generic rename)

    def parse(self, config: Config) -> ReversibleEmbeddingSpec:
        output_dim = _output_dim(config)
        refuse_quantized(config)
        input_dim = integer_dim(config, "input_dim")
        reverse_dtype = config.value("reverse_dtype")
        if reverse_dtype not in (None, "float32"):
            raise UnsupportedLayerError(f"ReversibleEmbedding '{config.ctx.layer_name}' computes its reverse logits "
                                        f"in {reverse_dtype}", layer=config.ctx.layer_name,
                                        hint="kconvert converts reverse_dtype=None or 'float32'")
        return ReversibleEmbeddingSpec(input_dim=input_dim, output_dim=output_dim,
                                       mask_zero=config.flag("mask_zero", False),
                                       tie_weights=config.flag("tie_weights", True),
                                       logit_soft_cap=config.optional_number("logit_soft_cap"))

    def spec(self, node: Node) -> ReversibleEmbeddingSpec:
        return cast(ReversibleEmbeddingSpec, node.spec)

    def weight_names(self, node: Node) -> list[str]:
        return ["embeddings"] if self.spec(node).tie_weights else ["embeddings", "reverse_embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        rows, dim = self.spec(node).input_dim, self.spec(node).output_dim
        return {"embeddings": (rows, dim), "reverse_embeddings": (dim, rows)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if _reverse(node):
            return [(*input_shapes[0][:-1], self.spec(node).input_dim)]
        return [(*input_shapes[0], self.spec(node).output_dim)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        if not _reverse(node):
            return super().emit(node, b, inputs)
        if "reverse_embeddings" in node.weights:
            kernel = b.weight("reverse_embeddings")
        else:
            kernel = b.weight("embeddings_transposed", node.weights["embeddings"].T)
        logits = b.op("MatMul", inputs[0], kernel)
        cap = self.spec(node).logit_soft_cap
        if cap is not None:
            cap_value = b.scalar(cap, "logit_soft_cap")
            logits = b.op("Mul", b.op("Tanh", b.op("Div", logits, cap_value)), cap_value)
        return [logits]
