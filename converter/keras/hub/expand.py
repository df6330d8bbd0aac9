"""Keras Hub model entries -> Functional configs, before the graph is built.

A file's top-level model, or a model nested as a layer of the user's own Functional model, may be a Keras
Hub backbone or task (`registered_name` `keras_hub>BertBackbone`, module `keras_hub.src.models...`). Each
is replaced by the Functional config its recipe builds; everything after (topology, weights, passes)
treats it as any Functional model. Preprocessors and tokenizers turn strings into token ids in Python:
they are no graph, so they are refused by name, with the backbone's way out.
"""

from __future__ import annotations

import warnings
from typing import Any

from converter.errors import FormatError, KconvertWarning, UnsupportedLayerError
from converter.keras.hub import catalog  # noqa: F401  (registers every recipe)
from converter.keras.hub.names import PREPROCESSING_SUFFIXES, expected_backbone, hub_class
from converter.keras.hub.recipes import BACKBONES, TASKS, HubModel, StoredWeights
from converter.keras.weights import WeightSource, saved_object_name

# Where the README documents Keras Hub models (GitHub's anchor of the "Keras Hub models" heading).
README_SECTION = "README.md#keras-hub-models"


def expand_hub_models(raw: Any, weights: WeightSource | None) -> Any:
    """The model config with every Keras Hub model entry (top level, or a layer of a Functional or
    Sequential model at the top level) replaced by its Functional config."""
    cls = hub_class(raw)
    if cls is not None:
        config = _model_config(raw, cls)
        return {"class_name": "Functional", "config": expand(cls, config, StoredWeights(weights))}
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        return raw
    layers = raw["config"].get("layers")
    if not isinstance(layers, list) or not any(hub_class(layer) in _MODELS for layer in layers):
        return raw
    expanded = [_expand_layer(layer, weights) for layer in layers]
    return {**raw, "config": {**raw["config"], "layers": expanded}}


_MODELS = {**BACKBONES, **TASKS}


def _expand_layer(layer: Any, weights: WeightSource | None) -> Any:
    cls = hub_class(layer)
    if cls is None or cls not in _MODELS:
        return layer
    config = _model_config(layer, cls)
    model = HubModel.of(cls, config, StoredWeights(weights).below(saved_object_name(cls)))
    entry = {"class_name": "Functional", "name": model.name, "saved_class": cls,
             "config": expand(cls, config, model.weights)}
    return {**entry, "inbound_nodes": layer.get("inbound_nodes")}


def _model_config(entry: dict[str, Any], cls: str) -> dict[str, Any]:
    config = entry.get("config")
    if not isinstance(config, dict):
        raise UnsupportedLayerError(f"Keras Hub {cls}: the entry's config is not an object", layer=cls,
                                    hint="is the file's config complete and undamaged?")
    return config


def expand(cls: str, config: dict[str, Any], weights: StoredWeights) -> dict[str, Any]:
    """The Functional config of Keras Hub class `cls` built with constructor arguments `config`."""
    model = HubModel.of(cls, config, weights)
    policy = dtype_policy(model)
    if cls in BACKBONES:
        _warn_low_precision(model, policy)
        return BACKBONES[cls](model).config()
    if cls in TASKS:
        return _task_config(model, policy)
    raise _refusal(cls, model.name)


def _task_config(task: HubModel, policy: str) -> dict[str, Any]:
    entry = task.args.value("backbone")
    backbone_cls = hub_class(entry)
    if backbone_cls is None or backbone_cls not in BACKBONES:
        raise _refusal(backbone_cls or repr(entry)[:60], task.name)
    if task.args.value("preprocessor") is not None:
        warnings.warn(f"{task.class_name} '{task.name}' was saved with its preprocessor, which maps strings to "
                      "token ids in Python and is not converted: the ONNX model takes the token ids (see "
                      f"{README_SECTION} for running the tokenizer beside it)", KconvertWarning, stacklevel=2)
    _check_pairing(task, backbone_cls)
    config = _model_config(entry, backbone_cls)
    backbone = HubModel.of(backbone_cls, config, task.weights.below(saved_object_name(backbone_cls)))
    # One warning for the model: the task's policy, else its backbone's (Keras gives both the same one).
    backbone_policy = dtype_policy(backbone)
    _warn_low_precision(task, policy if policy != FLOAT32 else backbone_policy)
    return TASKS[task.class_name](task, backbone, BACKBONES[backbone_cls](backbone))


FLOAT32 = "float32"
# Policies whose stored weights (bfloat16 or float16, read as float32 exactly; float32 for the mixed ones)
# the float32 recipes compute with. Gemma and Llama presets load as bfloat16 by default.
LOW_PRECISION = frozenset({"bfloat16", "float16", "mixed_bfloat16", "mixed_float16"})


def dtype_policy(model: HubModel) -> str:
    """The model's dtype policy name (float32 where none is given); others than float32 and LOW_PRECISION
    (int8 / float8 quantization, float64) are refused by name."""
    policy = model.args.value("dtype")
    inner = policy.get("config") if isinstance(policy, dict) else None
    name = inner.get("name") if isinstance(inner, dict) else policy
    if name is None:
        return FLOAT32
    if isinstance(name, str) and (name == FLOAT32 or name in LOW_PRECISION):  # a hostile list is no set member
        return name
    raise UnsupportedLayerError(f"{model.class_name} '{model.name}' has the dtype policy {str(name)[:40]!r}",
                                layer=model.name, hint="kconvert converts Keras Hub models with the dtype policy "
                                f"float32, {', '.join(sorted(LOW_PRECISION))} (computed in float32): load it with "
                                "dtype=\"float32\" (from_preset(..., dtype=\"float32\")) and save it again")


def _warn_low_precision(model: HubModel, policy: str) -> None:
    """The recipes write float32 layers: a low-precision model's ONNX computes in float32 from its stored
    weights, so it differs from Keras' own results by Keras' low-precision rounding."""
    if policy == FLOAT32:
        return
    warnings.warn(f"{model.class_name} '{model.name}' has the dtype policy {policy!r}: the ONNX model computes in "
                  f"float32 from the stored weights, so its results differ from Keras' {policy} results by their "
                  "rounding (bfloat16 keeps 8 significant bits): --check against Keras needs looser tolerances, "
                  "e.g. --rtol 5e-2 --atol 5e-2 for outputs of order 1, or check against the model loaded with "
                  "dtype=\"float32\" and saved again", KconvertWarning, stacklevel=2)


def _check_pairing(task: HubModel, backbone_cls: str) -> None:
    """A task's head reads its own backbone's outputs (BERT's pooled output, a causal LM's token embedding):
    a task wrapping another architecture's backbone is no file Keras Hub writes. A subclass that shares
    the backbone's recipe (Llama3Backbone in a LlamaCausalLM) is the same graph."""
    expected = expected_backbone(task.class_name)
    if expected is None or BACKBONES.get(expected) is BACKBONES[backbone_cls]:
        return
    raise FormatError(f"{task.class_name} '{task.name}' wraps a {backbone_cls}, not a {expected}", layer=task.name,
                      hint=f"Keras Hub's {task.class_name} is built on a {expected}; is the file's config undamaged?")


def _refusal(cls: str, name: str) -> UnsupportedLayerError:
    if cls.endswith(PREPROCESSING_SUFFIXES):
        return UnsupportedLayerError(
            f"{cls} '{name}' is a Keras Hub preprocessor or tokenizer: it maps strings (or raw images) to model "
            "inputs in Python and holds no layer graph, so it has no ONNX form", layer=name,
            hint="convert the backbone or task saved beside it (its inputs are token ids), and run the tokenizer "
                 f"before the ONNX model: {README_SECTION}")
    supported = ", ".join(sorted(_MODELS))
    return UnsupportedLayerError(f"Keras Hub class {cls} ('{name}') is not one kconvert converts", layer=name,
                                 hint=f"converted Keras Hub classes: {supported}; {README_SECTION}")

