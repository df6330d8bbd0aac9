"""kconvert: Keras model files -> ONNX, without TensorFlow.

    import converter
    model = converter.convert("model.h5")            # onnx.ModelProto
    graph = converter.load("model.json", weights="weights.h5")
    summary = converter.inspect("model.keras")
"""

from __future__ import annotations

__version__ = "0.1.0"

from converter.api import convert, inspect, load, save  # noqa: E402

__all__ = ["__version__", "convert", "inspect", "load", "save"]
