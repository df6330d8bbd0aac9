"""Embedding."""

from __future__ import annotations

from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler


def _quantized(dtype: Any) -> bool:
    """Keras 3 int8/int4 quantised layers store other variables (scales, packed ints)."""
    if isinstance(dtype, dict):
        return "Quantized" in str(dtype.get("class_name", ""))
    return isinstance(dtype, str) and (dtype.startswith("int8_from") or dtype.startswith("int4_from"))


@LAYERS.register("Embedding")
class Embedding(LayerHandler):
    """Row lookup: (batch, ...) integer ids -> (batch, ..., output_dim).

    The model input keeps the dtype Keras declared (often float32 in Keras 2 Sequential models); the
    ids are cast to int64 inside, truncating like Keras' own cast. `mask_zero` changes no values: the
    mask only matters to layers that consume it.
    """

    def check(self, node: Node) -> None:
        if _quantized(node.attrs.get("dtype")) or node.attrs.get("quantization_config") is not None:
            raise UnsupportedLayerError(f"Embedding '{node.layer_name}' is quantised (int8/int4)",
                                        layer=node.layer_name,
                                        hint="save the float model before keras quantize() and convert that")
        for key in ("input_dim", "output_dim"):
            if not isinstance(node.attrs.get(key), int):
                raise UnsupportedLayerError(f"Embedding '{node.layer_name}' has no integer {key}",
                                            layer=node.layer_name, hint="the config is incomplete")

    def weight_names(self, node: Node) -> list[str]:
        return ["embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        return {"embeddings": (int(node.attrs["input_dim"]), int(node.attrs["output_dim"]))}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [(*input_shapes[0], int(node.attrs["output_dim"]))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ids = inputs[0]
        if node.inputs[0].dtype != "int64":
            ids = b.op("Cast", ids, to=7)  # 7 = TensorProto.INT64; handlers do not import onnx
        return [b.op("Gather", b.weight("embeddings"), ids, axis=0)]
