"""Convert, write, and optionally cross-check against Keras: what `kconvert MODEL [--check]` does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.api import LoadedModel, load
from converter.errors import UsageError
from converter.ir import Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.passes.layout import LayoutOptions, to_channels_first, to_channels_last
from runtime.compare import ATOL, RTOL, OutputDiff, Tolerance, compare
from runtime.inputs import generate_inputs
from runtime.reference import load_keras_model, reference_outputs
from runtime.stored import load_reference

CHECK_BATCHES = (1, 3)


def default_output(model: Path) -> Path:
    return model.with_suffix(".onnx")


@dataclass
class ConvertRequest:
    """Everything `kconvert MODEL ...` was asked to do."""

    model: Path
    output: Path | None = None
    weights: Path | None = None
    opset: int | None = None
    backend: str | None = None
    float16: bool = False
    float16_io: bool = False
    nchw_inputs: bool = False
    nchw_outputs: bool = False
    check: bool = False
    reference: Path | None = None
    provider: str = "auto"
    rtol: float | None = None  # None: the default for the precision (float32 or float16)
    atol: float | None = None

    @property
    def verifies(self) -> bool:
        return self.check or self.reference is not None


def run_convert(request: ConvertRequest) -> dict[str, Any]:
    from converter.export.onnx import DEFAULT_OPSET, lower_for_export, write_ops

    output = default_output(request.model) if request.output is None else request.output
    if output.suffix.lower() == ".keras":
        return run_keras_export(request.model, output, request.weights, request.verifies)
    if output.suffix.lower() not in (".onnx", ""):
        raise UsageError(f"cannot write {output.name}: unknown output format",
                         hint="use -o NAME.onnx, or -o NAME.keras for a Keras 3 archive")
    start = time.perf_counter()
    layout = LayoutOptions(nchw_inputs=request.nchw_inputs, nchw_outputs=request.nchw_outputs)
    loaded = load(request.model, request.weights, backend=request.backend, layout=layout, mapped=True)
    # Without a check the Keras-layout weights are dropped as soon as each layer is lowered.
    ops = lower_for_export(loaded.graph, DEFAULT_OPSET if request.opset is None else request.opset,
                           loaded.artifact.keras_version, request.float16, request.float16_io,
                           release_weights=not request.verifies)
    write_ops(ops, output, loaded.graph.metadata)
    report: dict[str, Any] = {
        "ok": True, "model": str(request.model), "output": str(output), "opset": ops.opset,
        "seconds": round(time.perf_counter() - start, 3), "nodes": len(ops.ops),
        "float16": request.float16,
        "inputs": [{"name": t.name, "shape": list(t.shape or ())} for t in loaded.graph.inputs],
        "outputs": list(loaded.graph.output_names),
    }
    if request.verifies:
        report["check"] = _verify(loaded, output, request)
        report["ok"] = report["check"]["ok"]
    loaded.artifact.close()
    return report


def _verify(loaded: LoadedModel, output: Path, request: ConvertRequest) -> dict[str, Any]:
    from converter.export.onnx import FLOAT16_ATOL, FLOAT16_RTOL

    rtol = request.rtol if request.rtol is not None else (FLOAT16_RTOL if request.float16 else RTOL)
    atol = request.atol if request.atol is not None else (FLOAT16_ATOL if request.float16 else ATOL)
    tolerance = Tolerance(rtol, atol, atol_scaled=request.float16 and request.atol is None)
    if request.reference is not None:
        diffs, providers = check_against_reference(loaded, output, request.reference, request.provider, tolerance)
    else:
        diffs, providers = check_against_keras(loaded, output, request.weights, request.provider, tolerance)
    return {"ok": all(d.ok for d in diffs), "rtol": rtol, "atol": atol,
            **({"atol_scaled_by": "max(1, max|expected|)"} if tolerance.atol_scaled else {}),
            "against": str(request.reference) if request.reference is not None else "keras",
            "providers": providers, "outputs": [d.to_dict() for d in diffs]}


def to_keras_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    """A channels-first graph input/output (--nchw-inputs/--nchw-outputs) in Keras' channels_last order."""
    return np.transpose(array, to_channels_last(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def to_onnx_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    return np.transpose(array, to_channels_first(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def run_keras_export(model: Path, output: Path, weights: Path | None, check: bool) -> dict[str, Any]:
    """`kconvert MODEL -o NAME.keras`: a Keras 3 archive written without TensorFlow."""
    from converter.api import save_keras

    if check:
        raise UsageError("--check and --reference compare ONNX outputs; they do not apply to a .keras output",
                         hint="load the archive with keras.saving.load_model to compare")
    start = time.perf_counter()
    archive = save_keras(model, output, weights)
    return {"ok": True, "model": str(model), "output": str(archive.path), "format": "keras",
            "seconds": round(time.perf_counter() - start, 3), "notes": archive.notes}


def check_against_keras(loaded: LoadedModel, onnx_path: Path, weights: Path | None, provider: str,
                        tolerance: Tolerance) -> tuple[list[OutputDiff], list[str]]:
    """Per output, the worst error over batch sizes 1 and 3 of generated inputs; and the providers that ran."""
    keras_model = load_keras_model(loaded.artifact, weights)
    from runtime.session import make_session, run  # onnxruntime only when checking

    session = make_session(onnx_path, provider)
    names = list(loaded.graph.output_names)
    worst: dict[str, OutputDiff] = {}
    for batch in CHECK_BATCHES:
        feeds = generate_inputs(loaded.graph, batch, seed=batch)
        ours = run(session, feeds)
        theirs = reference_outputs(keras_model, [to_keras_layout(t, feeds[t.name]) for t in loaded.graph.inputs])
        mine = [to_keras_layout(t, ours[n]) for t, n in zip(loaded.graph.outputs, names)]
        for diff in compare(mine, theirs, names, tolerance):
            if diff.name not in worst or _worse(diff, worst[diff.name]):
                worst[diff.name] = diff
    return [worst[n] for n in names], session.get_providers()


def check_against_reference(loaded: LoadedModel, onnx_path: Path, reference: Path, provider: str,
                            tolerance: Tolerance) -> tuple[list[OutputDiff], list[str]]:
    """Compare with Keras outputs stored in an .npz (see runtime/stored.py): no TensorFlow needed."""
    names = list(loaded.graph.output_names)
    feeds, expected = load_reference(reference, [t.name for t in loaded.graph.inputs], names)
    from runtime.session import make_session, run  # onnxruntime only when checking

    session = make_session(onnx_path, provider)
    dtypes = {i.name: i.type for i in session.get_inputs()}
    tensors = {t.name: t for t in loaded.graph.inputs}
    feeds = {k: to_onnx_layout(tensors[k], v).astype(_NUMPY_OF_ORT.get(dtypes[k], v.dtype)) for k, v in feeds.items()}
    ours = run(session, feeds)
    mine = [to_keras_layout(t, ours[n]) for t, n in zip(loaded.graph.outputs, names)]
    return compare(mine, expected, names, tolerance), session.get_providers()


_NUMPY_OF_ORT = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
                 "tensor(double)": "float64", "tensor(float16)": "float16"}


def _worse(a: OutputDiff, b: OutputDiff) -> bool:
    return (not a.ok and b.ok) or (a.ok == b.ok and a.max_abs > b.max_abs)
