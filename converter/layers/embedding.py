"""Embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.internal import TimestepMaskSpec
from converter.layers.builder import OpBuilder
from converter.layers.quantized import Int8, parse_int8
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec


@dataclass(frozen=True)
class EmbeddingSpec(LayerSpec):
    input_dim: int
    output_dim: int
    mask_zero: bool = False  # read by the masking pass: the ids' mask, not the values
    int8: Int8 | None = None  # Keras 3 model.quantize("int8"): int8 table + a scale per row


def _quantized(dtype: Any) -> bool:
    """Keras 3 int8/int4 quantised layers store other variables (scales, packed ints)."""
    if isinstance(dtype, dict):
        return "Quantized" in str(dtype.get("class_name", ""))
    return isinstance(dtype, str) and (dtype.startswith("int8_from") or dtype.startswith("int4_from"))


def refuse_quantized(config: Config) -> None:
    """ReversibleEmbedding: its quantized reverse projection is not read (Embedding reads int8)."""
    if _quantized(config.value("dtype")) or config.has("quantization_config"):
        layer = config.ctx.layer_name
        raise UnsupportedLayerError(f"Embedding '{layer}' is quantised (int8/int4)", layer=layer,
                                    hint="save the float model before keras quantize() and convert that")


def integer_dim(config: Config, key: str) -> int:
    """input_dim / output_dim: a true int (a float or a missing value means a damaged config)."""
    value = config.value(key)
    if not isinstance(value, int):
        raise UnsupportedLayerError(f"Embedding '{config.ctx.layer_name}' has no integer {key}",
                                    layer=config.ctx.layer_name, hint="the config is incomplete")
    return value


@LAYERS.register("Embedding")
class Embedding(LayerHandler[EmbeddingSpec]):
    """Row lookup: (batch, ...) integer ids -> (batch, ..., output_dim).

    The model input keeps the dtype Keras declared (often float32 in Keras 2 Sequential models); the
    ids are cast to int64 inside, truncating like Keras' own cast. `mask_zero` changes no values: the
    mask only matters to layers that consume it.
    """

    keras3_args: str | None = ("input_dim output_dim embeddings_initializer embeddings_regularizer "
                               "embeddings_constraint mask_zero lora_rank lora_alpha quantization_config")

    takes_token_ids = True
    argument_kinds = {"input_dim": "positive", "output_dim": "positive", "reverse_dtype": "text"}
    required_arguments: tuple[str, ...] = ("input_dim", "output_dim")  # typed: ReversibleEmbedding needs fewer

    def timestep_mask(self, node: Node) -> TimestepMaskSpec | None:
        """layers/traits.MaskSource: with mask_zero, the ids equal to 0 are masked steps."""
        return TimestepMaskSpec(source="embedding") if self.spec(node).mask_zero else None

    def parse(self, config: Config) -> EmbeddingSpec:
        return EmbeddingSpec(input_dim=integer_dim(config, "input_dim"), output_dim=integer_dim(config, "output_dim"),
                             mask_zero=config.flag("mask_zero", False), int8=parse_int8(config))

    def weight_names(self, node: Node) -> list[str]:
        return ["embeddings", "embeddings_scale"] if self.spec(node).int8 else ["embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        table: dict[str, tuple[int | None, ...]] = {"embeddings": (spec.input_dim, spec.output_dim)}
        return {**table, "embeddings_scale": (spec.input_dim,)} if spec.int8 else table

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [(*input_shapes[0], self.spec(node).output_dim)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ids = inputs[0]
        if node.inputs[0].dtype != "int64":
            ids = b.op("Cast", ids, to=7)  # 7 = TensorProto.INT64; handlers do not import onnx
        if self.spec(node).int8:
            return [self._int8_lookup(node, b, ids)]
        return [b.op("Gather", b.weight("embeddings"), ids, axis=0)]

    def _int8_lookup(self, node: Node, b: OpBuilder, ids: str) -> str:
        """Embedding._int8_call: the int8 rows (kept int8 in the file) divided by their row's scale."""
        table = b.const(np.ascontiguousarray(node.weights["embeddings"], dtype=np.int8), "embeddings")
        rows = b.op("Cast", b.op("Gather", table, ids, axis=0), to=1)  # 1 = TensorProto.FLOAT
        scales = b.op("Gather", b.weight("embeddings_scale"), ids, axis=0)
        return b.op("Div", rows, b.unsqueeze(scales, [-1]))
