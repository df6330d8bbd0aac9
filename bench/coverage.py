"""Which built-in Keras layer classes kconvert converts, and what is missing.

    python bench/coverage.py          # Keras 3 (keras) and Keras 2 (tf_keras), whichever is installed

Compares the handler registry (`converter.layers.LAYERS.public_names()`) with the classes that
`keras.layers` / `tf_keras.layers` export and that subclass their `Layer`. Aliases of one class
(`Conv2D` / `Convolution2D`) count once; a class counts as supported when any of its exported names,
after kconvert's class-alias table, has a handler. What is not supported is split into:
- missing: the class computes something at inference, so a model holding it cannot convert yet;
- no inference meaning: abstract bases, RNN cells (converted inside their RNN layer), the graph input,
  and layers that return their image input unchanged at inference (checked against the Keras source
  of the installed version, see NO_INFERENCE_MEANING);
- not convertible by design: layers that hold foreign code or a foreign model instead of a config.
Also lists registered classes that the installed Keras versions do not export (application layers,
Keras 3 op nodes, Keras 2-only classes).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converter.keras.dialects import REWRITTEN_CLASSES, canonical_class  # noqa: E402
from converter.layers import LAYERS  # noqa: E402

_CELL = "RNN cell: only used inside an RNN layer, converted as part of that layer"
# Identities at inference that a model can hold; until registered (as inference identities) a model
# holding one is refused, so say so next to them.
_UNREGISTERED = "; not registered yet, so a model holding it is refused (it would convert as an identity)"
_TRAINING_ONLY = "returns its input unchanged at inference (transforms images only when training=True)" + _UNREGISTERED
NO_INFERENCE_MEANING: dict[str, str] = {
    "Layer": "abstract base class of every layer",
    "Wrapper": "abstract base class of TimeDistributed / Bidirectional",
    "AbstractRNNCell": "abstract base class of RNN cells",
    "InputLayer": "the model input itself: read by kconvert's topology, emits no op",
    "SimpleRNNCell": _CELL,
    "LSTMCell": _CELL,
    "GRUCell": _CELL,
    "StackedRNNCells": _CELL,
    # keras/src/layers/preprocessing/image_preprocessing/{equalization,solarization}.py: `if training:`
    "Equalization": _TRAINING_ONLY,
    "Solarization": _TRAINING_ONLY,
    # max_num_bounding_box.py: transform_images returns the images; only bounding boxes are padded.
    "MaxNumBoundingBoxes": "images pass through unchanged; it only pads/truncates bounding-box targets"
    + _UNREGISTERED,
}
# Keras 3's RandomCrop also returns its input unchanged at inference (random_crop.py crops only when
# training) although its symbolic output shape is (height, width), so `predict` disagrees with the model's
# own declared shapes; tf_keras' RandomCrop center-crops and resizes at inference. So it has inference
# meaning in Keras 2 and is listed per version.
NO_INFERENCE_MEANING_KERAS3 = {"RandomCrop": "Keras 3 returns its input unchanged at inference although its "
                               "declared output shape is (height, width)" + _UNREGISTERED}
NOT_CONVERTIBLE: dict[str, str] = {
    "Lambda": "arbitrary Python code, never executed: register a handler by layer name (converter.extensions)",
    "TFSMLayer": "wraps a TensorFlow SavedModel: no Keras config or weights to convert",
    "JaxLayer": "wraps a JAX function",
    "FlaxLayer": "wraps a Flax module",
    "TorchModuleWrapper": "wraps a PyTorch module",
    "DenseFeatures": "feature-column input layer (tf.feature_column objects, not a tensor graph)",
}


def exported_classes(module: ModuleType) -> dict[type, list[str]]:
    """Layer subclasses exported by `module.layers`, each with all the names it is exported under."""
    base = module.layers.Layer
    found: dict[type, list[str]] = {}
    for name in sorted(dir(module.layers)):
        obj = getattr(module.layers, name)
        if inspect.isclass(obj) and issubclass(obj, base):
            found.setdefault(obj, []).append(name)
    return found


def is_supported(cls: type, names: list[str], registered: set[str]) -> bool:
    # RandomCrop & co. are rewritten by the dialect module into classes that have handlers.
    return any(canonical_class(n) in registered or n in REWRITTEN_CLASSES for n in [*names, cls.__name__])


def report(label: str, module: ModuleType, registered: set[str], keras3: bool) -> set[str]:
    classes = exported_classes(module)
    no_meaning = {**NO_INFERENCE_MEANING, **(NO_INFERENCE_MEANING_KERAS3 if keras3 else {})}
    supported, missing, idle, refused = [], [], [], []
    for cls, names in sorted(classes.items(), key=lambda item: item[1][0]):
        shown = " / ".join(names) if cls.__name__ in names else f"{' / '.join(names)} ({cls.__name__})"
        if is_supported(cls, names, registered):
            supported.append(shown)
        elif names[0] in NOT_CONVERTIBLE:
            refused.append(f"{shown}: {NOT_CONVERTIBLE[names[0]]}")
        elif names[0] in no_meaning:
            idle.append(f"{shown}: {no_meaning[names[0]]}")
        else:
            missing.append(shown)
    meaningful = len(classes) - len(idle) - len(refused)
    print(f"== {label} {module.__version__}: {len(supported)} of {len(classes)} built-in layer classes supported "
          f"({len(supported)} of {meaningful} that compute something at inference and hold a convertible config)")
    _section(f"missing, with inference meaning ({len(missing)})", missing)
    _section(f"no inference meaning ({len(idle)})", idle)
    _section(f"not convertible by design ({len(refused)})", refused)
    return {n for names in classes.values() for n in names}


def _section(title: str, lines: list[str]) -> None:
    print(f"-- {title}")
    for line in lines:
        print(f"   {line}")


def _load(name: str) -> ModuleType | None:
    try:
        return __import__(name)
    except ImportError:
        return None


def main() -> int:
    registered = set(LAYERS.public_names())
    print(f"kconvert registry: {len(registered)} public class names")
    exported: set[str] = set()
    for label, name, keras3 in (("Keras 3 (keras)", "keras", True), ("Keras 2 (tf_keras)", "tf_keras", False)):
        module = _load(name)
        if module is None:
            print(f"== {label}: not installed, skipped")
            continue
        exported |= report(label, module, registered, keras3)
    extra = sorted(n for n in registered if n not in exported and canonical_class(n) == n)
    _section(f"registered but not exported by keras.layers / tf_keras.layers ({len(extra)})", [", ".join(extra)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
