"""Keras 1 / 2 / 3 config spellings -> one canonical spelling (Keras 3 names), applied once at the boundary.

Handlers never see legacy class names or argument names: everything is translated here, in two steps:
- `upgrade_model_config` rewrites whole layer entries where Keras 1 differs in structure (the `Merge`
  layer becomes Add/Concatenate/..., `TimeDistributedDense` becomes TimeDistributed(Dense),
  `nb_row`/`nb_col` become one `kernel_size`, layers without `dim_ordering` get the model's ordering);
- `canonical_config` renames arguments per layer (`output_dim` -> `units`, `border_mode` -> `padding`, ...).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from converter.keras.cudnn import upgrade_cudnn_config
from converter.keras.legacy_config import upgrade_layer_entry
from converter.keras.versions import keras_major

# Legacy or internal class names -> the canonical Keras 3 class name.
CLASS_ALIASES: dict[str, str] = {
    "Convolution1D": "Conv1D",
    "Convolution2D": "Conv2D",
    "Convolution3D": "Conv3D",
    "Conv2DTranspose": "Conv2DTranspose",
    "Deconvolution2D": "Conv2DTranspose",
    "Deconvolution3D": "Conv3DTranspose",
    "Convolution2DTranspose": "Conv2DTranspose",
    "Convolution3DTranspose": "Conv3DTranspose",
    "SeparableConvolution1D": "SeparableConv1D",
    "SeparableConvolution2D": "SeparableConv2D",
    "AtrousConvolution1D": "Conv1D",
    "AtrousConvolution2D": "Conv2D",
    "MaxPool1D": "MaxPooling1D",
    "MaxPool2D": "MaxPooling2D",
    "MaxPool3D": "MaxPooling3D",
    "AvgPool1D": "AveragePooling1D",
    "AvgPool2D": "AveragePooling2D",
    "AvgPool3D": "AveragePooling3D",
    "GlobalMaxPool1D": "GlobalMaxPooling1D",
    "GlobalMaxPool2D": "GlobalMaxPooling2D",
    "GlobalMaxPool3D": "GlobalMaxPooling3D",
    "GlobalAvgPool1D": "GlobalAveragePooling1D",
    "GlobalAvgPool2D": "GlobalAveragePooling2D",
    "GlobalAvgPool3D": "GlobalAveragePooling3D",
    "BatchNormalizationV1": "BatchNormalization",
    "BatchNormalizationV2": "BatchNormalization",
    "SyncBatchNormalization": "BatchNormalization",
    "UnifiedLSTM": "LSTM",
    "LSTMV1": "LSTM",
    "LSTMV2": "LSTM",
    "UnifiedGRU": "GRU",
    "GRUV1": "GRU",
    "GRUV2": "GRU",
    "CuDNNLSTM": "LSTM",
    "CuDNNGRU": "GRU",
    "Model": "Functional",
    "TFOpLambda": "TFOpLambda",
}

# Argument renames of Keras 1 files (Keras 1 -> Keras 2/3 spelling), applied to every layer of such a file.
KERAS1_ARG_RENAMES: dict[str, str] = {
    "output_dim": "units",
    "nb_filter": "filters",
    "border_mode": "padding",
    "subsample": "strides",
    "subsample_length": "strides",
    "dim_ordering": "data_format",
    "init": "kernel_initializer",
    "inner_init": "recurrent_initializer",
    "inner_activation": "recurrent_activation",
    "atrous_rate": "dilation_rate",
    "pool_length": "pool_size",
    "filter_length": "kernel_size",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "U_regularizer": "recurrent_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "U_constraint": "recurrent_constraint",
    "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout",
    "bias": "use_bias",
    "input_dtype": "dtype",
}

# Per-class argument renames of Keras 1 files, where a name means something else elsewhere: these win
# over KERAS1_ARG_RENAMES (Embedding keeps its `output_dim`, which is `units` everywhere else).
KERAS1_CLASS_ARG_RENAMES: dict[str, dict[str, str]] = {
    "LeakyReLU": {"alpha": "negative_slope"},
    "Embedding": {"output_dim": "output_dim", "input_dim": "input_dim", "init": "embeddings_initializer",
                  "W_regularizer": "embeddings_regularizer", "W_constraint": "embeddings_constraint"},
    "Dropout": {"p": "rate"},
    "SpatialDropout1D": {"p": "rate"},
    "SpatialDropout2D": {"p": "rate"},
    "SpatialDropout3D": {"p": "rate"},
    "GaussianDropout": {"p": "rate"},
    "AlphaDropout": {"p": "rate"},
    "MaxPooling1D": {"stride": "strides"},
    "AveragePooling1D": {"stride": "strides"},
}

# Per Keras major version of the file: (renames for every class, renames per class). Keras 2 spells
# everything as Keras 3 does except LeakyReLU's slope; Keras 3 files are canonical already.
RENAMES_BY_MAJOR: dict[int, tuple[dict[str, str], dict[str, dict[str, str]]]] = {
    1: (KERAS1_ARG_RENAMES, KERAS1_CLASS_ARG_RENAMES),
    2: ({}, {"LeakyReLU": {"alpha": "negative_slope"}}),
    3: ({}, {}),
}

# Keras 1 arguments that only act while training or only choose an implementation; dropped.
DROPPED_ARGS = frozenset({"consume_less", "forget_bias_init", "mode_type", "output_shape_type", "output_mask_type"})

DATA_FORMAT_VALUES = {"tf": "channels_last", "th": "channels_first", "default": None}


def canonical_class(class_name: str) -> str:
    return CLASS_ALIASES.get(class_name, class_name)


def unwrap(value: Any) -> Any:
    """Keras 3 serialises dtype policies and plain functions as objects; keep only their name.
    Keras 2.0 wrote numpy values as `{"type": "ndarray", "value": ...}`; keep the value."""
    if isinstance(value, dict) and value.get("type") == "ndarray" and "value" in value and len(value) == 2:
        return value["value"]
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        inner = value["config"]
        if value["class_name"] in ("DTypePolicy", "Policy", "FloatDTypePolicy") and isinstance(inner, dict):
            return inner.get("name")
        if value["class_name"] in ("function", "builtins.function") and isinstance(inner, str):
            return inner
    return value


def canonical_config(class_name: str, config: dict[str, Any], keras_major: int) -> dict[str, Any]:
    """Rename the arguments the file's Keras version spelled otherwise (keyed by version and class) and
    unwrap serialised objects; values keep their Keras meaning."""
    common, per_class = RENAMES_BY_MAJOR.get(keras_major, RENAMES_BY_MAJOR[2])
    renames = {**common, **per_class.get(class_name, {})}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in DROPPED_ARGS:
            continue
        new_key = renames.get(key, key)
        if new_key in out and new_key != key:
            continue  # the modern spelling was given too; it wins
        out[new_key] = unwrap(value)
    if isinstance(out.get("data_format"), str) and out["data_format"] in DATA_FORMAT_VALUES:
        out["data_format"] = DATA_FORMAT_VALUES[out["data_format"]]
    if isinstance(out.get("padding"), str):
        out["padding"] = out["padding"].lower()
    if class_name == "GRU" and "reset_after" not in out:
        out["reset_after"] = False  # Keras <= 2.1 had no reset_after and computed what False computes
    return out


def is_keras1(config: Any, keras_version: str | None) -> bool:
    """Keras 1 by the recorded version, or (weights-only era files record none) by Keras-1-only keys."""
    if isinstance(keras_version, str) and keras_version:
        return keras_version.startswith("1.")
    return _has_any_key(config, ("dim_ordering", "nb_filter", "output_dim", "border_mode", "input_dtype"))


def _has_any_key(value: Any, keys: tuple[str, ...]) -> bool:
    if isinstance(value, dict):
        return any(k in value for k in keys) or any(_has_any_key(v, keys) for v in value.values())
    if isinstance(value, list):
        return any(_has_any_key(v, keys) for v in value)
    return False


def upgrade_model_config(raw: Any, keras_version: str | None) -> Any:
    """A copy of the model config with every Keras 1 layer entry rewritten to Keras 2/3 structure.

    Keras 1 resolved `dim_ordering='default'` when a layer was built and stored the result on the
    layers that have the argument; pooling/padding layers of early 1.0.x files omit it. Those follow
    the ordering the model's other layers state ('th' when they state 'th'), else Keras 1's own default.
    CuDNNLSTM / CuDNNGRU entries (Keras 2) get the arguments of the LSTM / GRU they compute (`cudnn.py`).
    """
    raw = upgrade_cudnn_config(raw)
    raw = upgrade_random_crop(raw, keras_version)
    if not is_keras1(raw, keras_version):
        return raw
    ordering = _model_dim_ordering(raw)
    upgraded = copy.deepcopy(raw)
    _walk_layers(upgraded, ordering)
    return upgraded


# Classes translated into other classes by version-dependent rules below (no handler of their own).
REWRITTEN_CLASSES = {"RandomCrop": "Resizing(crop_to_aspect_ratio=True) from Keras 2 files, Identity from Keras 3"}


def upgrade_random_crop(raw: Any, keras_version: str | None) -> Any:
    """RandomCrop's inference meaning depends on the Keras that saved it: Keras 2 center-crops to the
    target aspect ratio and resizes bilinearly (`smart_resize`, which is what Resizing with
    crop_to_aspect_ratio does); Keras 3 returns its input unchanged. Rewritten once, here."""
    if '"RandomCrop"' not in json.dumps(raw):
        return raw
    keras3 = keras_major(keras_version) >= 3
    upgraded = copy.deepcopy(raw)

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("class_name") == "RandomCrop" and isinstance(value.get("config"), dict):
                if keras3:
                    value["class_name"] = "Identity"
                else:
                    value["class_name"] = "Resizing"
                    value["config"].update(interpolation="bilinear", crop_to_aspect_ratio=True)
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)

    visit(upgraded)
    return upgraded


def _model_dim_ordering(raw: Any) -> str:
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("dim_ordering") in ("th", "tf"):
                found.append(value["dim_ordering"])
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)

    visit(raw)
    return "th" if "th" in found else "tf"


def _walk_layers(value: Any, ordering: str) -> None:
    """Rewrite every `{"class_name", "config"}` layer entry in place, depth first."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk_layers(item, ordering)
            if _is_layer_entry(item):
                value[i] = upgrade_layer_entry(item, ordering)
    elif isinstance(value, dict):
        for key, item in list(value.items()):
            _walk_layers(item, ordering)
            if key in ("layer", "backward_layer") and _is_layer_entry(item):
                value[key] = upgrade_layer_entry(item, ordering)


def _is_layer_entry(value: Any) -> bool:
    return isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), (dict, list))
