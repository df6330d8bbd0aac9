"""Keras 1 layer entries whose structure (not only argument names) differs from Keras 2/3.

Each function takes one `{"class_name", "config"}` entry as Keras 1 wrote it and returns the entry in
Keras 2 structure; the argument renames that remain (`nb_filter` -> `filters`, ...) are left to
`dialects.canonical_config`. Semantics follow Keras 1.2's `layers/` and Keras 2.0's legacy converters.
"""

from __future__ import annotations

from typing import Any

from converter.errors import FormatError

# Keras 1 `Merge(mode=...)` -> the Keras 2 merge layer computing the same function.
MERGE_MODES: dict[str, str] = {
    "sum": "Add",
    "mul": "Multiply",
    "ave": "Average",
    "max": "Maximum",
    "concat": "Concatenate",
    "dot": "Dot",
    "cos": "Dot",
}

# Keras 1 spatial layers that stored `dim_ordering` (or, in early 1.0.x, silently used the default).
SPATIAL_CLASSES = frozenset({
    "Convolution2D", "Convolution3D", "AtrousConvolution2D", "SeparableConvolution2D", "Deconvolution2D",
    "MaxPooling2D", "AveragePooling2D", "MaxPooling3D", "AveragePooling3D", "GlobalMaxPooling2D",
    "GlobalAveragePooling2D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling2D", "UpSampling3D",
    "Cropping2D", "Cropping3D", "SpatialDropout2D", "SpatialDropout3D", "LocallyConnected2D",
})

_CONV2D = ("Convolution2D", "AtrousConvolution2D", "SeparableConvolution2D", "Deconvolution2D")
_ONE_D_LISTS = {"filter_length": "kernel_size", "subsample_length": "strides", "pool_length": "pool_size",
                "stride": "strides"}


def upgrade_layer_entry(entry: dict[str, Any], ordering: str) -> dict[str, Any]:
    """One Keras 1 layer entry -> Keras 2 structure (a new dict; `entry` is a private copy already)."""
    cls = str(entry.get("class_name"))
    config = entry["config"]
    if not isinstance(config, dict):
        return entry
    if cls in SPATIAL_CLASSES and config.get("dim_ordering") in (None, "default"):
        config["dim_ordering"] = ordering
    if cls == "Merge":
        return _merge(entry)
    if cls == "TimeDistributedDense":
        return _time_distributed_dense(entry)
    if cls in _CONV2D and "nb_row" in config:
        config["kernel_size"] = _kernel_size(cls, config, ("nb_row", "nb_col"))
    if cls == "Convolution3D" and "kernel_dim1" in config:
        config["kernel_size"] = _kernel_size(cls, config, ("kernel_dim1", "kernel_dim2", "kernel_dim3"))
    if cls == "Deconvolution2D":
        config.pop("output_shape", None)  # Keras 2 derives it from the input; the kernel decides
    for old, new in _ONE_D_LISTS.items():
        if old in config and new not in config:
            value = config.pop(old)
            config[new] = [value] if isinstance(value, int) else value
    if cls == "AtrousConvolution1D" and isinstance(config.get("atrous_rate"), int):
        config["dilation_rate"] = [config.pop("atrous_rate")]
    if cls == "BatchNormalization" and config.get("mode", 0) == 0:
        config.pop("mode", None)
    return entry


def _kernel_size(cls: str, config: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
    """Keras 1 stated a kernel size per axis (`nb_row`, `nb_col`); all of them, or the entry is damaged."""
    missing = [k for k in keys if k not in config]
    if missing:
        name = config.get("name")
        raise FormatError(f"{cls} '{name}' gives {keys[0]} but not {', '.join(missing)}", layer=str(name),
                          hint="a Keras 1 convolution states its kernel size on every axis; is the config complete?")
    return [config.pop(k) for k in keys]


def _merge(entry: dict[str, Any]) -> dict[str, Any]:
    """Keras 1 `Merge` / functional `merge` -> Add, Multiply, Average, Maximum, Concatenate or Dot.

    A mode given as a Python function (`mode_type` 'lambda') stays a `Merge`, which is refused with
    its layer name, exactly like a Lambda layer.
    """
    config = dict(entry["config"])
    mode = config.get("mode")
    if not isinstance(mode, str) or mode not in MERGE_MODES or config.get("mode_type", "raw") != "raw":
        return entry
    new: dict[str, Any] = {"name": config.get("name"), "trainable": config.get("trainable", True)}
    if mode == "concat":
        new["axis"] = config.get("concat_axis", -1)
    elif mode in ("dot", "cos"):
        axes = config.get("dot_axes", -1)
        new["axes"] = list(axes) if isinstance(axes, (list, tuple)) else axes
        new["normalize"] = mode == "cos"
    if isinstance(config.get("layers"), list):
        new["layers"] = config["layers"]  # Sequential-era Merge of branch models; topology builds them
    out = {k: v for k, v in entry.items() if k not in ("class_name", "config")}
    out.update({"class_name": MERGE_MODES[mode], "config": new})
    return out


def _time_distributed_dense(entry: dict[str, Any]) -> dict[str, Any]:
    """`TimeDistributedDense(output_dim)` is Keras 2's `TimeDistributed(Dense(units))`: same W and b."""
    config = dict(entry["config"])
    outer_keys = ("name", "trainable", "batch_input_shape", "input_dtype", "input_dim", "input_length")
    outer = {k: config.pop(k) for k in outer_keys if k in config}
    config["name"] = outer.get("name")
    out = {k: v for k, v in entry.items() if k not in ("class_name", "config")}
    out.update({"class_name": "TimeDistributed",
                "config": {**outer, "layer": {"class_name": "Dense", "config": config}}})
    return out


def legacy_refusal(class_name: str, config: dict[str, Any]) -> str | None:
    """Why a Keras 1 configuration has no faithful inference-time equivalent, or None."""
    if class_name == "Merge":
        mode = config.get("mode")
        if not isinstance(mode, str) or config.get("mode_type", "raw") != "raw":
            return "a Keras 1 Merge with a Python function as mode holds code, which kconvert never runs"
        return f"a Keras 1 Merge with mode {mode!r}, which Keras 1 itself did not define"
    mode = config.get("mode")
    if class_name == "BatchNormalization" and mode not in (None, 0, 2):
        # mode=2 (the batch's own statistics) converts: layers/batch_normalization.py.
        return (f"a Keras 1 BatchNormalization with mode={mode!r} is not converted (mode=0 and mode=2 are; "
                "mode=1, sample-wise statistics, is not)")
    padding = config.get("padding", config.get("border_mode"))
    if padding == "full":
        return "border_mode='full' (a Theano-only Keras 1 padding) has no Keras 2/3 equivalent"
    return None
