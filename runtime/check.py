"""Convert, write, and optionally cross-check against Keras: what `kconvert MODEL [--check]` does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from converter.api import LoadedModel, load
from converter.errors import CheckFailedError, UsageError
from runtime.compare import OutputDiff, compare
from runtime.inputs import generate_inputs
from runtime.reference import load_keras_model, reference_outputs
from runtime.session import make_session, run
from runtime.stored import load_reference

CHECK_BATCHES = (1, 3)


def default_output(model: Path) -> Path:
    return model.with_suffix(".onnx")


def run_convert(model: Path, output: Path | None, weights: Path | None, opset: int | None, check: bool,
                provider: str = "auto", rtol: float = 1e-4, atol: float = 1e-5,
                reference: Path | None = None, backend: str | None = None) -> dict[str, Any]:
    from converter.export.onnx import DEFAULT_OPSET, export, save_model

    output = default_output(model) if output is None else output
    if output.suffix.lower() == ".keras":
        return run_keras_export(model, output, weights, check or reference is not None)
    if output.suffix.lower() not in (".onnx", ""):
        raise UsageError(f"cannot write {output.name}: unknown output format",
                         hint="use -o NAME.onnx, or -o NAME.keras for a Keras 3 archive")
    start = time.perf_counter()
    loaded = load(model, weights, backend=backend)
    onnx_model = export(loaded.graph, DEFAULT_OPSET if opset is None else opset, loaded.artifact.keras_version,
                        loaded.graph.metadata)
    save_model(onnx_model, output)
    report: dict[str, Any] = {
        "ok": True, "model": str(model), "output": str(output), "opset": onnx_model.opset_import[0].version,
        "seconds": round(time.perf_counter() - start, 3), "nodes": len(onnx_model.graph.node),
        "inputs": [{"name": t.name, "shape": list(t.shape or ())} for t in loaded.graph.inputs],
        "outputs": list(loaded.graph.output_names),
    }
    if check or reference is not None:
        diffs = (check_against_reference(loaded, output, reference, provider, rtol, atol) if reference is not None
                 else check_against_keras(loaded, output, weights, provider, rtol, atol))
        report["check"] = {"ok": all(d.ok for d in diffs), "rtol": rtol, "atol": atol,
                           "against": str(reference) if reference is not None else "keras",
                           "outputs": [d.to_dict() for d in diffs]}
        report["ok"] = report["check"]["ok"]
    loaded.artifact.close()
    return report


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
                        rtol: float, atol: float) -> list[OutputDiff]:
    """Per output, the worst error over batch sizes 1 and 3 of generated inputs."""
    keras_model = load_keras_model(loaded.artifact, weights)
    session = make_session(onnx_path, provider)
    names = list(loaded.graph.output_names)
    worst: dict[str, OutputDiff] = {}
    for batch in CHECK_BATCHES:
        feeds = generate_inputs(loaded.graph, batch, seed=batch)
        ours = run(session, feeds)
        theirs = reference_outputs(keras_model, [feeds[t.name] for t in loaded.graph.inputs])
        for diff in compare([ours[n] for n in names], theirs, names, rtol, atol):
            if diff.name not in worst or _worse(diff, worst[diff.name]):
                worst[diff.name] = diff
    return [worst[n] for n in names]


def check_against_reference(loaded: LoadedModel, onnx_path: Path, reference: Path, provider: str,
                            rtol: float, atol: float) -> list[OutputDiff]:
    """Compare with Keras outputs stored in an .npz (see runtime/stored.py): no TensorFlow needed."""
    names = list(loaded.graph.output_names)
    feeds, expected = load_reference(reference, [t.name for t in loaded.graph.inputs], names)
    session = make_session(onnx_path, provider)
    dtypes = {i.name: i.type for i in session.get_inputs()}
    feeds = {k: v.astype(_NUMPY_OF_ORT.get(dtypes[k], v.dtype)) for k, v in feeds.items()}
    ours = run(session, feeds)
    return compare([ours[n] for n in names], expected, names, rtol, atol)


_NUMPY_OF_ORT = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
                 "tensor(double)": "float64", "tensor(float16)": "float16"}


def _worse(a: OutputDiff, b: OutputDiff) -> bool:
    return (not a.ok and b.ok) or (a.ok == b.ok and a.max_abs > b.max_abs)


def assert_matches(diffs: list[OutputDiff]) -> None:
    bad = [d for d in diffs if not d.ok]
    if bad:
        worst = max(bad, key=lambda d: d.max_abs)
        raise CheckFailedError(f"output '{worst.name}' differs from Keras: max abs {worst.max_abs:.3g}",
                               layer=worst.name, hint="report this model to kconvert")


