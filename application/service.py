"""The application service: what `kconvert MODEL [--check]` does, shared by the CLI and by programs.

`convert(request)` checks every option, reads the model, prepares what the check needs, writes the output
and checks it; it returns a typed result (ConversionResult, or KerasExportResult for a .keras output) that
the CLI renders as a table or as JSON. Order of work, so that a run that fails leaves no file: options
first (application/options.py), then the model, then what the check needs (the stored reference fitted to
the model; the --inputs read and fitted to it, or the --input-shape sizes checked against it; the Keras
model loaded), and only then is the ONNX written. A check that runs and finds a
mismatch keeps the file (the result says so: users inspect it); any error during the check removes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from application.extension_files import extensions_loaded
from application.optimize import OptimizeResult, optimize_written
from application.options import ConvertRequest, default_output, target_choice, validate
from application.progress import Advance, Progress
from application.quantize import CALIBRATION_SAMPLES, QuantizeResult, quantize_written
from converter.api import LoadedModel, OnnxOptions, WrittenOnnx, opened, save_keras, write_onnx
from converter.errors import CheckFailedError
from converter.export.targets import TargetChoice
from converter.passes.layout import LayoutOptions
from runtime.check import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLES,
    Feeding,
    InputsUsed,
    Reference,
    check_against_keras,
    check_against_reference,
)
from runtime.compare import ATOL, RTOL, OutputDiff, Tolerance
from runtime.inputs import chosen_dims
from runtime.reference import ReferenceBackend, load_keras_model, reference_backend
from runtime.stored import fit_reference
from runtime.testdata import TestSet, data_folder_of, embed_sets, write_sets
from runtime.user_inputs import load_inputs, model_inputs

__all__ = ["CheckResult", "ConversionResult", "ConvertRequest", "KerasExportResult", "check_tolerance", "check_written",
           "convert", "default_output"]
ATOL_SCALED_BY = "max(1, max|expected|)"


@dataclass(frozen=True)
class CheckResult:
    """The comparison of the written file with Keras: per-output diffs, under `tolerance`, on `providers`."""

    tolerance: Tolerance
    against: str  # "keras", or the path of the stored reference
    providers: list[str]
    outputs: list[OutputDiff]
    sets: list[TestSet] = field(default_factory=list, repr=False, compare=False)  # what was fed and expected
    inputs: InputsUsed | None = None  # a live check's inputs: source, samples, batches, the shapes fed
    reference: ReferenceBackend | None = None  # a live check's Keras and backend

    @property
    def ok(self) -> bool:
        return all(diff.ok for diff in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        scaled = {"atol_scaled_by": ATOL_SCALED_BY} if self.tolerance.atol_scaled else {}
        fed = {"inputs": self.inputs.to_dict()} if self.inputs is not None else {}
        if self.reference is not None:
            fed["reference"] = self.reference.to_dict()
        return {"ok": self.ok, "rtol": self.tolerance.rtol, "atol": self.tolerance.atol, **scaled,
                "against": self.against, "providers": self.providers, **fed,
                "outputs": [d.to_dict() for d in self.outputs]}


@dataclass(frozen=True)
class ConversionResult:
    """An ONNX file written (and checked, when asked)."""

    model: Path
    output: Path
    opset: int
    seconds: float
    nodes: int
    float16: bool
    inputs: list[tuple[str, list[Any]]]  # name, shape as the graph declares it
    outputs: list[str]
    check: CheckResult | None = None
    test_data: Path | None = None  # where --save-test-data wrote the check's inputs and expected outputs
    target: TargetChoice | None = None  # --target-onnxruntime: the release, and the opset and IR version chosen
    optimize: OptimizeResult | None = None  # what --optimize changed
    quantize: QuantizeResult | None = None  # --quantize int8: how, and int8 against float32

    @property
    def ok(self) -> bool:
        return self.check is None or self.check.ok

    @property
    def failure(self) -> CheckFailedError | None:
        """The mismatch the check found, as the error it is (the file stays written)."""
        if self.ok:
            return None
        return CheckFailedError(f"{self.output} does not match Keras", hint="the file is kept for inspection")

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "ok": self.ok, "model": str(self.model), "output": str(self.output), "opset": self.opset,
            "seconds": self.seconds, "nodes": self.nodes, "float16": self.float16,
            "inputs": [{"name": name, "shape": shape} for name, shape in self.inputs], "outputs": self.outputs}
        if self.check is not None:
            report["check"] = self.check.to_dict()
        if self.test_data is not None:
            report["test_data"] = str(self.test_data)
        if self.target is not None:
            report["target"] = self.target.to_dict()
        if self.optimize is not None:
            report["optimize"] = self.optimize.to_dict()
        if self.quantize is not None:
            report["quantize"] = self.quantize.to_dict()
        return report


@dataclass(frozen=True)
class KerasExportResult:
    """A Keras 3 archive written without TensorFlow, with notes on what it leaves out."""

    model: Path
    output: Path
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return True

    @property
    def failure(self) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "model": str(self.model), "output": str(self.output), "format": "keras",
                "seconds": self.seconds, "notes": self.notes}


def convert(request: ConvertRequest, progress: Progress | None = None) -> ConversionResult | KerasExportResult:
    """`progress`: what to show on long steps (the CLI's Progress.for_cli); None shows nothing."""
    output = validate(request)
    with extensions_loaded(request.extension):  # the user's handler files, before the model is read
        if output.suffix.lower() == ".keras":
            return _export_keras(request, output)
        start = time.perf_counter()
        layout = LayoutOptions(nchw_inputs=request.nchw_inputs, nchw_outputs=request.nchw_outputs)
        with opened(request.model, request.weights, backend=request.backend, layout=layout, mapped=True,
                    streaming=request.streaming) as loaded:
            return _convert_loaded(loaded, output, request, start, progress or Progress.off())


def _convert_loaded(loaded: LoadedModel, output: Path, request: ConvertRequest, start: float,
                    progress: Progress) -> ConversionResult:
    stored = fit_reference(request.reference, loaded.graph) if request.reference is not None else None
    aside = time.perf_counter()
    feeding = feeding_for(request, loaded) if request.feeds else None  # checked before anything is written
    keras_model = None
    if request.check:
        with progress.status(f"loading {request.model.name} in Keras"):
            keras_model = load_keras_model(loaded.artifact, request.weights, request.custom_objects)
    start += time.perf_counter() - aside  # "seconds" is the conversion's time, not TensorFlow's or the inputs'
    # Without a check the Keras-layout weights are dropped as soon as each layer is lowered.
    target = target_choice(request)
    opset = request.opset if target is None else target.opset
    written = write_onnx(loaded, output, OnnxOptions(opset, request.float16, request.float16_io),
                         release_weights=not request.verifies)
    seconds = round(time.perf_counter() - start, 3)
    optimized, quantized = _rewritten(loaded, written, request, feeding, progress)
    check = None
    if request.verifies:
        kept = [*written.files, *([quantized.fp32_path] if quantized else [])]
        with _removed_on_error(kept), progress.steps("checking batches") as advance:
            check = check_written(loaded, written, request, keras_model, stored, feeding, advance)
    test_data = write_sets(data_folder_of(output), check.sets) if check and request.save_test_data else None
    if check and request.embed_test_data:
        embed_sets(output, check.sets, request.embed_limit)
    graph = loaded.graph
    return ConversionResult(request.model, output, written.opset, seconds, written.nodes, request.float16,
                            [(t.name, list(t.shape or ())) for t in graph.inputs], list(graph.output_names), check,
                            test_data, target, optimized, quantized)


def _rewritten(loaded: LoadedModel, written: WrittenOnnx, request: ConvertRequest, feeding: Feeding | None,
               progress: Progress) -> tuple[OptimizeResult | None, QuantizeResult | None]:
    """--optimize, then --quantize (onnxslim's fusions quantize better), both before the check: the check,
    and the test data it saves, are the final file's."""
    optimized = quantized = None
    if request.optimize:
        with _removed_on_error(written.files), progress.status("optimising with onnxslim"):
            float32 = replace(request, quantize=None)  # onnxslim's model is float32: its tolerance
            optimized = optimize_written(written, loaded.graph, check_tolerance(float32), request.input_shapes,
                                         request.float16)
    if request.quantize is not None:
        with _removed_on_error(written.files), progress.status("quantizing to int8"):
            quantized = quantize_written(written, loaded.graph, _calibration(request, feeding), _int8_tolerance())
    return optimized, quantized


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


def check_tolerance(request: ConvertRequest) -> Tolerance:
    """The tolerance asked for, or the default for the precision (float16's and int8's atol grow with the
    outputs)."""
    from converter.tolerances import FLOAT16_ATOL, FLOAT16_RTOL

    default_rtol, default_atol = _int8_tolerance() if request.quantize else (
        (FLOAT16_RTOL, FLOAT16_ATOL) if request.float16 else (RTOL, ATOL))
    rtol = request.rtol if request.rtol is not None else default_rtol
    atol = request.atol if request.atol is not None else default_atol
    return Tolerance(rtol, atol, atol_scaled=(request.float16 or request.quantize is not None) and request.atol is None)


def _calibration(request: ConvertRequest, feeding: Feeding | None) -> Feeding:
    """--quantize's calibration data: the --inputs, or CALIBRATION_SAMPLES generated samples (--samples)."""
    assert feeding is not None  # request.feeds holds with --quantize
    if feeding.given is not None:
        return feeding
    return replace(feeding, samples=request.samples or CALIBRATION_SAMPLES)


def _int8_tolerance() -> tuple[float, float]:
    from converter.tolerances import QUANTIZED_ATOL, QUANTIZED_RTOL

    return QUANTIZED_RTOL, QUANTIZED_ATOL


def feeding_for(request: ConvertRequest, loaded: LoadedModel) -> Feeding:
    """What the live check feeds, checked against the model before anything is written: the --inputs
    read and fitted (names, dtypes, shapes), or the --input-shape sizes fitted to the inputs' dims."""
    batch_size = request.batch_size or DEFAULT_BATCH_SIZE
    if request.inputs is not None:
        batches = load_inputs(request.inputs, model_inputs(loaded.graph), batch_size)
        return Feeding(given=batches, source=str(request.inputs), batch_size=batch_size)
    shapes = request.input_shapes
    chosen_dims(loaded.graph, shapes)
    return Feeding(samples=request.samples or DEFAULT_SAMPLES, seed=request.seed or 0, batch_size=batch_size,
                   shapes=shapes)


def check_written(loaded: LoadedModel, written: WrittenOnnx, request: ConvertRequest, keras_model: Any,
                  stored: Reference | None, feeding: Feeding | None = None, advance: Advance | None = None
                  ) -> CheckResult:
    """Compare the written file with the stored reference, or with the loaded Keras model on `feeding`
    (generated inputs when None); `advance` is told each batch done."""
    tolerance = check_tolerance(request)
    provider = request.provider or "auto"
    sets: list[TestSet] = []
    kept = sets if request.save_test_data or request.embed_test_data else None  # held only when saved
    used = None
    if stored is not None:
        diffs, providers = check_against_reference(loaded, written.path, stored, provider, tolerance,
                                                   request.float16, kept)
    else:
        diffs, providers, used = check_against_keras(loaded, written.path, keras_model, provider, tolerance,
                                                     request.float16, kept, feeding, advance)
    against = str(request.reference) if request.reference is not None else "keras"
    backend = reference_backend(keras_model) if stored is None else None
    return CheckResult(tolerance, against, providers, diffs, sets, used, backend)


def _export_keras(request: ConvertRequest, output: Path) -> KerasExportResult:
    """`kconvert MODEL -o NAME.keras`: a Keras 3 archive written without TensorFlow."""
    start = time.perf_counter()
    archive = save_keras(request.model, output, request.weights, backend=request.backend)
    return KerasExportResult(request.model, archive.path, round(time.perf_counter() - start, 3), archive.notes)
