"""Keras reference outputs for cross-checks. Imports Keras and its backend lazily, only when asked.

Keras 3 files (.keras, or .h5/json recorded as Keras 3) load with `keras`, on whichever backend is
installed (TensorFlow, JAX, PyTorch or NumPy: see choose_backend); older files with `tf_keras` (Keras 2),
which needs TensorFlow. Model files are untrusted: a file holding a Lambda layer is never given to Keras, because
tf_keras deserialises Lambda bytecode from .h5 even in safe mode.

The reference must run on any x86-64 CPU. On JAX and PyTorch, Keras runs channels_first convolutions and
poolings natively (lax.conv_general_dilated takes the layout; PyTorch is channels_first itself), so what
follows is TensorFlow's alone. Without oneDNN (TensorFlow's default on CPUs lacking
AVX-512), TensorFlow has no CPU kernel for channels_first convolutions and poolings. So TensorFlow is
imported with oneDNN on (unless the user set TF_ENABLE_ONEDNN_OPTS), and where those kernels are still
missing (oneDNN forced off, TensorFlow imported earlier by someone else) a model holding a
channels_first layer is run compiled by XLA, which has them. Both agree with Keras' channels_last
arithmetic within float32 rounding (tests/test_reference_portable.py).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import FormatError, KconvertError, UnsupportedLayerError, UsageError
from converter.keras.artifacts import KerasArtifact

TF_HINT = "install the cross-check extra: pip install 'kconvert-onnx[tf]'"
KERAS3_HINT = ("install Keras 3 with a light backend: pip install 'kconvert-onnx[keras3]' (JAX), "
               "or the TensorFlow extra: pip install 'kconvert-onnx[tf]'")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
BACKEND_ENV = "KERAS_BACKEND"
# Keras 3 backends in the order one is picked when the user names none (or names one not installed), each
# with the modules it needs: TensorFlow first, as the tf extra installs it, then the light ones. Keras'
# NumPy backend runs convolutions through jax.lax and linear algebra through SciPy: it needs both.
BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow",), "jax": ("jax",), "torch": ("torch",), "numpy": ("numpy", "jax", "scipy")}


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


@contextmanager
def _backend_during_import(backend: str) -> Iterator[None]:
    """KERAS_BACKEND set while Keras 3 is first imported (it reads the variable then, once per process), and
    the user's value (or none) back afterwards: nothing leaks into child processes."""
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = backend
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous


def _import(module: str, hint: str = TF_HINT) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _onednn_during_import():
            return importlib.import_module(module)
    except ImportError as err:
        missing = err.name or module
        raise ReferenceUnavailable(f"Keras' reference (--check, verify --against) needs {missing}, which is not "
                                   "installed", hint=hint) from None


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (TensorFlow takes seconds)."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a module with no spec
        return False


def choose_backend(requested: str | None, is_installed: Callable[[str], bool] | None = None) -> str | None:
    """The Keras 3 backend to compute references on: the user's KERAS_BACKEND if it is installed, else the
    first installed in BACKEND_MODULES' order; None when none is."""
    is_installed = is_installed or installed
    order = ([requested] if requested in BACKEND_MODULES else []) + list(BACKEND_MODULES)
    return next((b for b in order if all(is_installed(m) for m in BACKEND_MODULES[b])), None)


def reference_installed() -> bool:
    """Whether some Keras can compute references here: TensorFlow (tf_keras and Keras 3 files), or Keras 3
    on a light backend (Keras 3 files only; a Keras 2 file then says it needs the tf extra when loaded)."""
    return installed("tensorflow") or (installed("keras") and choose_backend(None) is not None)


def _import_keras3() -> Any:
    """Keras 3, on the backend choose_backend picks. Once imported, its backend is fixed for the process."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    if not installed("keras"):
        raise ReferenceUnavailable("Keras' reference of a Keras 3 file (--check, verify --against) needs keras, "
                                   "which is not installed", hint=KERAS3_HINT)
    backend = choose_backend(os.environ.get(BACKEND_ENV))
    if backend is None:
        raise ReferenceUnavailable("Keras 3 is installed, but none of its backends (tensorflow, jax, torch) is",
                                   hint=KERAS3_HINT)
    with _backend_during_import(backend):
        return _import("keras", KERAS3_HINT)


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


KERAS_HUB_HINT = ("the file holds Keras Hub classes: `pip install keras-hub` (kconvert's [hub] extra) for the "
                  "cross-check; the conversion itself needs no Keras")


def _names_keras_hub(config: Any) -> bool:
    return '"keras_hub' in json.dumps(config)


def _loader_major(artifact: KerasArtifact) -> int:
    """Which Keras loads the file: a .keras archive is Keras 3's format; otherwise the file's major version
    (resolved once, in converter/keras/versions.py), Keras 1 files being read by Keras 2."""
    if artifact.format == "keras":
        return 3
    return 3 if artifact.keras_major == 3 else 2


def load_keras_model(artifact: KerasArtifact, weights: str | Path | None = None,
                     custom_objects: Path | None = None) -> Any:
    """The file loaded by the Keras that wrote it (Lambda layers refused). `custom_objects`: a Python file
    of the user's own Keras classes and functions (--custom-objects), run here, after that Keras is
    imported (so its backend is the one chosen here), and given to Keras by name."""
    refuse_code_layers(artifact.model_config)
    major = _loader_major(artifact)
    keras = _import_keras3() if major == 3 else _import_tf_keras()
    if major == 3 and _names_keras_hub(artifact.model_config):
        _import("keras_hub", KERAS_HUB_HINT)  # registers its classes, which the file names, with Keras
    objects = user_objects(keras, custom_objects) if custom_objects is not None else None
    path = str(artifact.path)
    try:
        if artifact.format == "json":
            model = keras.models.model_from_json(json.dumps(artifact.model_config), custom_objects=objects)
            model.load_weights(str(weights))
            return model
        return keras.models.load_model(path, compile=False, safe_mode=True, custom_objects=objects)
    except KconvertError:
        raise
    except Exception as err:  # Keras' own loader failed: say so, the conversion itself stands
        raise ReferenceUnavailable(
            f"Keras {major} could not load {artifact.path.name}: {type(err).__name__}: {str(err)[:200]}",
            hint="the ONNX file was written; only the cross-check is unavailable") from None


def user_objects(keras: Any, path: Path) -> dict[str, Any]:
    """Every class and function the user's file defines, by its name and by the `package>name` Keras
    registered it under (a registered class is saved under that name; an unregistered one by its name)."""
    from runtime.user_code import defined_objects, run_user_file

    found = defined_objects(run_user_file(path, "--custom-objects"))
    if not found:
        raise UsageError(f"--custom-objects {path}: the file defines no class or function",
                         hint="define your custom Keras layers (and functions) in it")
    named = dict(found)
    for obj in found.values():
        registered = keras.saving.get_registered_name(obj)
        named.setdefault(str(registered), obj)
    return named


def _import_tf_keras() -> Any:
    if not installed("tensorflow"):
        raise ReferenceUnavailable("this file is Keras 1/2: Keras computes it with tf_keras, which needs TensorFlow, "
                                   "and TensorFlow is not installed", hint=TF_HINT)
    return _import("tf_keras")


@dataclass(frozen=True)
class ReferenceBackend:
    """Which Keras, on which backend, computed a reference: for the check's result and its JSON."""

    keras: str  # "keras" (Keras 3) or "tf_keras" (Keras 2)
    keras_version: str
    backend: str  # "tensorflow", "jax", "torch" or "numpy"
    backend_version: str

    def describe(self) -> str:
        name = "Keras" if self.keras == "keras" else "tf_keras"
        return f"{name} {self.keras_version} on {self.backend} {self.backend_version}"

    def to_dict(self) -> dict[str, str]:
        return {"keras": self.keras, "keras_version": self.keras_version, "backend": self.backend,
                "backend_version": self.backend_version}


def reference_backend(model: Any) -> ReferenceBackend | None:
    """Which Keras and backend compute `model` (a model load_keras_model returned); None for an object that
    is no Keras model (a program's own stand-in)."""
    if _is_tf_keras(model):
        return ReferenceBackend("tf_keras", _version("tf_keras"), "tensorflow", _version("tensorflow"))
    if not type(model).__module__.startswith("keras") or "keras" not in sys.modules:
        return None
    backend = str(sys.modules["keras"].backend.backend())
    return ReferenceBackend("keras", _version("keras"), backend, _version(BACKEND_MODULES.get(backend, (backend,))[0]))


def _version(module: str) -> str:
    return str(getattr(sys.modules.get(module), "__version__", "unknown"))


def _is_tf_keras(model: Any) -> bool:
    return type(model).__module__.startswith("tf_keras")


def reference_outputs(model: Any, inputs: list[np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
    """Keras' outputs for `inputs` (channels_last arrays as Keras takes them), one array per output.
    `names`: the inputs' names, for a model whose inputs are a dict (a Keras Hub backbone's `token_ids`,
    `padding_mask`, ...), which Keras would otherwise pair with a list by its sorted keys."""
    feed = _keyed(model, inputs, names) or (inputs if len(inputs) > 1 else inputs[0])
    failures = _backend_failures()
    try:
        _reset_states(model)
        with _without_gradients(model):
            outputs = _xla_call(model, feed) if needs_xla(model) else model(feed, training=False)
            return _flatten(outputs)
    except failures as err:
        raise _reference_failed(model, err) from None


def _keyed(model: Any, inputs: list[np.ndarray], names: list[str] | None) -> dict[str, np.ndarray] | None:
    struct = getattr(model, "_inputs_struct", None)  # Keras 3 Functional: the inputs as the model was built
    if names is None or not isinstance(struct, dict) or set(struct) != set(names) or len(names) != len(inputs):
        return None
    return dict(zip(names, inputs))


def _reset_states(model: Any) -> None:
    """A stateful layer carries its states from one call to the next; each batch of a check is a sequence
    of its own, from zero states (what the converted model is fed: runtime/streamed.py)."""
    for layer in getattr(model, "layers", []):
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            try:
                layer.reset_states()
            except AttributeError as err:  # Keras 3.15 cannot reset a stateful RNN of StackedRNNCells
                raise _reference_failed(model, err) from None
        elif hasattr(layer, "layers"):
            _reset_states(layer)


@contextmanager
def _without_gradients(model: Any) -> Iterator[None]:
    """On PyTorch, a plain call records the autograd graph (memory for every intermediate) and returns
    tensors numpy cannot read; TensorFlow and JAX record nothing outside a tape or a grad transform."""
    if _is_tf_keras(model) or str(sys.modules["keras"].backend.backend()) != "torch":
        yield
        return
    with sys.modules["torch"].no_grad():
        yield


def _flatten(outputs: Any) -> list[np.ndarray]:
    """Keras' outputs in model order: a tensor, or lists / dicts of them, nested as the model declares."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [array for item in outputs for array in _flatten(item)]
    if type(outputs).__module__.startswith("torch"):  # it may live on a GPU: Keras moves it to the host
        return [np.asarray(sys.modules["keras"].ops.convert_to_numpy(outputs))]
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
    if _is_tf_keras(model):
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


def _backend_failures() -> tuple[type[Exception], ...]:
    """What Keras raises when it cannot compute a model: ValueError for inputs the model refuses, and the
    op errors of each backend imported: TensorFlow's OpError, JAX's runtime error, PyTorch's RuntimeError."""
    failures: list[type[Exception]] = [ValueError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        failures.append(tf.errors.OpError)
    jax = sys.modules.get("jax")
    jax_failure = getattr(getattr(jax, "errors", None), "JaxRuntimeError", None)
    if isinstance(jax_failure, type) and issubclass(jax_failure, Exception):
        failures.append(jax_failure)
    if "torch" in sys.modules:
        failures.append(RuntimeError)
    return tuple(failures)


def _reference_failed(model: Any, err: Exception) -> ReferenceFailed:
    name = str(getattr(model, "name", "model"))
    layer, what = _failing_layer(str(err), name)
    on_tensorflow = _runs_on_tensorflow(model)
    backend = "TensorFlow" if on_tensorflow else str(sys.modules["keras"].backend.backend())
    return ReferenceFailed(
        f"Keras cannot compute the reference outputs of model '{name}': {what} failed in {backend} "
        f"({type(err).__name__}: {_core_message(str(err))})",
        layer=layer, hint=_failure_hint(err, on_tensorflow))


def _failure_hint(err: Exception, on_tensorflow: bool) -> str:
    hint = "the ONNX file was written; compare it with stored Keras outputs instead (--reference FILE.npz)"
    if isinstance(err, ValueError) or not on_tensorflow or not channels_first_kernels_missing():
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


# --- Intermediate values, for localisation (runtime/localize.py) -------------------------------------


def layer_outputs(model: Any, inputs: list[np.ndarray], layers: list[str],
                  names: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """For each named top-level layer of `model` (names as in model.layers), its output arrays for `inputs`
    (several for a layer with several outputs; a layer called more than once: its first call in the model).
    One sub-model computes them all, so the caller bounds memory by how many layers it asks for at once.
    `names`: the inputs' names, for a model taking a dict of inputs (as reference_outputs)."""
    graph = _graph_of(model, inputs)
    tensors = {name: _flat(_first_call(graph, _layer(model, name)).outputs) for name in layers}
    wanted = [tensor for name in layers for tensor in tensors[name]]
    if not wanted:
        return {name: [] for name in layers}
    keyed = isinstance(getattr(model, "_inputs_struct", None), dict) and names is not None
    # The probe takes the inputs as the model does (a dict by name, else a list), as reference_outputs feeds them.
    inputs_given = model.input if keyed else model.inputs if len(model.inputs) > 1 else model.inputs[0]
    probe = _keras_module(model).Model(inputs_given, wanted)
    arrays = iter(reference_outputs(probe, inputs, names))
    return {name: [next(arrays) for _ in tensors[name]] for name in layers}


def layer_inbound(model: Any) -> dict[str, list[str]]:
    """For each top-level layer, the names of the layers its first call in the model takes inputs from."""
    graph = _graph_of(model, None)
    return {layer.name: [_layer_of(parent).name for parent in _first_call(graph, layer).parent_nodes]
            for layer in model.layers}


def _graph_of(model: Any, inputs: list[np.ndarray] | None) -> Any:
    """The functional graph the model's layers were called in: the model itself, or the graph a Keras 3
    Sequential keeps. A Sequential made without an input shape gets it from its first call."""
    graph = _functional_graph(model)
    if graph is None and inputs is not None and _is_sequential(model):
        reference_outputs(model, inputs)
        graph = _functional_graph(model)
    if graph is None:
        raise ReferenceUnavailable(
            f"the layers of model '{getattr(model, 'name', 'model')}' are not reachable one by one: it is a "
            "subclassed model, or a Sequential model never built",
            hint="localisation needs a Functional or Sequential model with known inputs")
    return graph


def _functional_graph(model: Any) -> Any:
    if _is_tf_keras(model):
        return model if getattr(model, "_is_graph_network", False) else None
    for graph in (model, getattr(model, "_functional", None)):
        if graph is not None and hasattr(graph, "_nodes"):
            return graph
    return None


def _is_sequential(model: Any) -> bool:
    return type(model).__name__ == "Sequential"


def _first_call(graph: Any, layer: Any) -> Any:
    """The layer's first node (call) inside `graph`: a shared layer, or one also used in another model, has
    nodes outside it, and the inner node of a nested model links its own inputs, not the outer graph's."""
    for index, node in enumerate(layer._inbound_nodes):
        if _node_key(layer, index) in _graph_node_keys(graph):
            return node
    raise FormatError(f"layer '{layer.name}' is never called in model '{graph.name}'",
                      layer=str(layer.name), hint="name a layer the model's graph uses")


def _node_key(layer: Any, index: int) -> str:
    # How each Keras names a node of its graph: tf_keras by layer name, Keras 3 by the layer's identity.
    return f"{layer.name}_ib-{index}" if _is_tf_keras(layer) else f"{id(layer)}_ib-{index}"


def _graph_node_keys(graph: Any) -> set[str]:
    return set(graph._network_nodes if _is_tf_keras(graph) else graph._nodes)


def _layer(model: Any, name: str) -> Any:
    """The named layer; in Keras 3 also an operation node (`x + 1` saves an `Add` op that model.layers
    leaves out but the file's config, and so the ONNX file's map, lists)."""
    try:
        return model.get_layer(name)
    except ValueError:
        found = [op for op in getattr(model, "operations", []) if op.name == name]
        if found:
            return found[0]
        raise FormatError(f"model '{model.name}' has no top-level layer '{name}'", layer=name,
                          hint=f"its layers: {', '.join(layer.name for layer in model.layers[:20])}") from None


def _layer_of(node: Any) -> Any:
    """The layer a node calls: Keras 3 names it `operation`, tf_keras `layer`."""
    return node.operation if hasattr(node, "operation") else node.layer


def _keras_module(model: Any) -> Any:
    return sys.modules["tf_keras" if _is_tf_keras(model) else "keras"]


def _flat(structure: Any) -> list[Any]:
    """Tensors of a node's outputs in order (tf_keras keeps them nested as the layer returns them; a dict
    flattens by sorted key, as tf.nest and Keras 3's tree do)."""
    if isinstance(structure, dict):
        return [t for key in sorted(structure) for t in _flat(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [t for item in structure for t in _flat(item)]
    return [structure]
