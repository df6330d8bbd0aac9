"""Initializers, regularizers and constraints of Keras 1/2 configs -> the objects Keras 3 deserialises.

Keras 1 wrote initializers as names and regularizers/constraints as `{"name": ..., "l1": ...}`;
Keras 2 as `{"class_name", "config"}` whose config may carry keys Keras 3 rejects (a `dtype` in
tf.keras 1.x initializers). Each object is rebuilt from the arguments its Keras 3 class accepts.
An initializer Keras 3 does not know is left out (the layer's default applies): it only matters
before weights are loaded, and the archive carries the weights. A regularizer or constraint that
cannot be expressed is left out too and reported, since it changes training, not inference.
"""

from __future__ import annotations

from typing import Any

# Keras 3 class -> the config keys its constructor accepts.
INITIALIZERS: dict[str, tuple[str, ...]] = {
    "Constant": ("value",), "GlorotNormal": ("seed",), "GlorotUniform": ("seed",), "HeNormal": ("seed",),
    "HeUniform": ("seed",), "LecunNormal": ("seed",), "LecunUniform": ("seed",), "Identity": ("gain",),
    "Ones": (), "Zeros": (), "Orthogonal": ("gain", "seed"), "RandomNormal": ("mean", "stddev", "seed"),
    "TruncatedNormal": ("mean", "stddev", "seed"), "RandomUniform": ("minval", "maxval", "seed"),
    "VarianceScaling": ("scale", "mode", "distribution", "seed"),
}
REGULARIZERS: dict[str, tuple[str, ...]] = {
    "L1": ("l1",), "L2": ("l2",), "L1L2": ("l1", "l2"), "OrthogonalRegularizer": ("factor", "mode"),
}
CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "MaxNorm": ("max_value", "axis"), "MinMaxNorm": ("min_value", "max_value", "rate", "axis"),
    "NonNeg": (), "UnitNorm": ("axis",),
}
# Keras 1/2 spellings -> Keras 3 class names.
_ALIASES = {
    "glorot_normal": "GlorotNormal", "glorot_uniform": "GlorotUniform", "he_normal": "HeNormal",
    "he_uniform": "HeUniform", "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform",
    "identity": "Identity", "one": "Ones", "ones": "Ones", "zero": "Zeros", "zeros": "Zeros",
    "orthogonal": "Orthogonal", "normal": "RandomNormal", "random_normal": "RandomNormal",
    "uniform": "RandomUniform", "random_uniform": "RandomUniform", "truncated_normal": "TruncatedNormal",
    "constant": "Constant", "variance_scaling": "VarianceScaling", "l1": "L1", "l2": "L2", "l1_l2": "L1L2",
    "l1l2": "L1L2", "WeightRegularizer": "L1L2", "L1L2Regularizer": "L1L2", "ActivityRegularizer": "L1L2",
    "max_norm": "MaxNorm", "maxnorm": "MaxNorm", "non_neg": "NonNeg", "nonneg": "NonNeg",
    "unit_norm": "UnitNorm", "unitnorm": "UnitNorm", "min_max_norm": "MinMaxNorm",
    "OrthogonalInitializer": "Orthogonal", "IdentityInitializer": "Identity",
}
# Keras 1 constraint argument names.
_ARG_ALIASES = {"m": "max_value", "low": "min_value", "high": "max_value"}
MODULES = {"initializer": "keras.initializers", "regularizer": "keras.regularizers",
           "constraint": "keras.constraints"}
_TABLES = {"initializer": INITIALIZERS, "regularizer": REGULARIZERS, "constraint": CONSTRAINTS}


def object_kind(key: str) -> str | None:
    """'initializer' for `kernel_initializer`, ... ; None for other arguments."""
    for kind in _TABLES:
        if key.endswith(kind):
            return kind
    return None


def keras3_object(kind: str, value: Any) -> tuple[bool, Any]:
    """(expressible, Keras 3 serialised object or None)."""
    if value is None:
        return True, None
    class_name, config = _parts(value)
    class_name = _ALIASES.get(class_name, class_name)
    accepted = _TABLES[kind].get(class_name)
    if accepted is None:
        return False, None
    args = {_ARG_ALIASES.get(k, k): v for k, v in config.items()}
    kept = {k: v for k, v in args.items() if k in accepted}
    if class_name == "VarianceScaling" and kept.get("distribution") == "normal":
        kept["distribution"] = "truncated_normal"  # what Keras 2.0's "normal" meant
    if class_name == "L1L2" and not any(kept.get(k) for k in ("l1", "l2")):
        return True, None  # Keras 1 wrote a zero regularizer for every layer; it does nothing
    return True, {"module": MODULES[kind], "class_name": class_name, "config": kept, "registered_name": None}


def _parts(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and "class_name" in value:
        config = value.get("config")
        return str(value["class_name"]), dict(config) if isinstance(config, dict) else {}
    if isinstance(value, dict) and "name" in value:  # Keras 1: {"name": "WeightRegularizer", "l2": ...}
        return str(value["name"]), {k: v for k, v in value.items() if k != "name"}
    return repr(value), {}
