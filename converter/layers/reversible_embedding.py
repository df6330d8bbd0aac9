"""ReversibleEmbedding (Keras 3): an Embedding that can also be called with `reverse=True`.

Forward: row lookup, as Embedding. Reverse (a call kwarg): logits = x @ embeddings^T (tied weights)
or x @ reverse_embeddings (untied), then `logit_soft_cap * tanh(logits / logit_soft_cap)` when a cap
is set. One layer is usually called both ways (input embedding and output head), sharing the arrays.
"""

from __future__ import annotations

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.embedding import Embedding
from converter.layers.registry import LAYERS


def _output_dim(node: Node) -> int:
    """The class-independent rename table turns Keras 1's `output_dim` into `units`; only Embedding is exempt."""
    value = node.attrs.get("output_dim", node.attrs.get("units"))
    if not isinstance(value, int):
        raise UnsupportedLayerError(f"ReversibleEmbedding '{node.layer_name}' has no integer output_dim",
                                    layer=node.layer_name, hint="the config is incomplete")
    return value


def _with_output_dim(node: Node) -> Node:
    return Node(node.kind, node.name, attrs={**node.attrs, "output_dim": _output_dim(node)}, layer_name=node.layer_name)


def _reverse(node: Node) -> bool:
    return bool(node.call.kwargs.get("reverse", False))


@LAYERS.register("ReversibleEmbedding")
class ReversibleEmbedding(Embedding):
    def check(self, node: Node) -> None:
        super().check(_with_output_dim(node))
        if node.attrs.get("reverse_dtype") not in (None, "float32"):
            raise UnsupportedLayerError(f"ReversibleEmbedding '{node.layer_name}' computes its reverse logits in "
                                        f"{node.attrs['reverse_dtype']}", layer=node.layer_name,
                                        hint="kconvert converts reverse_dtype=None or 'float32'")

    def weight_names(self, node: Node) -> list[str]:
        return ["embeddings"] if node.attr("tie_weights", True) else ["embeddings", "reverse_embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        rows, dim = int(node.attrs["input_dim"]), _output_dim(node)
        return {"embeddings": (rows, dim), "reverse_embeddings": (dim, rows)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if _reverse(node):
            return [(*input_shapes[0][:-1], int(node.attrs["input_dim"]))]
        return [(*input_shapes[0], _output_dim(node))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        if not _reverse(node):
            return super().emit(node, b, inputs)
        if "reverse_embeddings" in node.weights:
            kernel = b.weight("reverse_embeddings")
        else:
            kernel = b.weight("embeddings_transposed", node.weights["embeddings"].T)
        logits = b.op("MatMul", inputs[0], kernel)
        cap = node.attrs.get("logit_soft_cap")
        if cap is not None:
            cap_value = b.scalar(float(cap), "logit_soft_cap")
            logits = b.op("Mul", b.op("Tanh", b.op("Div", logits, cap_value)), cap_value)
        return [logits]
