"""Keras/TensorFlow reference outputs for cross-checks. Imports TensorFlow lazily, only when asked.

Keras 3 files (.keras, or .h5/json recorded as Keras 3) load with `keras`; older files with `tf_keras`
(Keras 2). Model files are untrusted: a file holding a Lambda layer is never given to Keras, because
tf_keras deserialises Lambda bytecode from .h5 even in safe mode.

The reference must run on any x86-64 CPU. Without oneDNN (TensorFlow's default on CPUs lacking
AVX-512), TensorFlow has no CPU kernel for channels_first convolutions and poolings. So TensorFlow is
imported with oneDNN on (unless the user set TF_ENABLE_ONEDNN_OPTS), and where those kernels are still
missing (oneDNN forced off, TensorFlow imported earlier by someone else) a model holding a
channels_first layer is run compiled by XLA, which has them. Both agree with Keras' channels_last
arithmetic within float32 rounding (tests/test_reference_portable.py).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import KconvertError, UnsupportedLayerError
from converter.keras.artifacts import KerasArtifact

TF_HINT = "install the cross-check extra: pip install 'kconvert-onnx[tf]'"
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


class ReferenceUnavailable(KconvertError):
    """No installed Keras can compute reference outputs for this file."""


class ReferenceFailed(UnsupportedLayerError):
    """Keras loaded the model but TensorFlow cannot compute its outputs on this machine."""


@contextmanager
def _onednn_during_import() -> Iterator[None]:
    """oneDNN on while TensorFlow is first imported (it reads the variable then), unset again afterwards:
    nothing leaks into the user's later imports or child processes. A value the user set is kept."""
    if "tensorflow" in sys.modules or ONEDNN_ENV in os.environ:
        yield
        return
    os.environ[ONEDNN_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(ONEDNN_ENV, None)


def _import(module: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _onednn_during_import():
            return importlib.import_module(module)
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


def _loader_major(artifact: KerasArtifact) -> int:
    """Which Keras loads the file: a .keras archive is Keras 3's format; otherwise the file's major version
    (resolved once, in converter/keras/versions.py), Keras 1 files being read by Keras 2."""
    if artifact.format == "keras":
        return 3
    return 3 if artifact.keras_major == 3 else 2


def load_keras_model(artifact: KerasArtifact, weights: str | Path | None = None) -> Any:
    refuse_code_layers(artifact.model_config)
    major = _loader_major(artifact)
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
    """Keras' outputs for `inputs` (channels_last arrays as Keras takes them), one array per output."""
    feed = inputs if len(inputs) > 1 else inputs[0]
    failures = _tensorflow_failures()
    try:
        outputs = _xla_call(model, feed) if needs_xla(model) else model(feed, training=False)
    except failures as err:
        raise _reference_failed(model, err) from None
    return _flatten(outputs)


def _flatten(outputs: Any) -> list[np.ndarray]:
    """Keras' outputs in model order: a tensor, or lists / dicts of them, nested as the model declares."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [array for item in outputs for array in _flatten(item)]
    return [np.asarray(outputs)]


def needs_xla(model: Any) -> bool:
    """True when the model holds a channels_first convolution or pooling and TensorFlow lacks its
    kernels on this device. XLA only where needed: it compiles for seconds and refuses some ops
    (bicubic resize), so models without such a layer always run eagerly."""
    return holds_channels_first_conv(model) and _runs_on_tensorflow(model) and channels_first_kernels_missing()


def _xla_call(model: Any, feed: Any) -> Any:
    """Run the model compiled by XLA, whose CPU backend has channels_first convolutions and poolings."""
    tf = _import("tensorflow")
    return tf.function(lambda x: model(x, training=False), jit_compile=True)(feed)


def holds_channels_first_conv(model: Any) -> bool:
    """Any convolution or pooling, at any depth (nested models, wrappers, RNN cells), stating
    channels_first (Keras 1: 'th'). Others (upsampling, flatten, global pooling) run on any CPU."""
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed model states no config; it runs eagerly
        return False
    return _states_channels_first(config)


# Layers TensorFlow runs through Conv*/MaxPool/AvgPool ops, whose NCHW CPU kernels come with oneDNN.
_NEEDS_NCHW_KERNEL = re.compile(r"conv|pooling|spectrogram", re.IGNORECASE)


def _states_channels_first(config: Any) -> bool:
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(inner, dict) and _is_channels_first_kernel_layer(str(config.get("class_name", "")), inner):
            return True
        return any(_states_channels_first(v) for v in config.values())
    if isinstance(config, (list, tuple)):
        return any(_states_channels_first(v) for v in config)
    return False


def _is_channels_first_kernel_layer(class_name: str, config: dict[str, Any]) -> bool:
    first = config.get("data_format") == "channels_first" or config.get("dim_ordering") == "th"
    global_reduction = class_name.startswith(("Global", "Adaptive"))
    return first and not global_reduction and _NEEDS_NCHW_KERNEL.search(class_name) is not None


def _runs_on_tensorflow(model: Any) -> bool:
    if type(model).__module__.startswith("tf_keras"):
        return True
    keras = sys.modules.get("keras")
    return keras is not None and keras.backend.backend() == "tensorflow"


@functools.cache
def channels_first_kernels_missing() -> bool:
    """Probe once, on tiny tensors, whether eager TensorFlow runs an NCHW Conv2D and MaxPool here."""
    tf = _import("tensorflow")
    image, kernel = tf.zeros((1, 1, 2, 2)), tf.zeros((1, 1, 1, 1))
    try:
        tf.nn.conv2d(image, kernel, 1, "VALID", data_format="NCHW")
        tf.nn.max_pool2d(image, 1, 1, "VALID", data_format="NCHW")
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return True
    return False


def _tensorflow_failures() -> tuple[type[Exception], ...]:
    """What Keras raises when it cannot compute a model: TensorFlow's op errors, and ValueError for
    inputs the model refuses."""
    tf = sys.modules.get("tensorflow")
    return (ValueError,) if tf is None else (ValueError, tf.errors.OpError)


def _reference_failed(model: Any, err: Exception) -> ReferenceFailed:
    name = str(getattr(model, "name", "model"))
    layer, what = _failing_layer(str(err), name)
    return ReferenceFailed(
        f"Keras cannot compute the reference outputs of model '{name}': {what} failed in TensorFlow "
        f"({type(err).__name__}: {_core_message(str(err))})",
        layer=layer, hint=_failure_hint(err))


def _failure_hint(err: Exception) -> str:
    hint = "the ONNX file was written; compare it with stored Keras outputs instead (--reference FILE.npz)"
    if isinstance(err, ValueError) or not channels_first_kernels_missing():
        return hint
    # This TensorFlow runs without oneDNN: channels_first models went through XLA, which refuses some ops.
    return hint + f", or give TensorFlow its channels_first CPU kernels: {ONEDNN_ENV}=1 before it is imported"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED_IN_GRAPH = re.compile(r"^\s*\w+(Error|Exception): ", re.MULTILINE)  # after tf.function's trace
_WRAPPER_PARAGRAPH = re.compile(r"^(Exception encountered|Arguments received|Call arguments received)")
_ARRAY_DUMP = re.compile(r"\[[\[\]\d\s.eE+,-]{20,}\]")
_LAYER_NAMED = re.compile(r"""layer ['"]([^'"]+)['"]""")
_LAYER_CLASS = re.compile(r"calling (\w+)\.call\(\)")


def _core_message(message: str) -> str:
    """TensorFlow's own sentence, without tf.function's trace, Keras' call wrappers, argument and array
    dumps and device prefixes."""
    message = _ANSI.sub("", message)
    raised = list(_RAISED_IN_GRAPH.finditer(message))
    if message.startswith("in user code:") and raised:
        message = message[raised[-1].end():]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", message)]
    core = next((p for p in paragraphs if p and not _WRAPPER_PARAGRAPH.match(p)), paragraphs[0])
    core = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", core)
    return _ARRAY_DUMP.sub("[...]", core)[:300]


def _failing_layer(message: str, model_name: str) -> tuple[str | None, str]:
    """The innermost layer Keras names in its error (tf_keras by name; Keras 3 by class only), and how
    to say it."""
    names = [n for n in _LAYER_NAMED.findall(message) if n != model_name]
    if names:
        return names[-1], f"layer '{names[-1]}'"
    classes = [c for c in _LAYER_CLASS.findall(message) if c not in ("Functional", "Sequential")]
    return None, f"a {classes[-1]} layer" if classes else "the model"
