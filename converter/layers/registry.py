"""The handler registry: an object filled by explicit decorators, one handler per Keras class name."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast

import numpy as np

from converter.errors import ShapeError
from converter.ir import Node, Shape
from converter.ir.spec import LayerSpec, NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.spec import Config

S = TypeVar("S", bound=LayerSpec)


class LayerHandler(ABC, Generic[S]):
    """Parse, shape rule, layout rule and ONNX emission for one layer family.

    A handler is a configured instance (`Conv(rank=2)`), registered under the Keras class names it
    converts. `parse` turns the validated config into the family's frozen spec once, at the boundary;
    every other method reads `self.spec(node)`, typed, never the config.

    Traits are what passes ask of a layer class; a pass never names a class (see docs/architecture.md):

    Layout flags are read by the layout pass:
    - `channels_first_only`: ONNX has the op only channels-first; a channels_last node is rewritten
      to channels_first with Transposes around it (which later cancel between neighbours).
    - `layout_agnostic`: elementwise on every input; Transposes sink through it.
    """

    channels_first_only: bool = False
    layout_agnostic: bool = False

    # Masking (Keras' compute_mask), read by passes/masking.py and the Keras writer:
    # the incoming mask leaves unchanged (Keras' supports_masking default) ...
    passes_mask: bool = False
    # ... or only in files Keras 1/2 wrote (Keras 3 drops it at SpatialDropout);
    passes_mask_before_keras3: bool = False
    # the layer applies a `mask` tensor argument (RNNs, GlobalAveragePooling1D);
    consumes_mask: bool = False
    # How the masking pass hands this attention layer its inputs' masks: "dot" (Attention,
    # AdditiveAttention: mask=[query_mask, value_mask]) or "heads" (MultiHeadAttention family: one
    # attention_mask built from both); None for layers that are not attention.
    attention_mask_kind: str | None = None
    # Keras 3 replaces masked positions of this merge's inputs, which kconvert refuses to guess.
    masked_merge_refused_in_keras3: bool = False
    # A 1-D sequence reader: an `input_dim`/`input_length` shorthand spells (batch, steps, features).
    consumes_sequence: bool = False
    # Reads integer token ids (batch, steps): its `input_dim` is a vocabulary size, not a feature count.
    takes_token_ids: bool = False
    # A lookup whose adapted vocabulary a .keras archive keeps as an asset (keras/assets.py reads it before
    # the parse): the type of its tokens, "str" or "int"; None for layers without one.
    vocabulary_asset: str | None = None
    # The channel-wise linear layer a following BatchNormalization can fold into (see `fold_scale`).
    folds_batch_norm: bool = False
    # A max pooling, which a ZeroPadding before it folds into when the padded values cannot win.
    absorbs_zero_padding: bool = False
    # Global pooling over the spatial axes (layout folds keep its dims for a following Reshape).
    global_pooling: bool = False
    # Changes only the shape of its input, never a value (runtime input generation looks through it).
    shape_only: bool = False

    # Facts about the Keras classes themselves, read by the Keras-archive writer (export/keras*.py), the
    # legacy weight upgrade (keras/legacy_weights.py) and the README table (docs.py). A handler serving
    # several class names whose facts differ gives a mapping by class name instead of one value.
    # The Keras 3 class's own `__init__` arguments (Keras 3.15, space-separated, without Layer's `name`,
    # `trainable`, `dtype`, `activity_regularizer`); None: Keras 3 has no built-in equivalent.
    keras3_args: str | Mapping[str, str] | None = None
    # The Keras 3 class takes no `**kwargs`: it accepts exactly `keras3_args`, not Layer's arguments.
    keras3_closed: bool = False
    # Keras 3 records this class as a tensor operation of that module (`keras.src.ops.numpy`), not a layer.
    keras_op_module: str | None = None
    # Called on one list of tensors (`Add()([a, b])`) rather than on several positional arguments.
    keras_list_input: bool = False
    # An RNN layer call: tensors after the sequence are its `initial_state`.
    keras_rnn_call: bool = False
    # A Keras RNN (its weights live in the `cell` sub-object): the activation argument of each gate,
    # in the order the gates' column blocks have in its kernels.
    recurrent_gates: tuple[str, ...] | Mapping[str, tuple[str, ...]] = ()
    # The activation arguments applied to an affine map of `affine_weights` only: a Keras 2 hard_sigmoid
    # there is Keras 3's of the map scaled by 1.2, so the writer can upgrade it.
    affine_activations: tuple[str, ...] | Mapping[str, tuple[str, ...]] = ()
    # The weights forming that pre-activation (scaled together, the function stays the same).
    affine_weights: tuple[str, ...] = ("kernel", "bias")
    # Per class name, the rank of a kernel whose axes Keras 1 / Theano files order differently.
    legacy_kernel_rank: Mapping[str, int] = {}
    # Which Keras has the class (the README marks it; tests/test_readme.py checks it against Keras):
    # "" both Keras 2 and 3, "keras3" or "keras2" only that one, "file" not a `keras.layers` class but
    # found in saved files (Keras 3 op nodes, Keras Applications' own layers, legacy names).
    keras_availability: str | Mapping[str, str] = ""

    # Facts the boundary's config validation (keras/config_fields.py) asks of Keras' own classes:
    # the arguments whose name means something else in this class than in most (ZeroPadding's `padding` is
    # amounts, not a mode; UpSampling's `size` a repeat count): argument name -> the name of a kind
    # config_fields.KINDS defines ("amounts", "window", "positive", "numbers", "int_tokens", ...);
    argument_kinds: Mapping[str, str] = {}
    # the arguments the class cannot be built without (Keras has no default for them);
    required_arguments: tuple[str, ...] = ()
    # a layer running recurrent cells given in its `cell` argument (RNN): each cell class it converts -> the
    # layer class computing the same, whose handler's facts the cell's config shares (cells have no handler).
    cell_layers: Mapping[str, str] = {}

    spec_type: type[LayerSpec] = NoArgs

    def parse(self, config: Config) -> S:
        """The layer's typed spec, read once from its validated config. The default (for layers without
        arguments that change the output) reads nothing."""
        return cast(S, self.spec_type())

    def spec(self, node: Node) -> S:
        """The node's spec, typed as this handler's (the boundary parsed it with `parse`)."""
        return cast(S, node.spec)

    # kconvert's own node kinds (inserted by passes) are not Keras classes; tables leave them out.
    internal: bool = False
    # An inference-time identity (Dropout family): the cleanup pass removes it.
    inference_identity: bool = False

    def is_layout_agnostic(self, node: Node) -> bool:
        return self.layout_agnostic

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout-pass hook: the node's inputs of rank `len(perm)` will arrive permuted,
        `physical = transpose(keras_tensor, perm)` (so Keras axis `a` sits at `perm.index(a)`), and its
        outputs of that rank must leave permuted the same way. Adapt the node (`node.spec =
        spec.replace(axis=...)`: an `axis`, a `data_format`, a target shape) and return True; return
        False, changing nothing, to keep Transposes around the node. Elementwise nodes whose tensors all
        have that rank need no change.
        """
        shapes = [t.shape for t in (*node.inputs, *node.outputs)]
        return self.is_layout_agnostic(node) and all(s is not None and len(s) == len(perm) for s in shapes)

    def output_non_negative(self, node: Node) -> bool:
        """Whether every output value is >= 0 (a ReLU, or a fused non-negative activation): the padding
        fold asks. Layers with an `activation` argument answer from it; others override."""
        from converter.layers.activations import NON_NEGATIVE  # activations register handlers: import late

        return getattr(node.spec, "activation", None) in NON_NEGATIVE

    def is_channels_first(self, node: Node) -> bool:
        """Whether the node computes channels_first now (the file asked for it, or the layout pass switched it)."""
        return getattr(node.spec, "data_format", None) == "channels_first"

    def switch_to_channels_first(self, node: Node) -> None:
        """Layout-pass hook for `channels_first_only` handlers: the node computes channels_first from now on
        (its spec's `data_format`; a handler whose spec has none overrides this and `is_channels_first`)."""
        if any(f.name == "data_format" for f in dataclasses.fields(node.spec)):
            node.spec = node.spec.replace(data_format="channels_first")

    def check(self, node: Node) -> None:  # noqa: B027  (most layers accept every config)
        """Raise UnsupportedLayerError for configurations that cannot be converted."""

    def weight_names(self, node: Node) -> list[str]:
        """Names for the stored arrays, in the order Keras stores them."""
        return []

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        """Expected weight shapes; None entries are not checked."""
        return {}

    def num_outputs(self, node: Node) -> int:
        return 1

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        return [input_shapes[0]]

    def output_dtypes(self, node: Node) -> list[str] | None:
        """The outputs' dtypes when they are not float32 (a comparison's bool, a cast's int32); shape
        inference records them on the tensors, which the inputs' dtypes already hold."""
        return None

    @abstractmethod
    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        """Emit ONNX ops for the node; return the names of its outputs."""

    def param_count(self, node: Node) -> int:
        return int(sum(np.prod(w.shape) for w in node.weights.values()))


H = TypeVar("H", bound=type[LayerHandler[Any]])


class Registry:
    def __init__(self, what: str) -> None:
        self.what = what
        self._handlers: dict[str, LayerHandler[Any]] = {}

    def register(self, *names: str) -> Callable[[H], H]:
        """Class decorator for a handler taking no arguments; configured handlers use `add`."""
        def decorate(cls: H) -> H:
            instance = cls()
            for name in names:
                self.add(name, instance)
            return cls

        return decorate

    def get(self, name: str) -> LayerHandler[Any] | None:
        return self._handlers.get(name)

    def add(self, name: str, handler: LayerHandler[Any]) -> None:
        """Register an instance (the extension API's path); a taken name raises like `register`."""
        if name in self._handlers:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._handlers[name] = handler

    def remove(self, name: str) -> LayerHandler[Any] | None:
        return self._handlers.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def find_class(self, kind: str) -> LayerHandler[Any] | None:
        """The handler of Keras class `kind`, with or without its package prefix: Keras saves a class
        registered as `my>Scale` as "my>Scale" in .h5 files and as "Scale" in .keras archives (whose
        `registered_name` holds the prefix), and a user may register either spelling."""
        found = self._handlers.get(kind)
        if found is not None or PACKAGE_SEP in kind:
            return found if found is not None else self._handlers.get(kind.rsplit(PACKAGE_SEP, 1)[-1])
        prefixed = [h for n, h in self._handlers.items() if n.endswith(PACKAGE_SEP + kind)]
        return prefixed[0] if len(prefixed) == 1 else None

    def public_names(self) -> list[str]:
        """Keras class names, without kconvert's internal node kinds."""
        return sorted(n for n, h in self._handlers.items() if not h.internal)


# Between a registered Keras class's package and its name (`keras.saving.register_keras_serializable`).
PACKAGE_SEP = ">"
LAYERS = Registry("keras layer")
# Handlers for single Lambda layers, keyed by layer name (filled only by converter.extensions).
LAMBDAS = Registry("lambda layer")


def handler_for(node: Node) -> LayerHandler[Any] | None:
    """The handler of one node: a Lambda registered by its layer name first, then the class name.

    A Lambda inside a nested model has the layer name `outer/inner`; it matches a registration of
    the full name or of its own name (the last component).
    """
    if node.kind == "Lambda":
        for key in (node.layer_name, node.layer_name.rsplit("/", 1)[-1]):
            handler = LAMBDAS.get(key)
            if handler is not None:
                return handler
    return LAYERS.find_class(node.kind)


def expect_rank(node: Node, shape: Shape, rank: int, meaning: str) -> None:
    """Keras-worded rank check; suggests dropping a leading dim that looks like a batch given twice."""
    if len(shape) == rank:
        return
    shown = "(" + ", ".join("batch" if i == 0 else ("None" if not isinstance(d, int) else str(d))
                           for i, d in enumerate(shape)) + ")"
    hint = (f"the layer before '{node.layer_name}' (or the model's input shape) must give it {rank} dims, "
            "batch included")
    if len(shape) == rank + 1:
        corrected = tuple(shape[2:])
        hint = ("input_shape excludes the batch dimension — did you mean "
                f"input_shape={_tuple_text(corrected)}?")
    raise ShapeError(
        f"{node.kind} '{node.layer_name}' expects a {rank}-D input {meaning} but receives {shown}",
        layer=node.layer_name, hint=hint)


def _tuple_text(dims: Shape) -> str:
    parts = ["None" if not isinstance(d, int) else str(d) for d in dims]
    return f"({parts[0]},)" if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def expect_min_rank(node: Node, shape: Shape, rank: int) -> None:
    if len(shape) < rank:
        raise ShapeError(f"{node.kind} '{node.layer_name}' expects an input of rank >= {rank}, got rank {len(shape)}",
                         layer=node.layer_name,
                         hint=f"the layer before '{node.layer_name}' (or the model's input shape) must give it at "
                              f"least {rank} dims, batch included")
