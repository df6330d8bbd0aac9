"""Categorical preprocessing: CategoryEncoding, Discretization and IntegerLookup (vocabulary in the config,
or in the .keras archive's assets for an adapted layer: `converter/keras/assets.py` puts it in the attrs).

All three end in Keras' `encode_categorical_inputs`: 'int' passes indices through; 'one_hot' turns
each index into a row of `depth`; 'multi_hot' / 'count' mark or count the indices of each sample.
TensorFlow computes the last two with bincount, which ignores indices >= depth, and only for inputs
of rank <= 2; a rank-1 input (batch,) is counted over the whole batch, so that case is refused.
Integer outputs get their Keras dtype (the exporter declares it): Discretization 'int' gives int32 in
Keras 3 and its config dtype (int64) in Keras 2; IntegerLookup gives int64 in Keras 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements
from converter.layers.registry import LAYERS, LayerHandler

ONNX_TYPES = {"float32": 1, "int32": 6, "int64": 7}
MODES = ("int", "one_hot", "multi_hot", "count")
# The arguments that set an encoded output's depth.
DEPTH_SOURCES = {"CategoryEncoding": "num_tokens", "Discretization": "bin_boundaries",
                 "IntegerLookup": "vocabulary and max_tokens"}


def _refuse(node: Node, what: str, hint: str) -> None:
    raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' {what}", layer=node.layer_name, hint=hint)


def dtype_name(value: Any) -> str | None:
    """The config's dtype: a string, or a Keras 3 DTypePolicy dict."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    return value if isinstance(value, str) else None


def mode(node: Node, default: str) -> str:
    value = str(node.attr("output_mode", default))
    return "multi_hot" if value == "binary" else value


def check_encoding(node: Node, output_mode: str) -> None:
    if output_mode not in MODES:
        _refuse(node, f"has output_mode={output_mode!r}", "supported: " + ", ".join(MODES))
    if node.attr("sparse", False):
        _refuse(node, "has sparse=True", "ONNX tensors are dense; use sparse=False")


def encoded_shape(node: Node, shape: Shape, output_mode: str, depth: int) -> Shape:
    if output_mode == "int":
        return shape
    check_elements(node, depth, "a one-hot range", DEPTH_SOURCES.get(node.kind, "config"), MAX_TABLE_ENTRIES)
    if output_mode == "one_hot":
        return (*(shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape), depth)
    if len(shape) != 2:
        _refuse(node, f"encodes a rank-{len(shape)} input with output_mode={output_mode!r}",
                "Keras counts tokens per sample only for (batch, tokens) inputs; give the Input shape (tokens,)")
    return (shape[0], depth)


def encode(b: OpBuilder, ids: str, shape: Shape, output_mode: str, depth: int, dtype: int = 1) -> str:
    """int64 indices -> one_hot / multi_hot / count rows of `depth` (indices outside [0, depth) give none)."""
    if output_mode == "one_hot" and len(shape) > 1 and shape[-1] == 1:
        ids = b.squeeze(ids, [-1])
    hits = b.op("Cast", b.op("Equal", b.unsqueeze(ids, [-1]), b.ints(np.arange(depth).tolist(), "depth_range")),
                to=1)
    if output_mode == "multi_hot":
        hits = b.reduce("ReduceMax", hits, [1], keepdims=False)
    elif output_mode == "count":
        hits = b.reduce("ReduceSum", hits, [1], keepdims=False)
    return hits if dtype == 1 else b.op("Cast", hits, to=dtype)


def check_vocabulary(node: Node) -> None:
    """A lookup's vocabulary must be a list by now: the config's, or the one read from the .keras assets."""
    vocabulary = node.attrs.get("vocabulary")
    if isinstance(vocabulary, str):
        _refuse(node, f"names the vocabulary file {vocabulary!r} in its config; kconvert does not read files "
                "a model config points to", "build the layer with vocabulary=layer.get_vocabulary() and save again")
    if not isinstance(vocabulary, list):
        _refuse(node, "keeps its vocabulary outside the config (an adapt()ed layer), and this file holds no "
                "assets/.../vocabulary.txt for it: a .keras archive keeps it in assets/, a .h5 file drops it",
                "save the model as .keras, or build the layer with vocabulary=layer.get_vocabulary()")


def as_int64(node: Node, b: OpBuilder, x: str) -> str:
    return x if node.inputs[0].dtype == "int64" else b.op("Cast", x, to=7)


@LAYERS.register("CategoryEncoding")
class CategoryEncoding(LayerHandler):
    def check(self, node: Node) -> None:
        check_encoding(node, mode(node, "multi_hot"))
        if mode(node, "multi_hot") == "int":
            _refuse(node, "has output_mode='int'", "CategoryEncoding encodes one_hot, multi_hot or count")
        if not isinstance(node.attrs.get("num_tokens"), int) or int(node.attrs["num_tokens"]) < 1:
            _refuse(node, f"has num_tokens={node.attrs.get('num_tokens')!r}", "set num_tokens to a positive int")
        if dtype_name(node.attrs.get("dtype")) not in (None, "float32"):
            _refuse(node, f"outputs {dtype_name(node.attrs.get('dtype'))}", "kconvert converts float32 outputs")
        if node.call.tensor_kwargs.get("count_weights"):
            _refuse(node, "is called with count_weights", "kconvert converts unweighted counts")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [encoded_shape(node, input_shapes[0], mode(node, "multi_hot"), int(node.attrs["num_tokens"]))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ids = as_int64(node, b, inputs[0])
        return [encode(b, ids, node.inputs[0].shape or (), mode(node, "multi_hot"), int(node.attrs["num_tokens"]))]


@LAYERS.register("Discretization")
class Discretization(LayerHandler):
    """Bucket index = how many boundaries are <= x (tf Bucketize), then encoded."""

    def check(self, node: Node) -> None:
        check_encoding(node, mode(node, "int"))
        bounds = node.attrs.get("bin_boundaries")
        if not isinstance(bounds, list) or not bounds:
            _refuse(node, "has no bin_boundaries in its config", "adapt() the layer (or pass bin_boundaries) "
                    "before saving")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        depth = len(node.attrs["bin_boundaries"]) + 1
        if mode(node, "int") == "int":
            node.outputs[0].dtype = _discretization_int_dtype(node)
        return [encoded_shape(node, input_shapes[0], mode(node, "int"), depth)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        if node.inputs[0].dtype != "float32":
            x = b.op("Cast", x, to=1)  # Bucketize compares against float32 boundaries
        bounds = np.asarray(node.attrs["bin_boundaries"], np.float32)
        above = b.op("Cast", b.op("GreaterOrEqual", b.unsqueeze(x, [-1]), b.const(bounds, "bin_boundaries")), to=7)
        index = b.reduce("ReduceSum", above, [-1], keepdims=False)
        output_mode = mode(node, "int")
        if output_mode == "int":
            return [b.op("Cast", index, to=ONNX_TYPES[_discretization_int_dtype(node)])]
        return [encode(b, index, node.inputs[0].shape or (), output_mode, len(bounds) + 1)]


def _discretization_int_dtype(node: Node) -> str:
    """Keras 2 stores the int output dtype (int64) as the layer dtype; Keras 3 always outputs int32."""
    wanted = dtype_name(node.attrs.get("dtype"))
    return wanted if wanted in ("int32", "int64") else "int32"


@LAYERS.register("IntegerLookup")
class IntegerLookup(LayerHandler):
    """Token -> index: [mask] [OOV x num_oov_indices] [vocabulary...]; unknown tokens go to the OOV index
    (with several, `token mod num_oov_indices`: Keras' default 'floormod'), the mask token to 0 ('int')
    or nowhere (the encoded modes). The vocabulary comes from the config or the .keras assets."""

    def check(self, node: Node) -> None:
        output_mode = mode(node, "int")
        check_encoding(node, output_mode)
        check_vocabulary(node)
        if node.attr("invert", False):
            _refuse(node, "has invert=True", "kconvert converts token -> index lookups")
        oov = int(node.attr("num_oov_indices", 1))
        if oov < 1:
            _refuse(node, f"has num_oov_indices={oov}", "Keras raises on unknown tokens then; use 1 or more")
        if oov > 1 and node.attr("oov_method", "floormod") != "floormod":
            _refuse(node, f"hashes unknown tokens with oov_method={node.attrs['oov_method']!r} (FarmHash)",
                    "kconvert reproduces oov_method='floormod' only")

    def _layout(self, node: Node) -> tuple[list[int], int, int]:
        """(tokens, oov_start, token_start), as Keras' set_vocabulary strips leading special tokens."""
        output_mode, mask = mode(node, "int"), node.attrs.get("mask_token")
        oov_start = 1 if mask is not None and output_mode == "int" else 0
        token_start = oov_start + int(node.attr("num_oov_indices", 1))
        vocabulary = [int(v) for v in node.attrs["vocabulary"]]
        special = [mask] * oov_start + [int(node.attr("oov_token", -1))] * (token_start - oov_start)
        tokens = vocabulary[token_start:] if vocabulary[:token_start] == special else vocabulary
        return tokens, oov_start, token_start

    def _depth(self, node: Node) -> int:
        tokens, _, token_start = self._layout(node)
        if node.attr("pad_to_max_tokens", False) and node.attrs.get("max_tokens") is not None:
            return int(node.attrs["max_tokens"])
        return token_start + len(tokens)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if mode(node, "int") == "int":
            node.outputs[0].dtype = "int64"
        return [encoded_shape(node, input_shapes[0], mode(node, "int"), self._depth(node))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = as_int64(node, b, inputs[0])
        tokens, oov_start, token_start = self._layout(node)
        oov = int(node.attr("num_oov_indices", 1))
        default = oov_start if oov == 1 else -1
        hits = b.op("Cast", b.op("Equal", b.unsqueeze(x, [-1]), b.ints(tokens, "vocabulary")), to=7)
        found = b.reduce("ReduceSum", hits, [-1], keepdims=False)
        index = b.reduce("ReduceSum", b.op("Mul", hits, b.ints(np.arange(token_start, token_start + len(tokens))
                                                                   .tolist(), "indices")), [-1], keepdims=False)
        lookups = b.op("Where", b.op("Cast", found, to=9), index, b.ints(default, "oov_index"))
        output_mode = mode(node, "int")
        mask = node.attrs.get("mask_token")
        if mask is not None:
            masked = np.iinfo(np.int64).max if output_mode != "int" else 0  # the encoders drop int64 max
            lookups = b.op("Where", b.op("Equal", x, b.ints(int(mask), "mask_token")), b.ints(masked, "mask_value"),
                           lookups)
        if oov > 1:
            hashed = b.op("Add", b.op("Mod", x, b.ints(oov, "num_oov"), fmod=0), b.ints(oov_start, "oov_start"))
            lookups = b.op("Where", b.op("Equal", lookups, b.ints(default, "default")), hashed, lookups)
        if output_mode == "int":
            return [lookups]
        out_type = 7 if b.keras_major >= 3 else 1  # Keras 3 encodes into the int64 value dtype
        if out_type == 7:
            node.outputs[0].dtype = "int64"
        return [encode(b, lookups, node.inputs[0].shape or (), output_mode, self._depth(node), out_type)]
