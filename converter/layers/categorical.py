"""Categorical preprocessing: CategoryEncoding, Discretization and IntegerLookup (vocabulary in the config,
or in the .keras archive's assets for an adapted layer: `converter/keras/assets.py` puts it in the config
before the parse, so the spec holds it either way).

All three end in Keras' `encode_categorical_inputs`: 'int' passes indices through; 'one_hot' turns
each index into a row of `depth`; 'multi_hot' / 'count' mark or count the indices of each sample.
TensorFlow computes the last two with bincount, which ignores indices >= depth, and only for inputs
of rank <= 2; a rank-1 input (batch,) is counted over the whole batch, so that case is refused.
Integer outputs get their Keras dtype (the exporter declares it): Discretization 'int' gives int32 in
Keras 3 and its config dtype (int64) in Keras 2; IntegerLookup gives int64 in Keras 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields

T = TypeVar("T")

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


def parse_mode(config: Config, default: str) -> str:
    """output_mode, with Keras 2's 'binary' read as the 'multi_hot' it was renamed to."""
    value = config.text("output_mode", default)
    return "multi_hot" if value == "binary" else value


@dataclass(frozen=True)
class EncodingSpec(LayerSpec):
    """What every categorical layer encodes into (`output_mode`), its default decided per class."""

    output_mode: str = "int"
    sparse: bool = False


def check_encoding(node: Node, spec: EncodingSpec) -> None:
    if spec.output_mode not in MODES:
        _refuse(node, f"has output_mode={spec.output_mode!r}", "supported: " + ", ".join(MODES))
    if spec.sparse:
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


def parse_vocabulary(config: Config, token: Callable[[Any], T]) -> tuple[tuple[T, ...] | None, str | None]:
    """A lookup's (vocabulary, vocabulary file): the config's list (or the one `keras/assets.py` read from
    the .keras assets before parse), or the file name a config points to; (None, None) when neither."""
    value = config.value("vocabulary")
    if isinstance(value, str):
        return None, value
    if isinstance(value, (list, tuple)):
        return tuple(token(v) for v in value), None
    return None, None


def check_vocabulary(node: Node, vocabulary: tuple[Any, ...] | None, vocabulary_file: str | None) -> None:
    """A lookup's vocabulary must be a list by now: the config's, or the one read from the .keras assets."""
    if vocabulary_file is not None:
        _refuse(node, f"names the vocabulary file {vocabulary_file!r} in its config; kconvert does not read files "
                "a model config points to", "build the layer with vocabulary=layer.get_vocabulary() and save again")
    if vocabulary is None:
        _refuse(node, "keeps its vocabulary outside the config (an adapt()ed layer), and this file holds no "
                "assets/.../vocabulary.txt for it: a .keras archive keeps it in assets/, a .h5 file drops it",
                "save the model as .keras, or build the layer with vocabulary=layer.get_vocabulary()")


def as_int64(node: Node, b: OpBuilder, x: str) -> str:
    return x if node.inputs[0].dtype == "int64" else b.op("Cast", x, to=7)


@dataclass(frozen=True)
class CategoryEncodingSpec(EncodingSpec):
    num_tokens: int | None = None  # required: config_fields refuses a config without it
    output_mode: str = "multi_hot"
    dtype: str | None = None


@LAYERS.register("CategoryEncoding")
class CategoryEncoding(LayerHandler[CategoryEncodingSpec]):
    required_arguments = ("num_tokens",)

    def parse(self, config: Config) -> CategoryEncodingSpec:
        return parse_fields(CategoryEncodingSpec, config, output_mode=parse_mode(config, "multi_hot"),
                            dtype=dtype_name(config.value("dtype")))

    def check(self, node: Node) -> None:
        spec = self.spec(node)
        check_encoding(node, spec)
        if spec.output_mode == "int":
            _refuse(node, "has output_mode='int'", "CategoryEncoding encodes one_hot, multi_hot or count")
        if spec.num_tokens is None or spec.num_tokens < 1:
            _refuse(node, f"has num_tokens={spec.num_tokens!r}", "set num_tokens to a positive int")
        if spec.dtype not in (None, "float32"):
            _refuse(node, f"outputs {spec.dtype}", "kconvert converts float32 outputs")
        if node.call.has_tensor("count_weights"):
            _refuse(node, "is called with count_weights", "kconvert converts unweighted counts")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        return [encoded_shape(node, input_shapes[0], spec.output_mode, _depth(spec))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ids, spec = as_int64(node, b, inputs[0]), self.spec(node)
        return [encode(b, ids, node.inputs[0].shape or (), spec.output_mode, _depth(spec))]


def _depth(spec: CategoryEncodingSpec) -> int:
    assert spec.num_tokens is not None  # check() refused a layer without num_tokens
    return spec.num_tokens


@dataclass(frozen=True)
class DiscretizationSpec(EncodingSpec):
    bin_boundaries: tuple[float, ...] = ()  # () before adapt(): refused
    # The dtype of the 'int' output: Keras 2 stores it (int64) as the layer dtype; Keras 3 outputs int32.
    int_dtype: str = "int32"


@LAYERS.register("Discretization")
class Discretization(LayerHandler[DiscretizationSpec]):
    """Bucket index = how many boundaries are <= x (tf Bucketize), then encoded."""

    def parse(self, config: Config) -> DiscretizationSpec:
        wanted = dtype_name(config.value("dtype"))
        return parse_fields(DiscretizationSpec, config, output_mode=parse_mode(config, "int"),
                            int_dtype=wanted if wanted in ("int32", "int64") else "int32")

    def check(self, node: Node) -> None:
        check_encoding(node, self.spec(node))
        if not self.spec(node).bin_boundaries:
            _refuse(node, "has no bin_boundaries in its config", "adapt() the layer (or pass bin_boundaries) "
                    "before saving")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        if spec.output_mode == "int":
            node.outputs[0].dtype = spec.int_dtype
        return [encoded_shape(node, input_shapes[0], spec.output_mode, len(spec.bin_boundaries) + 1)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, spec = inputs[0], self.spec(node)
        if node.inputs[0].dtype != "float32":
            x = b.op("Cast", x, to=1)  # Bucketize compares against float32 boundaries
        bounds = np.asarray(spec.bin_boundaries, np.float32)
        above = b.op("Cast", b.op("GreaterOrEqual", b.unsqueeze(x, [-1]), b.const(bounds, "bin_boundaries")), to=7)
        index = b.reduce("ReduceSum", above, [-1], keepdims=False)
        if spec.output_mode == "int":
            return [b.op("Cast", index, to=ONNX_TYPES[spec.int_dtype])]
        return [encode(b, index, node.inputs[0].shape or (), spec.output_mode, len(bounds) + 1)]


@dataclass(frozen=True)
class IntegerLookupSpec(EncodingSpec):
    vocabulary: tuple[int, ...] | None = None  # None: not in the config nor in the .keras assets
    vocabulary_file: str | None = None  # a file the config names instead (refused)
    mask_token: int | None = None
    oov_token: int = -1
    num_oov_indices: int = 1
    oov_method: str = "floormod"
    invert: bool = False
    pad_to_max_tokens: bool = False
    max_tokens: int | None = None
    # The ONNX type of an encoded (non-'int') output: Keras 3 encodes into int64, Keras 2 into float32.
    encoded_type: int = 1


@LAYERS.register("IntegerLookup")
class IntegerLookup(LayerHandler[IntegerLookupSpec]):
    """Token -> index: [mask] [OOV x num_oov_indices] [vocabulary...]; unknown tokens go to the OOV index
    (with several, `token mod num_oov_indices`: Keras' default 'floormod'), the mask token to 0 ('int')
    or nowhere (the encoded modes). The vocabulary comes from the config or the .keras assets."""

    vocabulary_asset = "int"

    argument_kinds = {"mask_token": "int_or_null", "oov_token": "int", "vocabulary": "int_tokens"}

    def parse(self, config: Config) -> IntegerLookupSpec:
        vocabulary, vocabulary_file = parse_vocabulary(config, int)
        return parse_fields(IntegerLookupSpec, config, vocabulary=vocabulary, vocabulary_file=vocabulary_file,
                            output_mode=parse_mode(config, "int"), encoded_type=7 if config.ctx.keras3 else 1)

    def check(self, node: Node) -> None:
        spec = self.spec(node)
        check_encoding(node, spec)
        check_vocabulary(node, spec.vocabulary, spec.vocabulary_file)
        if spec.invert:
            _refuse(node, "has invert=True", "kconvert converts token -> index lookups")
        oov = spec.num_oov_indices
        if oov < 1:
            _refuse(node, f"has num_oov_indices={oov}", "Keras raises on unknown tokens then; use 1 or more")
        if oov > 1 and spec.oov_method != "floormod":
            _refuse(node, f"hashes unknown tokens with oov_method={spec.oov_method!r} (FarmHash)",
                    "kconvert reproduces oov_method='floormod' only")

    def _layout(self, node: Node) -> tuple[list[int], int, int]:
        """(tokens, oov_start, token_start), as Keras' set_vocabulary strips leading special tokens."""
        spec = self.spec(node)
        oov_start = 1 if spec.mask_token is not None and spec.output_mode == "int" else 0
        token_start = oov_start + spec.num_oov_indices
        vocabulary = list(spec.vocabulary or ())
        special = [spec.mask_token] * oov_start + [spec.oov_token] * (token_start - oov_start)
        tokens = vocabulary[token_start:] if vocabulary[:token_start] == special else vocabulary
        return tokens, oov_start, token_start

    def _depth(self, node: Node) -> int:
        tokens, _, token_start = self._layout(node)
        spec = self.spec(node)
        if spec.pad_to_max_tokens and spec.max_tokens is not None:
            return spec.max_tokens
        return token_start + len(tokens)

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        if self.spec(node).output_mode == "int":
            node.outputs[0].dtype = "int64"
        return [encoded_shape(node, input_shapes[0], self.spec(node).output_mode, self._depth(node))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, spec = as_int64(node, b, inputs[0]), self.spec(node)
        tokens, oov_start, token_start = self._layout(node)
        oov = spec.num_oov_indices
        default = oov_start if oov == 1 else -1
        hits = b.op("Cast", b.op("Equal", b.unsqueeze(x, [-1]), b.ints(tokens, "vocabulary")), to=7)
        found = b.reduce("ReduceSum", hits, [-1], keepdims=False)
        index = b.reduce("ReduceSum", b.op("Mul", hits, b.ints(np.arange(token_start, token_start + len(tokens))
                                                                   .tolist(), "indices")), [-1], keepdims=False)
        lookups = b.op("Where", b.op("Cast", found, to=9), index, b.ints(default, "oov_index"))
        if spec.mask_token is not None:
            masked = np.iinfo(np.int64).max if spec.output_mode != "int" else 0  # the encoders drop int64 max
            lookups = b.op("Where", b.op("Equal", x, b.ints(spec.mask_token, "mask_token")),
                           b.ints(masked, "mask_value"), lookups)
        if oov > 1:
            hashed = b.op("Add", b.op("Mod", x, b.ints(oov, "num_oov"), fmod=0), b.ints(oov_start, "oov_start"))
            lookups = b.op("Where", b.op("Equal", lookups, b.ints(default, "default")), hashed, lookups)
        if spec.output_mode == "int":
            return [lookups]
        if spec.encoded_type == 7:
            node.outputs[0].dtype = "int64"
        return [encode(b, lookups, node.inputs[0].shape or (), spec.output_mode, self._depth(node),
                       spec.encoded_type)]
