"""Keras/TensorFlow reference outputs for cross-checks. Imports TensorFlow lazily, only when asked.

Keras 3 files (.keras, or .h5/json recorded as Keras 3) load with `keras`; older files with `tf_keras`
(Keras 2). Model files are untrusted: a file holding a Lambda layer is never given to Keras, because
tf_keras deserialises Lambda bytecode from .h5 even in safe mode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import KconvertError, UnsupportedLayerError
from converter.keras.artifacts import KerasArtifact

TF_HINT = "install the cross-check extra: pip install 'kconvert[tf]'"


class ReferenceUnavailable(KconvertError):
    """No installed Keras can compute reference outputs for this file."""


def _import(module: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return __import__(module)
    except ImportError:
        raise ReferenceUnavailable(f"--check needs {module}, which is not installed", hint=TF_HINT) from None


def refuse_code_layers(config: Any, path: str = "model") -> None:
    """Raise if any layer (at any depth) is a Lambda: loading it into Keras would run its code."""
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            name = (config.get("config") or {}).get("name", "?")
            raise UnsupportedLayerError(
                f"Lambda layer '{name}' holds Python code; kconvert does not load it into Keras to compare",
                layer=str(name), hint="compare this model by other means; its code is never executed")
        for value in config.values():
            refuse_code_layers(value, path)
    elif isinstance(config, list):
        for value in config:
            refuse_code_layers(value, path)


def _keras_major(artifact: KerasArtifact) -> int:
    if artifact.format == "keras":
        return 3
    version = artifact.keras_version or ""
    return 3 if version.startswith("3") else 2


def load_keras_model(artifact: KerasArtifact, weights: str | Path | None = None) -> Any:
    refuse_code_layers(artifact.model_config)
    major = _keras_major(artifact)
    keras = _import("keras") if major == 3 else _import("tf_keras")
    path = str(artifact.path)
    try:
        if artifact.format == "json":
            model = keras.models.model_from_json(json.dumps(artifact.model_config))
            model.load_weights(str(weights))
            return model
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except KconvertError:
        raise
    except Exception as err:  # Keras' own loader failed: say so, the conversion itself stands
        raise ReferenceUnavailable(
            f"Keras {major} could not load {artifact.path.name}: {type(err).__name__}: {str(err)[:200]}",
            hint="the ONNX file was written; only the cross-check is unavailable") from None


def reference_outputs(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [np.asarray(o) for o in outputs]
