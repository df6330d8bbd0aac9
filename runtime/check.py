"""Convert, write, and optionally cross-check against Keras: what `kconvert MODEL [--check]` does.

Order of work, so that a run that fails leaves no file: options are checked first (runtime/options.py),
then the model is read, then what the check needs (the stored reference fitted to the model, or the
Keras model loaded), and only then is the ONNX written. A check that runs and finds a mismatch keeps
the file (the report says so: users inspect it); any error during the check removes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from converter.api import LoadedModel, load
from converter.export.files import cannot_write
from converter.ir import Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.passes.layout import LayoutOptions, to_channels_first, to_channels_last
from runtime.compare import ATOL, RTOL, OutputDiff, Tolerance, compare
from runtime.inputs import DEFAULT_UNKNOWN_DIM, find_unknown_dim_size, generate_inputs, has_unknown_dims
from runtime.options import ConvertRequest, default_output, validate
from runtime.reference import load_keras_model, reference_outputs
from runtime.stored import fit_reference

__all__ = ["ConvertRequest", "default_output", "run_convert"]
CHECK_BATCHES = (1, 3)
Reference = tuple[dict[str, np.ndarray], list[np.ndarray]]


def run_convert(request: ConvertRequest) -> dict[str, Any]:
    output = validate(request)
    if output.suffix.lower() == ".keras":
        return run_keras_export(request, output)
    start = time.perf_counter()
    layout = LayoutOptions(nchw_inputs=request.nchw_inputs, nchw_outputs=request.nchw_outputs)
    loaded = load(request.model, request.weights, backend=request.backend, layout=layout, mapped=True)
    try:
        return _convert_loaded(loaded, output, request, start)
    finally:
        loaded.artifact.close()


def _convert_loaded(loaded: LoadedModel, output: Path, request: ConvertRequest, start: float) -> dict[str, Any]:
    from converter.export.onnx import DEFAULT_OPSET, lower_for_export, uses_external_data, write_ops

    stored = fit_reference(request.reference, loaded.graph) if request.reference is not None else None
    aside = time.perf_counter()
    keras_model = load_keras_model(loaded.artifact, request.weights) if request.check else None
    start += time.perf_counter() - aside  # "seconds" is the conversion's time, not TensorFlow's
    # Without a check the Keras-layout weights are dropped as soon as each layer is lowered.
    ops = lower_for_export(loaded.graph, DEFAULT_OPSET if request.opset is None else request.opset,
                           loaded.artifact.keras_version, request.float16, request.float16_io,
                           release_weights=not request.verifies)
    written = [output, *([output.with_name(f"{output.name}.data")] if uses_external_data(ops) else [])]
    try:
        write_ops(ops, output, loaded.graph.metadata)
    except OSError as err:  # disk full, no permission: the machine's state, not a kconvert bug
        raise cannot_write(output, err) from None
    report: dict[str, Any] = {
        "ok": True, "model": str(request.model), "output": str(output), "opset": ops.opset,
        "seconds": round(time.perf_counter() - start, 3), "nodes": len(ops.ops),
        "float16": request.float16,
        "inputs": [{"name": t.name, "shape": list(t.shape or ())} for t in loaded.graph.inputs],
        "outputs": list(loaded.graph.output_names),
    }
    if request.verifies:
        with _removed_on_error(written):
            report["check"] = _verify(loaded, output, request, keras_model, stored)
        report["ok"] = report["check"]["ok"]
    return report


@contextmanager
def _removed_on_error(paths: list[Path]) -> Iterator[None]:
    """The files written before a check are removed if the check cannot run to its answer, whatever the
    error; the error itself goes on to the caller."""
    try:
        yield
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise


def _verify(loaded: LoadedModel, output: Path, request: ConvertRequest, keras_model: Any,
            stored: Reference | None) -> dict[str, Any]:
    from converter.export.onnx import FLOAT16_ATOL, FLOAT16_RTOL

    rtol = request.rtol if request.rtol is not None else (FLOAT16_RTOL if request.float16 else RTOL)
    atol = request.atol if request.atol is not None else (FLOAT16_ATOL if request.float16 else ATOL)
    tolerance = Tolerance(rtol, atol, atol_scaled=request.float16 and request.atol is None)
    provider = request.provider or "auto"
    if stored is not None:
        diffs, providers = check_against_reference(loaded, output, stored, provider, tolerance, request.float16)
    else:
        diffs, providers = check_against_keras(loaded, output, keras_model, provider, tolerance, request.float16)
    return {"ok": all(d.ok for d in diffs), "rtol": rtol, "atol": atol,
            **({"atol_scaled_by": "max(1, max|expected|)"} if tolerance.atol_scaled else {}),
            "against": str(request.reference) if request.reference is not None else "keras",
            "providers": providers, "outputs": [d.to_dict() for d in diffs]}


def to_keras_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    """A channels-first graph input/output (--nchw-inputs/--nchw-outputs) in Keras' channels_last order."""
    return np.transpose(array, to_channels_last(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def to_onnx_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    return np.transpose(array, to_channels_first(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def as_keras_input(array: np.ndarray) -> np.ndarray:
    """What Keras gets for the values onnxruntime got: the Keras model computes in float32."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def run_keras_export(request: ConvertRequest, output: Path) -> dict[str, Any]:
    """`kconvert MODEL -o NAME.keras`: a Keras 3 archive written without TensorFlow."""
    from converter.api import save_keras

    start = time.perf_counter()
    archive = save_keras(request.model, output, request.weights, backend=request.backend)
    return {"ok": True, "model": str(request.model), "output": str(archive.path), "format": "keras",
            "seconds": round(time.perf_counter() - start, 3), "notes": archive.notes}


def check_against_keras(loaded: LoadedModel, onnx_path: Path, keras_model: Any, provider: str,
                        tolerance: Tolerance, float16: bool = False) -> tuple[list[OutputDiff], list[str]]:
    """Per output, the worst error over batch sizes 1 and 3 of generated inputs; and the providers that ran."""
    from runtime.session import make_session, run, run_error, session_feeds  # onnxruntime only when checking

    session = make_session(onnx_path, provider, float16=float16)
    graph = loaded.graph
    size = DEFAULT_UNKNOWN_DIM
    if has_unknown_dims(graph):
        size = find_unknown_dim_size(graph, lambda feeds: run_error(session, feeds))
    names = list(graph.output_names)
    worst: dict[str, OutputDiff] = {}
    for batch in CHECK_BATCHES:
        feeds = session_feeds(session, generate_inputs(graph, batch, seed=batch, size=size))
        ours = run(session, feeds)
        theirs = reference_outputs(keras_model, [to_keras_layout(t, as_keras_input(feeds[t.name]))
                                                 for t in graph.inputs])
        mine = [to_keras_layout(t, ours[n]) for t, n in zip(graph.outputs, names)]
        for diff in compare(mine, theirs, names, tolerance):
            if diff.name not in worst or _worse(diff, worst[diff.name]):
                worst[diff.name] = diff
    return [worst[n] for n in names], session.get_providers()


def check_against_reference(loaded: LoadedModel, onnx_path: Path, stored: Reference, provider: str,
                            tolerance: Tolerance, float16: bool = False) -> tuple[list[OutputDiff], list[str]]:
    """Compare with Keras outputs stored in an .npz (fitted to the model by runtime/stored.py)."""
    from runtime.session import make_session, run, session_feeds  # onnxruntime only when checking

    inputs, expected = stored
    names = list(loaded.graph.output_names)
    session = make_session(onnx_path, provider, float16=float16)
    tensors = {t.name: t for t in loaded.graph.inputs}
    ours = run(session, session_feeds(session, {k: to_onnx_layout(tensors[k], v) for k, v in inputs.items()}))
    mine = [to_keras_layout(t, ours[n]) for t, n in zip(loaded.graph.outputs, names)]
    return compare(mine, expected, names, tolerance), session.get_providers()


def _worse(a: OutputDiff, b: OutputDiff) -> bool:
    return (not a.ok and b.ok) or (a.ok == b.ok and a.max_abs > b.max_abs)
