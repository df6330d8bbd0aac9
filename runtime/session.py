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
    """`model` is a path, serialized bytes or an onnx.ModelProto."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, (str, bytes, Path)) else model.SerializeToString()
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                providers=choose_providers(provider))


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
