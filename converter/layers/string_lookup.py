"""StringLookup with its vocabulary in the config (or, for an adapted layer, in the .keras archive's assets,
which `converter/keras/assets.py` puts in the config before the parse): string tokens -> int64 ids, through the ONNX-ML
`LabelEncoder` (domain ai.onnx.ml), which maps each string key to its id and anything else to the default.

Keras' id layout (keras/src/layers/preprocessing/index_lookup.py): with output_mode "int", a mask token
takes id 0 and the OOV ids follow it; the vocabulary's tokens come after them. A vocabulary may repeat the
special tokens at its start ([mask,] oov), in which case they are not tokens themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.categorical import parse_vocabulary
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class StringLookupSpec(LayerSpec):
    vocabulary: tuple[str, ...] | None = None  # None: not in the config nor in the .keras assets
    vocabulary_file: str | None = None  # a file the config names instead (refused)
    mask_token: str | None = None
    oov_token: str = "[UNK]"
    num_oov_indices: int = 1
    output_mode: str = "int"
    invert: bool = False
    encoding: str = "utf-8"


def _refuse(node: Node, what: str, hint: str) -> None:
    raise UnsupportedLayerError(f"StringLookup '{node.layer_name}': {what}", layer=node.layer_name, hint=hint)


def _layout(spec: StringLookupSpec) -> tuple[list[str], int, int]:
    """(tokens, OOV id, id of the first token)."""
    oov_start = 0 if spec.mask_token is None else 1
    token_start = oov_start + 1
    vocabulary = list(spec.vocabulary or ())
    special = [str(spec.mask_token)] * oov_start + [spec.oov_token]
    tokens = vocabulary[token_start:] if vocabulary[:token_start] == special else vocabulary
    return tokens, oov_start, token_start


@LAYERS.register("StringLookup")
class StringLookup(LayerHandler[StringLookupSpec]):
    vocabulary_asset = "str"

    argument_kinds = {"mask_token": "text", "oov_token": "text", "vocabulary": "text_tokens"}

    def parse(self, config: Config) -> StringLookupSpec:
        vocabulary, vocabulary_file = parse_vocabulary(config, str)
        return parse_fields(StringLookupSpec, config, vocabulary=vocabulary, vocabulary_file=vocabulary_file)

    def check(self, node: Node) -> None:
        spec = self.spec(node)
        if spec.vocabulary_file is not None:
            _refuse(node, f"its vocabulary is not in the config but in the file {spec.vocabulary_file!r} it "
                    "names, which kconvert does not read",
                    "build the layer with vocabulary=layer.get_vocabulary() and save again")
        if not spec.vocabulary:
            _refuse(node, "its vocabulary is not in the config (an adapt()ed layer), and this file holds no "
                    "assets/.../vocabulary.txt for it: a .keras archive keeps it in assets/, a .h5 file drops it",
                    "save the model as .keras, or build the layer with vocabulary=layer.get_vocabulary()")
        self._check_options(node, spec)
        if node.inputs and node.inputs[0].dtype != "string":
            _refuse(node, f"its input is {node.inputs[0].dtype}, not string",
                    "feed it from a string model input (keras.Input(dtype='string'))")
        tokens, _, _ = _layout(spec)
        if len(set(tokens)) != len(tokens):
            _refuse(node, "its vocabulary repeats a token", "Keras refuses such a vocabulary too")

    def _check_options(self, node: Node, spec: StringLookupSpec) -> None:
        if spec.invert:
            _refuse(node, "invert=True (ids -> strings) is not supported", "only string -> id lookups convert")
        if spec.output_mode != "int":
            _refuse(node, f"output_mode {spec.output_mode!r} is not supported", "only output_mode='int' converts")
        if spec.num_oov_indices != 1:
            _refuse(node, f"num_oov_indices={spec.num_oov_indices} is not supported",
                    "only num_oov_indices=1 converts (hashed OOV buckets have no ONNX equivalent)")
        if spec.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            _refuse(node, f"encoding {spec.encoding!r} is not supported", "only utf-8 converts")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        node.outputs[0].dtype = "int64"
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        tokens, oov, token_start = _layout(spec)
        keys, values = list(tokens), list(range(token_start, token_start + len(tokens)))
        if spec.mask_token is not None:  # Keras replaces the mask token's lookup by id 0 after the table lookup
            keys, values = [spec.mask_token, *keys], [0, *values]
        return [b.op("LabelEncoder", inputs[0], domain="ai.onnx.ml", keys_strings=keys, values_int64s=values,
                     default_int64=oov)]
