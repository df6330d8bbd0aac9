"""onnxruntime sessions with a provider choice: `auto` is CUDA when onnxruntime-gpu and a GPU are present,
else CPU; `cuda` and `tensorrt` must be present (a UsageError says what is), and each choice lists the
providers after it as onnxruntime's fallbacks for the ops it lacks (TensorRT, then CUDA, then CPU).
`auto` leaves TensorRT out: its engine build takes minutes on a large model, a cost asked for by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from converter.errors import UsageError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# Each choice: the providers onnxruntime tries, in order (those installed); the first must be installed
# unless the choice is auto.
FALLBACKS = {"auto": ("cuda", "cpu"), "cpu": ("cpu",), "cuda": ("cuda", "cpu"), "tensorrt": ("tensorrt", "cuda", "cpu")}
PROVIDER_CHOICES = tuple(FALLBACKS)
GPU_HINTS = {"cuda": "install onnxruntime-gpu with a matching CUDA for --provider cuda",
             "tensorrt": "install onnxruntime-gpu with TensorRT libraries on the library path for --provider tensorrt"}
# What session.run raises for inputs the model cannot take (a size too small for its kernels), and what
# creating a session raises for a file onnxruntime refuses.
RUN_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException, ort_state.NotImplemented,
              ort_state.EPFail)
LOAD_ERRORS = (*RUN_ERRORS, ort_state.InvalidGraph, ort_state.InvalidProtobuf, ort_state.NoSuchFile,
               ort_state.NoModel, ort_state.NotFound)
ORT_LOG_FATAL = 4
FLOAT16_DISABLED_OPTIMIZERS = ["NchwcTransformer"]  # see make_session
NUMPY_OF_ORT: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_, "tensor(string)": object,
}


def choose_providers(provider: str = "auto", available: list[str] | None = None) -> list[str]:
    """The providers a session gets for a choice, in onnxruntime's order of preference."""
    available = ort.get_available_providers() if available is None else available
    if provider not in FALLBACKS:
        raise UsageError(f"unknown provider {provider!r}", hint=f"choose {', '.join(PROVIDER_CHOICES)}")
    wanted = PROVIDERS.get(provider)
    if wanted is not None and wanted not in available:
        raise UsageError(f"onnxruntime here has no {wanted} (available: {', '.join(available)})",
                         hint=GPU_HINTS.get(provider, "reinstall onnxruntime"))
    return [PROVIDERS[p] for p in FALLBACKS[provider] if PROVIDERS[p] in available]


def make_session(model: Any, provider: str = "auto", threads: int | None = None,
                 float16: bool = False) -> ort.InferenceSession:
    """`model` is a path, serialized bytes or an onnx.ModelProto.

    On CUDA, TF32 is turned off: onnxruntime enables it by default on Ampere and newer GPUs, and its
    10-bit mantissa puts Conv/MatMul results 1e-4..1e-2 away from Keras' float32, far outside a
    check's tolerance (measured on an H100: every fixture with a Dense or Conv failed with it on).
    `float16=True` leaves out the NCHWc layout pass: on x86-64 it dereferences a null pointer (the
    process dies) on a float16 Transpose feeding a MatMul, which a Dense after a return_sequences LSTM
    gives (seen with onnxruntime 1.32; microsoft/onnxruntime#28392).
    """
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_FATAL  # its errors come back as exceptions; its log lines are noise
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, (str, bytes, Path)) else model.SerializeToString()
    providers: list[Any] = [(p, {"use_tf32": "0"}) if p == PROVIDERS["cuda"] else p
                            for p in choose_providers(provider)]
    extra = {"disabled_optimizers": FLOAT16_DISABLED_OPTIMIZERS} if float16 else {}
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options, providers=providers,
                                **extra)


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def session_feeds(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each array in the type the session's input takes (float16 with --float16-io, object arrays for
    strings): onnxruntime refuses any other."""
    types = {i.name: i.type for i in session.get_inputs()}
    return {name: np.asarray(array).astype(NUMPY_OF_ORT.get(types.get(name, ""), np.asarray(array).dtype))
            for name, array in feeds.items()}


def run_error(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> str | None:
    """The error onnxruntime reports for these inputs (None when the model runs and every output holds
    values): how the size of unknown dimensions is probed."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = ORT_LOG_FATAL
    names = [o.name for o in session.get_outputs()]
    try:
        outputs = dict(zip(names, session.run(names, session_feeds(session, feeds), quiet)))
    except RUN_ERRORS as err:
        return str(err).replace("\n", " ")
    empty = [name for name, value in outputs.items() if np.asarray(value).size == 0]
    return f"output {', '.join(empty)} is empty" if empty else None
