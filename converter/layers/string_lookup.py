"""StringLookup with its vocabulary in the config (or, for an adapted layer, in the .keras archive's assets,
which `converter/keras/assets.py` puts in the attrs): string tokens -> int64 ids, through the ONNX-ML
`LabelEncoder` (domain ai.onnx.ml), which maps each string key to its id and anything else to the default.

Keras' id layout (keras/src/layers/preprocessing/index_lookup.py): with output_mode "int", a mask token
takes id 0 and the OOV ids follow it; the vocabulary's tokens come after them. A vocabulary may repeat the
special tokens at its start ([mask,] oov), in which case they are not tokens themselves.
"""

from __future__ import annotations

from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler


def _refuse(node: Node, what: str, hint: str) -> None:
    raise UnsupportedLayerError(f"StringLookup '{node.layer_name}': {what}", layer=node.layer_name, hint=hint)


def _layout(node: Node) -> tuple[list[str], int, int]:
    """(tokens, OOV id, id of the first token)."""
    mask = node.attrs.get("mask_token")
    oov_start = 0 if mask is None else 1
    token_start = oov_start + 1
    vocabulary = [str(v) for v in node.attrs["vocabulary"]]
    special = [str(mask)] * oov_start + [str(node.attr("oov_token", "[UNK]"))]
    tokens = vocabulary[token_start:] if vocabulary[:token_start] == special else vocabulary
    return tokens, oov_start, token_start


@LAYERS.register("StringLookup")
class StringLookup(LayerHandler):
    def check(self, node: Node) -> None:
        vocabulary: Any = node.attrs.get("vocabulary")
        if isinstance(vocabulary, str):
            _refuse(node, f"its vocabulary is not in the config but in the file {vocabulary!r} it names, which "
                    "kconvert does not read", "build the layer with vocabulary=layer.get_vocabulary() and save again")
        if not isinstance(vocabulary, list) or not vocabulary:
            _refuse(node, "its vocabulary is not in the config (an adapt()ed layer), and this file holds no "
                    "assets/.../vocabulary.txt for it: a .keras archive keeps it in assets/, a .h5 file drops it",
                    "save the model as .keras, or build the layer with vocabulary=layer.get_vocabulary()")
        if node.attr("invert", False):
            _refuse(node, "invert=True (ids -> strings) is not supported", "only string -> id lookups convert")
        if node.attr("output_mode", "int") != "int":
            _refuse(node, f"output_mode {node.attr('output_mode')!r} is not supported",
                    "only output_mode='int' converts")
        if int(node.attr("num_oov_indices", 1)) != 1:
            _refuse(node, f"num_oov_indices={node.attr('num_oov_indices')} is not supported",
                    "only num_oov_indices=1 converts (hashed OOV buckets have no ONNX equivalent)")
        if str(node.attr("encoding", "utf-8")).lower().replace("_", "-") not in ("utf-8", "utf8"):
            _refuse(node, f"encoding {node.attr('encoding')!r} is not supported", "only utf-8 converts")
        if node.inputs and node.inputs[0].dtype != "string":
            _refuse(node, f"its input is {node.inputs[0].dtype}, not string",
                    "feed it from a string model input (keras.Input(dtype='string'))")
        tokens, _, _ = _layout(node)
        if len(set(tokens)) != len(tokens):
            _refuse(node, "its vocabulary repeats a token", "Keras refuses such a vocabulary too")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        node.outputs[0].dtype = "int64"
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        tokens, oov, token_start = _layout(node)
        keys, values = list(tokens), list(range(token_start, token_start + len(tokens)))
        mask = node.attrs.get("mask_token")
        if mask is not None:  # Keras replaces the mask token's lookup by id 0 after the table lookup
            keys, values = [str(mask), *keys], [0, *values]
        return [b.op("LabelEncoder", inputs[0], domain="ai.onnx.ml", keys_strings=keys, values_int64s=values,
                     default_int64=oov)]
