"""How a config entry names a Keras Hub class (imports nothing heavy: `kconvert batch` asks while it looks
for models)."""

from __future__ import annotations

from typing import Any

# Keras Hub classes that map strings (or raw images, audio) to model inputs in Python.
PREPROCESSING_SUFFIXES = ("Preprocessor", "Tokenizer", "ImageConverter", "AudioConverter", "VideoConverter")


def hub_class(entry: Any) -> str | None:
    """The Keras Hub class of a config entry (`BertBackbone`), or None for anything else."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        return None
    module, registered = entry.get("module"), entry.get("registered_name")
    from_hub = (isinstance(module, str) and module.startswith("keras_hub.")) or \
        (isinstance(registered, str) and registered.startswith("keras_hub>"))
    return entry["class_name"].removeprefix("keras_hub>") if from_hub else None


def is_preprocessing(entry: Any) -> bool:
    """A Keras Hub preprocessor or tokenizer entry (a preset folder's tokenizer.json, preprocessor.json)."""
    cls = hub_class(entry)
    return cls is not None and cls.endswith(PREPROCESSING_SUFFIXES)


# Keras Hub names a task after its backbone (`backbone_cls`): BertTextClassifier wraps a BertBackbone.
TASK_SUFFIXES = ("TextClassifier", "CausalLM", "ImageClassifier")


def expected_backbone(task_class: str) -> str | None:
    """The backbone class a Keras Hub task class is built on, by Keras Hub's naming (None: not a task)."""
    suffix = next((s for s in TASK_SUFFIXES if task_class.endswith(s)), None)
    return task_class[: -len(suffix)] + "Backbone" if suffix else None
