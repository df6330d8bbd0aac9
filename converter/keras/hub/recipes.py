"""The recipes: one per Keras Hub class, constructor arguments -> the layer graph that constructor builds.

A Keras Hub `.keras` file holds a backbone's (or a task's) constructor arguments, not its layer graph, and
weights stored by the layer paths that constructor creates. A backbone recipe replays the constructor on a
`FunctionalBuilder` and returns the `BackboneGraph` (builder, inputs, outputs, the token embedding's layer);
a task recipe nests that backbone, as Keras does, and adds its head. Recipes never run Keras: they know
each architecture from Keras Hub's source (keras_hub/src/models/<arch>/), version `TESTED_KERAS_HUB`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import FormatError
from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.weights import LayerKey, WeightSource, saved_object_name
from converter.layers.spec import Config, ParseContext

TESTED_KERAS_HUB = "0.32.0"
# Bounds on sizes and counts read from a file: far above any Keras Hub preset (Gemma 3 27B: 62 layers,
# vocabulary 262144, hidden 5376), low enough that a hostile config cannot make a recipe loop for ever.
MAX_SIZE = 1 << 24
MAX_ITEMS = 4096


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class StoredWeights:
    """The arrays a file holds under one model's path (a recipe asks where the config does not say:
    Llama's tied embeddings, EfficientNet's top width)."""

    source: WeightSource | None
    path: tuple[LayerKey, ...] = ()

    def arrays(self, *saved_names: str) -> list[np.ndarray] | None:
        """The arrays of the layer at `saved_names` below this model (None: no weights, or no such layer)."""
        if self.source is None:
            return None
        return self.source.layer_weights(self.path + tuple((n, n) for n in saved_names))

    def below(self, saved_name: str) -> StoredWeights:
        return StoredWeights(self.source, self.path + ((saved_name, saved_name),))


@dataclass(frozen=True)
class HubModel:
    """One Keras Hub model entry of a file: class, name, constructor arguments, stored weights."""

    class_name: str
    name: str
    args: Config
    weights: StoredWeights

    @classmethod
    def of(cls, class_name: str, config: dict[str, Any], weights: StoredWeights) -> HubModel:
        name = config.get("name")
        name = name if isinstance(name, str) and name else saved_object_name(class_name)
        return cls(class_name, name, Config(config, ParseContext(class_name, name, 3)), weights)

    def refuse(self, key: str, why: str) -> FormatError:
        """A constructor argument the architecture cannot have (the file is damaged or hand-edited)."""
        return FormatError(f"{self.class_name} '{self.name}' has {key}={_shown(self.args.value(key))}: {why}",
                           layer=self.name, hint="is the file's config complete and undamaged?")

    # Typed reads of constructor arguments. They come from an untrusted file, and a recipe loops over
    # counts and allocates by sizes: each is checked for its kind and bounded before a recipe uses it.
    def integer(self, key: str, default: int | None = None, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
        value = self._given(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.refuse(key, f"expected an integer from {minimum} to {maximum}")
        return value

    def optional_integer(self, key: str, minimum: int = 1, maximum: int = MAX_SIZE) -> int | None:
        return None if self.args.value(key) is None else self.integer(key, minimum=minimum, maximum=maximum)

    def number(self, key: str, default: float | None = None) -> float:
        value = self._given(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.refuse(key, "expected a finite number")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.args.value(key) is None else self.number(key)

    def flag(self, key: str, default: bool) -> bool:
        value = self._given(key, default)
        if not isinstance(value, bool):
            raise self.refuse(key, "expected true or false")
        return value

    def text(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self._given(key, default)
        if not isinstance(value, str) or (choices and value not in choices):
            raise self.refuse(key, f"expected one of {list(choices)}" if choices else "expected a string")
        return value

    def integers(self, key: str, default: tuple[int, ...] | None = None, minimum: int = 1,
                 maximum: int = MAX_SIZE) -> tuple[int, ...]:
        """A list of integers (stackwise filters, an image shape), at most MAX_ITEMS long."""
        value = self._given(key, default)
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS or not all(
                isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= maximum for v in value):
            raise self.refuse(key, f"expected a list of at most {MAX_ITEMS} integers from {minimum} to {maximum}")
        return tuple(value)

    def items(self, key: str, default: list[Any] | None = None) -> list[Any]:
        """A list argument whose items the recipe reads itself (at most MAX_ITEMS of them)."""
        value = self._given(key, default)
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise self.refuse(key, f"expected a list of at most {MAX_ITEMS} items")
        return value

    def _given(self, key: str, default: Any) -> Any:
        value = self.args.value(key)
        if value is None:
            if default is None:
                raise FormatError(f"{self.class_name} '{self.name}' has no {key}", layer=self.name,
                                  hint=f"Keras Hub's {self.class_name} requires {key}; the config is incomplete")
            return default
        return value


@dataclass
class BackboneGraph:
    """A backbone's graph before it is written out: a task may still call its layers (the reverse
    embedding of a causal LM is the backbone's own token embedding, with the backbone's weights)."""

    builder: FunctionalBuilder
    outputs: Ref | dict[str, Ref]
    token_embedding: str | None = None  # the ReversibleEmbedding layer a causal LM calls in reverse

    def config(self) -> dict[str, Any]:
        return self.builder.build(self.outputs)


BackboneRecipe = Callable[[HubModel], BackboneGraph]
TaskRecipe = Callable[[HubModel, HubModel, BackboneGraph], dict[str, Any]]

BACKBONES: dict[str, BackboneRecipe] = {}
TASKS: dict[str, TaskRecipe] = {}


def backbone(*class_names: str) -> Callable[[BackboneRecipe], BackboneRecipe]:
    def register(recipe: BackboneRecipe) -> BackboneRecipe:
        for name in class_names:
            BACKBONES[name] = recipe
        return recipe
    return register


def task(*class_names: str) -> Callable[[TaskRecipe], TaskRecipe]:
    def register(recipe: TaskRecipe) -> TaskRecipe:
        for name in class_names:
            TASKS[name] = recipe
        return recipe
    return register


def nested_entry(model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """The backbone as a layer of its task: a Functional whose weights sit under the backbone's saved name
    (`layers/bert_backbone/...`), which Keras derives from its class (`saved_class`, see layer_configs)."""
    return {"class_name": "Functional", "name": model.name, "saved_class": model.class_name,
            "config": graph.config()}


def call_backbone(b: FunctionalBuilder, model: HubModel, graph: BackboneGraph) -> Ref | dict[str, Ref]:
    """Give the task the backbone's inputs (same names, shapes, dtypes) and call the nested backbone on
    them; returns the backbone's outputs as refs of the task's graph (a dict keeps the backbone's keys)."""
    inputs = [b.input(name, shape, dtype) for name, shape, dtype in graph.builder.input_specs]
    call = b.model(nested_entry(model, graph), inputs)
    if isinstance(graph.outputs, dict):  # the call's outputs, as Keras flattens a dict: by sorted key
        return {key: Ref(call.layer, call.node, i) for i, key in enumerate(sorted(graph.outputs))}
    return call



def causal_lm(task: HubModel, backbone: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """A causal LM's forward pass (keras_hub CausalLM.call_with_cache without a cache), as Keras Hub builds
    it: the backbone's hidden states through the backbone's own token embedding, called again at the task's
    level in reverse (with the backbone's embedding weights and its logit soft cap). One output, `logits`."""
    if not isinstance(graph.outputs, Ref) or graph.token_embedding is None:
        raise FormatError(f"{task.class_name} '{task.name}' wraps a {backbone.class_name} that returns no hidden "
                          "states for a language-model head (an embedding model's pooled outputs)", layer=task.name,
                          hint="a causal LM's backbone is a plain decoder; is the file's config undamaged?")
    b = FunctionalBuilder(task.name)
    hidden = call_backbone(b, backbone, graph)
    name = graph.token_embedding
    logits = b.layer("ReversibleEmbedding", name, graph.builder.config_of(name), hidden, reverse=True)
    b.share_weights(name, [(backbone.name, saved_object_name(backbone.class_name)),
                           (name, saved_object_name("ReversibleEmbedding"))])
    return b.build({"logits": logits})
