"""Keras 1 / 2 / 3 config spellings -> one canonical spelling (Keras 3 names), applied once at the boundary.

Handlers never see legacy class names or argument names: everything is translated here.
"""

from __future__ import annotations

from typing import Any

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

# Argument renames, applied to every layer (Keras 1 -> Keras 2/3 spelling).
ARG_RENAMES: dict[str, str] = {
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
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "bias": "use_bias",
    "input_dtype": "dtype",
}

# Per-class argument renames where a name means something else elsewhere.
CLASS_ARG_RENAMES: dict[str, dict[str, str]] = {
    "LeakyReLU": {"alpha": "negative_slope"},
    "Embedding": {"output_dim": "output_dim", "input_dim": "input_dim"},
    "Dropout": {"p": "rate"},
    "SpatialDropout1D": {"p": "rate"},
    "SpatialDropout2D": {"p": "rate"},
    "SpatialDropout3D": {"p": "rate"},
    "GaussianDropout": {"p": "rate"},
    "AlphaDropout": {"p": "rate"},
}

DATA_FORMAT_VALUES = {"tf": "channels_last", "th": "channels_first", "default": None}


def canonical_class(class_name: str) -> str:
    return CLASS_ALIASES.get(class_name, class_name)


def unwrap(value: Any) -> Any:
    """Keras 3 serialises dtype policies and plain functions as objects; keep only their name."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        inner = value["config"]
        if value["class_name"] in ("DTypePolicy", "Policy", "FloatDTypePolicy") and isinstance(inner, dict):
            return inner.get("name")
        if value["class_name"] in ("function", "builtins.function") and isinstance(inner, str):
            return inner
    return value


def canonical_config(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Rename legacy arguments and unwrap serialised objects; values keep their Keras meaning."""
    renames = {**ARG_RENAMES, **CLASS_ARG_RENAMES.get(class_name, {})}
    if class_name == "Embedding":
        renames.pop("output_dim", None)
    out: dict[str, Any] = {}
    for key, value in config.items():
        new_key = renames.get(key, key)
        if new_key in out and new_key != key:
            continue  # the modern spelling was given too; it wins
        out[new_key] = unwrap(value)
    if "data_format" in out and out["data_format"] in DATA_FORMAT_VALUES:
        out["data_format"] = DATA_FORMAT_VALUES[out["data_format"]]
    if isinstance(out.get("padding"), str):
        out["padding"] = out["padding"].lower()
    return out
