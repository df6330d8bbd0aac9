"""Input dtypes: what a model config states (a dtype name, or a Keras dtype policy) -> the dtype of the input.

Read when the graph input is made (layer checks look at their input's dtype), and checked there: a
Keras dtype the ONNX export cannot write is refused by name, anything else that is no dtype is damage.

Floating inputs of another width (float16, float64, bfloat16) become float32 inputs: Keras layers cast
floating inputs to their compute dtype as they are called (autocast), kconvert computes in float32,
and an ONNX input of another float type would meet float32 weights in the first op, which onnxruntime
refuses. The values the model computes are Keras' (a float64 value cast to float32 is what Keras uses).
"""

from __future__ import annotations

from typing import Any

from converter.errors import ShapeError, UnsupportedLayerError

# Input dtypes the ONNX export writes; Keras dtypes outside them are refused by name, never guessed.
INPUT_DTYPES = frozenset({"float32", "int8", "uint8", "int32", "int64", "bool", "string"})
AUTOCAST_FLOATS = frozenset({"float16", "float64", "bfloat16"})
UNCONVERTED_DTYPES = frozenset({"int16", "uint16", "uint32", "uint64", "complex64", "complex128",
                                "float8_e4m3fn", "float8_e5m2"})


def input_dtype(name: str, raw: Any) -> str:
    """The input's dtype: a name, or a Keras dtype policy (mixed and quantized policies keep float32 variables,
    and the input Keras builds for such a first layer is float32)."""
    if isinstance(raw, dict) and _is_policy(raw.get("class_name")) and isinstance(raw.get("config"), dict):
        raw = raw["config"].get("name")
    if raw is None:
        return "float32"
    if not isinstance(raw, str):
        raise ShapeError(f"model input '{name}' has dtype={_excerpt(raw)}, not a dtype name", layer=name,
                         hint="fix dtype in the model config (e.g. 'float32')")
    dtype = raw.split("_from_")[-1]
    dtype = "float32" if dtype.startswith("mixed_") or dtype in AUTOCAST_FLOATS else dtype
    if dtype in INPUT_DTYPES:
        return dtype
    if dtype in UNCONVERTED_DTYPES:
        raise UnsupportedLayerError(f"model input '{name}' has dtype {dtype}, which kconvert does not convert",
                                    layer=name,
                                    hint="supported input dtypes: " + ", ".join(sorted(INPUT_DTYPES | AUTOCAST_FLOATS)))
    raise ShapeError(f"model input '{name}' has dtype {_excerpt(raw)}, which is not a Keras dtype", layer=name,
                     hint="fix dtype in the model config (e.g. 'float32')")


def _is_policy(class_name: Any) -> bool:
    """tf.keras' `Policy`; Keras 3's `DTypePolicy`, `FloatDTypePolicy`, `QuantizedDTypePolicy`, ..."""
    return isinstance(class_name, str) and (class_name == "Policy" or class_name.endswith("DTypePolicy"))


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
