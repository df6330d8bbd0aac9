"""kconvert: Keras model files -> ONNX, without TensorFlow.

    import converter
    model = converter.convert("model.h5")            # onnx.ModelProto
    converter.save(model, "model.onnx")
    converter.save_keras("old_keras1.h5", "model.keras")   # a Keras 3 archive, no TF needed
    loaded = converter.load("model.json", weights="weights.h5")   # normalised LayerGraph
    summary = converter.inspect("model.keras")       # model.summary() as data

The API is imported on first use, so `kconvert --help` does not pay for numpy, h5py and onnx.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "convert", "inspect", "load", "save", "save_keras"]


def __getattr__(name: str) -> Any:
    if name in ("convert", "inspect", "load", "save", "save_keras"):
        from converter import api

        return getattr(api, name)
    raise AttributeError(f"module 'converter' has no attribute {name!r}")
