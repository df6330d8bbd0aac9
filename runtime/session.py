"""onnxruntime sessions with a provider choice: CUDA when onnxruntime-gpu and a GPU are present, else CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from converter.errors import UsageError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def choose_providers(provider: str = "auto") -> list[str]:
    available = ort.get_available_providers()
    if provider == "auto":
        return [p for p in (PROVIDERS["cuda"], PROVIDERS["cpu"]) if p in available]
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}", hint="choose auto, cpu or cuda")
    if PROVIDERS[provider] not in available:
        raise UsageError(f"onnxruntime here has no {PROVIDERS[provider]} (available: {', '.join(available)})",
                         hint="install onnxruntime-gpu with a matching CUDA for --provider cuda")
    return [PROVIDERS[provider]] if provider == "cuda" else [PROVIDERS["cpu"]]


def make_session(model: Any, provider: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """`model` is a path, serialized bytes or an onnx.ModelProto.

    On CUDA, TF32 is turned off: onnxruntime enables it by default on Ampere and newer GPUs, and its
    10-bit mantissa puts Conv/MatMul results 1e-4..1e-2 away from Keras' float32, far outside a
    check's tolerance (measured on an H100: every fixture with a Dense or Conv failed with it on).
    """
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, (str, bytes, Path)) else model.SerializeToString()
    providers: list[Any] = [(p, {"use_tf32": "0"}) if p == PROVIDERS["cuda"] else p
                            for p in choose_providers(provider)]
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options, providers=providers)


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
