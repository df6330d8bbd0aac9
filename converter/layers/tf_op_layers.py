"""tf.keras op layers: `TFOpLambda` and `SlicingOpLambda`, a call of the TensorFlow function the config names.

tf.keras 2.4+ records a TensorFlow function applied to a Keras tensor in a functional model as one of
these layers: `config.function` names the function under the `tf` namespace (`math.add`, `nn.relu6`,
`__operators__.getitem`), and the call's arguments (tensors and constants) are in `inbound_nodes`. The
names map to TensorFunctions in `TF_FUNCTIONS` (filled by the op_* modules); a name not there is refused
by its name. Nothing of the file is run: the name selects kconvert's own emission.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import FormatError, UnsupportedLayerError
from converter.ir import Node
from converter.layers.op_functions import Bound, FunctionCall, Signature, TensorFunction
from converter.layers.registry import LAYERS
from converter.layers.spec import Config, LayerSpec

# TensorFlow function name (without `tf.`) -> how its arguments bind to a TensorFunction.
TF_FUNCTIONS: dict[str, Signature] = {}
# SlicingOpLambda's functions (`__operators__.getitem`).
TF_SLICING: dict[str, Signature] = {}


@dataclass(frozen=True)
class TFOpSpec(LayerSpec):
    function: str = ""


class TFOpLayer(FunctionCall[TFOpSpec]):
    """One TensorFlow function call, by name; shape, dtype and emission are the function's."""

    spec_type = TFOpSpec
    keras_availability = "file"  # in tf.keras 2.4+ files, not a `keras.layers` export

    def __init__(self, table: dict[str, Signature]) -> None:
        self.table = table

    def parse(self, config: Config) -> TFOpSpec:
        function = config.value("function")
        if not isinstance(function, str) or not function:
            raise FormatError(f"{config.ctx.kind} '{config.ctx.layer_name}' has function={function!r}, not the "
                              "name of a TensorFlow function", layer=config.ctx.layer_name,
                              hint="tf.keras writes the function's name, e.g. 'math.add'; is the config damaged?")
        if function not in self.table:
            raise UnsupportedLayerError(f"tf.{function} is a TensorFlow function kconvert does not convert",
                                        layer=config.ctx.layer_name,
                                        hint="see the README's table of TensorFlow functions")
        return TFOpSpec(function=function)

    def call_of(self, node: Node) -> tuple[TensorFunction, Bound]:
        function = self.spec(node).function
        signature = self.table[function]
        return signature.function, signature.bind(node, f"tf.{function}")

    def functions(self) -> list[str]:
        """The TensorFlow functions this class converts (the README lists them)."""
        return sorted(self.table)


LAYERS.add("TFOpLambda", TFOpLayer(TF_FUNCTIONS))
LAYERS.add("SlicingOpLambda", TFOpLayer(TF_SLICING))
