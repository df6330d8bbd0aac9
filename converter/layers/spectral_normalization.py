"""SpectralNormalization: a wrapper that rewrites its layer's kernel while training only.

At inference (`call(..., training=False)`) Keras runs the wrapped layer on the stored kernel (already
normalised when it was saved), so the unwrap pass replaces it by that layer as an ordinary node
(`unwrap`), with no kernel to recompute. Its own `vector_u` (the power-iteration state) does not enter
the result. Keras 3 casts the layer's output back to an integer input's dtype: an internal
`kconvert:CastToInputDtype` node after the layer does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape, Tensor
from converter.ir.internal import CAST_TO_INPUT_DTYPE, CastSpec
from converter.ir.names import NameAuthority
from converter.layers.builder import OpBuilder
from converter.layers.preprocessing import FLOAT_DTYPES
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec
from converter.layers.wrappers import check_wrapped_child, graph_node_of, refuse_wrapper_emit, wrapped_child


def _wrapped(node: Node) -> tuple[Node, LayerHandler[Any]]:
    child, handler = wrapped_child(node)  # the child also gets vector_u, which it ignores
    child.layer_name = node.layer_name
    return child, handler


@dataclass(frozen=True)
class SpectralNormSpec(LayerSpec):
    # Keras 3 casts the wrapped layer's output back to a non-float input's dtype; Keras 2 does not.
    cast_to_input_dtype: bool = True


@LAYERS.register("SpectralNormalization")
class SpectralNormalization(LayerHandler[SpectralNormSpec]):
    """The wrapped layer with its stored (already normalised while training) kernel.

    Both file layouts arrive as the child's arrays followed by `vector_u` (legacy_weights.py puts a
    Keras 3 zip's `[kernel alias, vector_u, layer vars...]` in that order). The wrapped layer is
    `node.children[0]`, parsed with its own handler at the boundary (layer_configs.parse_node).
    """

    required_arguments = ("layer",)

    def parse(self, config: Config) -> SpectralNormSpec:
        # power_iterations acts only while training: the stored kernel is already normalised.
        return SpectralNormSpec(cast_to_input_dtype=config.ctx.keras3)

    def check(self, node: Node) -> None:
        _wrapped(node)
        check_wrapped_child(node)

    def weight_names(self, node: Node) -> list[str]:
        child, handler = _wrapped(node)
        return [*handler.weight_names(child), "vector_u"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        child, handler = _wrapped(node)
        return handler.weight_shapes(child, input_shapes)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        child, handler = _wrapped(node)
        child.inputs = list(node.inputs)
        shapes = handler.output_shapes(child, input_shapes)
        child.outputs = [Tensor(f"{node.name}/inner", tuple(shapes[0]), producer=child)]
        return shapes[:1]

    def unwrap(self, node: Node, names: NameAuthority) -> list[Node]:
        """The wrapped layer as an ordinary node on the stored kernel (`vector_u` stays behind), then,
        where Keras 3 casts the result back to a non-float input's dtype, that Cast."""
        child, _ = _wrapped(node)
        weights = {k: v for k, v in node.weights.items() if k != "vector_u"}
        inner_name = names.unique(f"{node.name}/{child.name}")
        out = node.outputs[0]
        cast_to = self.cast_to(node)
        inner_out = out if cast_to is None else Tensor(inner_name)
        inner = graph_node_of(child, inner_name, list(node.inputs), inner_out, weights)
        if cast_to is None:
            return [inner]
        cast = Node(kind=CAST_TO_INPUT_DTYPE, name=names.unique(f"{node.name}/cast"), inputs=[inner_out],
                    outputs=[out], layer_name=node.layer_name)
        cast.spec = CastSpec(dtype=cast_to)
        out.producer = cast
        return [inner, cast]

    def cast_to(self, node: Node) -> str | None:
        """The input's dtype where Keras 3 casts the wrapped layer's output back to it (an Embedding's ids)."""
        dtype = node.inputs[0].dtype
        if not self.spec(node).cast_to_input_dtype or dtype in FLOAT_DTYPES:
            return None
        if dtype not in ONNX_INT_TYPES:
            raise UnsupportedLayerError(f"SpectralNormalization '{node.layer_name}' gets a {dtype} input",
                                        layer=node.layer_name, hint="kconvert converts float and int inputs here")
        return dtype

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        raise refuse_wrapper_emit(node)


ONNX_INT_TYPES = {"int32": 6, "int64": 7, "uint8": 2, "int8": 3}


@LAYERS.register(CAST_TO_INPUT_DTYPE)
class CastToInputDtype(LayerHandler[CastSpec]):
    internal = True
    spec_type = CastSpec

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        dtype = self.spec(node).dtype
        node.outputs[0].dtype = dtype
        return [b.op("Cast", inputs[0], to=ONNX_INT_TYPES[dtype])]
