"""The Masking layer and kconvert's internal TimestepMask node (inserted by the masking pass).

Keras' Masking outputs `where(any(x != mask_value, axis=-1), x, 0)`: a timestep whose features all
equal mask_value becomes zeros, the others pass unchanged. The mask itself travels on to
mask-consuming layers; here it is an explicit tensor made by a TimestepMask node.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Dim, Node, Shape
from converter.ir.internal import INTERNAL_ATTENTION_MASK, INTERNAL_TIMESTEP_MASK, AttentionMaskSpec, TimestepMaskSpec
from converter.ir.spec import NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class MaskingSpec(LayerSpec):
    mask_value: float = 0.0


@dataclass(frozen=True)
class AnySpec(LayerSpec):
    axis: int
    keepdims: bool = False


def valid_steps(b: OpBuilder, x: str, mask_value: float) -> str:
    """(batch, time, ...features) -> (batch, time, 1) bool: some feature differs from mask_value."""
    differs = b.op("Cast", b.op("Not", b.op("Equal", x, b.scalar(mask_value, "mask_value"))), to=1)
    return b.op("Cast", b.reduce("ReduceMax", differs, [-1], keepdims=True), to=9)


def nonzero_ids(b: OpBuilder, ids: str) -> str:
    """Embedding(mask_zero=True): (batch, time) ids -> bool, True where the id is not 0."""
    return b.op("Not", b.op("Equal", b.op("Cast", ids, to=1), b.scalar(0.0, "zero")))


@LAYERS.register("Masking")
class Masking(LayerHandler[MaskingSpec]):
    keras3_args = "mask_value"

    def timestep_mask(self, node: Node) -> TimestepMaskSpec | None:
        """layers/traits.MaskSource: steps whose features all equal mask_value are masked."""
        return TimestepMaskSpec(source="masking", mask_value=self.spec(node).mask_value)

    def parse(self, config: Config) -> MaskingSpec:
        return parse_fields(MaskingSpec, config)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_min_rank(node, input_shapes[0], 2)
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        keep = valid_steps(b, inputs[0], self.spec(node).mask_value)
        return [b.op("Where", keep, inputs[0], b.scalar(0.0, "zero"))]


@LAYERS.register(INTERNAL_TIMESTEP_MASK)
class TimestepMask(LayerHandler[TimestepMaskSpec]):
    """Internal: the (batch, time) bool mask a Masking layer or Embedding(mask_zero=True) produces
    (the masking pass builds its spec)."""

    internal = True
    spec_type = TimestepMaskSpec

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [tuple(input_shapes[0][:2])]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        if spec.source == "embedding":
            return [nonzero_ids(b, inputs[0])]
        keep = valid_steps(b, inputs[0], spec.mask_value)
        return [b.squeeze(keep, [-1])]


def _as_float(b: OpBuilder, x: str, dtype: str) -> str:
    return x if dtype == "float32" else b.op("Cast", x, to=1)


@LAYERS.register("NotEqual")
class NotEqual(LayerHandler[NoArgs]):
    """Keras 3 op node `ops.not_equal(x, y)`; Keras 3 functional files hold Embedding(mask_zero) masks as
    `not_equal(ids, 0)` and Masking masks as `any(not_equal(x, mask_value), axis=-1)`.

    Compared in float32, exact for integer ids below 2**24.
    """

    keras3_args = ""
    keras_op_module = "keras.src.ops.numpy"
    keras_availability = "file"

    def check(self, node: Node) -> None:
        constants = node.call.kwargs.get("positional_constants") or []
        if len(node.inputs) + len(constants) != 2 or not all(isinstance(c, (int, float)) for c in constants):
            raise UnsupportedLayerError(f"NotEqual '{node.layer_name}' needs two tensors or a tensor and a number",
                                        layer=node.layer_name, hint="compare against a scalar constant")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [max(input_shapes, key=len)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        operands = [_as_float(b, x, t.dtype) for x, t in zip(inputs, node.inputs)]
        if len(operands) == 1:
            constant = float(node.call.kwargs["positional_constants"][0])
            operands.append(b.scalar(constant, "other"))
        return [b.op("Not", b.op("Equal", *operands))]


@LAYERS.register("Any")
class Any_(LayerHandler[AnySpec]):
    """Keras 3 op node `ops.any(x, axis, keepdims)` over one axis (the Masking mask)."""

    keras3_args = "axis keepdims"
    keras_op_module = "keras.src.ops.numpy"
    keras_availability = "file"

    def parse(self, config: Config) -> AnySpec:
        axis = config.value("axis")
        if not isinstance(axis, int):
            raise UnsupportedLayerError(f"Any '{config.ctx.layer_name}' reduces over {axis!r}",
                                        layer=config.ctx.layer_name, hint="only a single integer axis converts")
        return AnySpec(axis=axis, keepdims=config.flag("keepdims", False))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = list(input_shapes[0])
        axis = self.spec(node).axis % len(shape)
        if self.spec(node).keepdims:
            shape[axis] = 1
        else:
            del shape[axis]
        return [tuple(shape)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        as_float = b.op("Cast", inputs[0], to=1)
        spec = self.spec(node)
        reduced = b.reduce("ReduceMax", as_float, [spec.axis], keepdims=spec.keepdims)
        return [b.op("Cast", reduced, to=9)]


@LAYERS.register(INTERNAL_ATTENTION_MASK)
class AttentionMask(LayerHandler[AttentionMaskSpec]):
    """Internal: the attention mask Keras derives from implicit (batch, time) masks of an attention call.

    Keras' MultiHeadAttention ANDs `query_mask[:, :, None]`, `value_mask[:, None, :]` and `key_mask[:, None, :]`
    with any given `attention_mask`. The masking pass builds its spec: the role of each input.
    """

    internal = True
    spec_type = AttentionMaskSpec

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        batch: Dim = "batch"
        query: Dim = 1
        value: Dim = 1
        for role, shape in zip(self.spec(node).roles, input_shapes):
            if role == "given":
                return [tuple(shape)]
            batch = shape[0]
            query, value = (shape[1], value) if role == "query" else (query, shape[1])
        return [(batch, query, value)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        masks = []
        for role, mask in zip(self.spec(node).roles, inputs):
            flag = b.op("Cast", mask, to=9)
            masks.append(flag if role == "given" else b.unsqueeze(flag, [-1] if role == "query" else [-2]))
        keep = masks[0]
        for mask in masks[1:]:
            keep = b.op("And", keep, mask)
        return [keep]
