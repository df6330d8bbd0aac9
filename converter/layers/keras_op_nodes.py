"""Keras 3 op nodes: a `keras.ops` call in a functional model, saved as a node of the op's class.

Keras 3 writes `y - 0.5`, `keras.ops.mean(y, axis=1)` or `y[:, 1:]` as entries whose `module` is
`keras.src.ops.<numpy|nn|core|math|image>` and whose `class_name` is the op's (`Subtract`, `Mean`,
`GetItem`): the op's constructor arguments are in `config` (`axis`, `keepdims`, `newshape`), the call's
tensors and constants in `inbound_nodes` (`CallSite.args`). Each class converts through the
TensorFunction its Signature names; the handlers are registered as `ops.<class>` (keras/layer_configs.
op_node_kind routes op-module entries there), so an op sharing a layer's class name (`Reshape`, `Dot`)
never meets the layer's handler. A class not registered is refused by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.ir import Node
from converter.layers.op_functions import Bound, FunctionCall, Signature, TensorFunction
from converter.layers.registry import LAYERS
from converter.layers.spec import Config, LayerSpec

# Keras 3 op class name -> how its call and config bind to a TensorFunction (filled by the op_* modules
# through `add_keras_op`).
KERAS_OPS: dict[str, Signature] = {}


@dataclass(frozen=True)
class KerasOpSpec(LayerSpec):
    # The op's constructor arguments as the config holds them (every key but `name`).
    config_args: tuple[tuple[str, Any], ...] = ()


class KerasOpNode(FunctionCall[KerasOpSpec]):
    """One Keras 3 op class; shape, dtype and emission are its TensorFunction's."""

    spec_type = KerasOpSpec
    keras_availability = "file"

    def __init__(self, class_name: str, signature: Signature) -> None:
        self.class_name = class_name
        self.signature = signature

    def parse(self, config: Config) -> KerasOpSpec:
        args = tuple((k, v) for k, v in config.raw.items() if k != "name")
        return KerasOpSpec(config_args=args)

    def call_of(self, node: Node) -> tuple[TensorFunction, Bound]:
        bound = self.signature.bind(node, f"keras.ops {self.class_name}", dict(self.spec(node).config_args))
        return self.signature.function, bound


def add_keras_op(class_name: str, signature: Signature) -> None:
    """Register a Keras 3 op class (as the node kind `ops.<class_name>`)."""
    KERAS_OPS[class_name] = signature
    LAYERS.add(f"ops.{class_name}", KerasOpNode(class_name, signature))
