"""`kconvert verify MODEL.onnx`: does a deployed ONNX file still answer like Keras? It replays the test
data saved beside it (`kconvert MODEL --check --save-test-data`, the ONNX standard layout, runtime/
testdata.py) or an --reference .npz on onnxruntime, with per-output statistics (runtime/stats.py).
No TensorFlow. Reports: the terminal table (application/report.py), --json, --junit, --markdown, --html
(application/html_report.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from application.extension_files import extensions_loaded
from application.options import check_feeding_values, feeding_given, parse_input_shapes
from application.progress import Progress
from converter.errors import CheckFailedError, UsageError
from converter.tolerances import ATOL, FLOAT16_ATOL, FLOAT16_RTOL, QUANTIZED_ATOL, QUANTIZED_RTOL, RTOL
from runtime.localize_types import DEFAULT_BUDGET_BYTES, MODES, Localization
from runtime.replay import ModelFacts, SetResult, Tolerances, model_facts, replay
from runtime.testdata import TestSet, data_folder_of, embedded_sets, travelling_sets
from runtime.value_map import ValueMap, read_value_map

if TYPE_CHECKING:  # verifying from stored data never loads the Keras side (start-up time)
    from application.against import KerasRun, LiveKeras
    from runtime.check import InputsUsed
    from runtime.reference import ReferenceBackend

MB = 1 << 20
# By the model's precision: float16 as export/onnx.py checks it; int8: a quantization step of a unit-range
# activation is 1/127, and errors add up over the layers.
DEFAULT_TOLERANCES = {"float32": (RTOL, ATOL), "float16": (FLOAT16_RTOL, FLOAT16_ATOL),
                      "quantized": (QUANTIZED_RTOL, QUANTIZED_ATOL)}

__all__ = ["VerifyRequest", "VerifyResult", "parse_tolerances", "verify"]


@dataclass
class VerifyRequest:
    model: Path
    test_data: Path | None = None  # None: <MODEL stem>_test_data beside the model
    reference: Path | None = None
    provider: str | None = None
    tolerances: list[str] = field(default_factory=list)  # NAME=RTOL,ATOL
    junit: Path | None = None
    markdown: Path | None = None
    html: Path | None = None
    against: Path | None = None  # the Keras file: live Keras computes the expected outputs
    weights: Path | None = None  # the weights of an --against model.json
    localize: bool = False
    localize_mode: str = "both"  # accumulated | isolated | both
    localize_budget_mb: float = DEFAULT_BUDGET_BYTES / MB
    inputs: Path | None = None  # with --against: what to feed (.npz, a folder of NAME.npy, or test data)
    samples: int | None = None  # with --against: generated samples (default 4)
    seed: int | None = None
    batch_size: int | None = None
    input_shape: Sequence[str] = ()  # NAME=D1,D2,...: unknown dims of generated inputs (Keras' order)
    extension: Sequence[Path] = ()  # with --against: handler files for the Keras file's custom layers
    custom_objects: Path | None = None  # with --against: a Python file of the user's Keras classes, run for Keras


@dataclass(frozen=True)
class VerifyResult:
    model: Path
    source: Path  # the test data folder or the .npz
    default_tolerance: tuple[float, float]
    providers: list[str]
    sets: list[SetResult]
    localizations: list[Localization] = field(default_factory=list)  # --localize: one per mode run
    inputs: InputsUsed | None = None  # with --against: what was fed to both
    backend: ReferenceBackend | None = None  # with --against: the Keras and backend that answered

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sets)

    @property
    def failure(self) -> CheckFailedError | None:
        if self.ok:
            return None
        bad = sorted({s.name for r in self.sets for s in r.outputs if not s.ok})
        return CheckFailedError(f"{self.model} does not match {self.reference_name} at {', '.join(bad)}")

    @property
    def reference_name(self) -> str:
        """What the answers were compared with, for messages: Keras itself, or stored data."""
        if self.backend is not None:
            return f"{self.backend.describe()} ({self.source})"
        return f"its test data ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "model": str(self.model), "test_data": str(self.source),
                "rtol": self.default_tolerance[0], "atol": self.default_tolerance[1], "providers": self.providers,
                "sets": [{"index": r.index, "ok": r.ok, "outputs": [s.to_dict() for s in r.outputs]}
                         for r in self.sets],
                "localizations": [loc.to_dict() for loc in self.localizations],
                "inputs": None if self.inputs is None else self.inputs.to_dict(),
                "reference": None if self.backend is None else self.backend.to_dict()}


def verify(request: VerifyRequest, progress: Progress | None = None) -> VerifyResult:
    """`progress`: what to show on long steps (the CLI's Progress.for_cli); None shows nothing."""
    progress = progress or Progress.off()
    tolerances = parse_tolerances(request.tolerances)
    _check_paths(request)
    if request.provider is not None:
        from runtime.session import choose_providers

        choose_providers(request.provider)
    facts = model_facts(request.model)  # the one parse of the file before onnxruntime's
    value_map = _localizable(request.model, facts) if request.localize else None  # before Keras loads
    with extensions_loaded(request.extension):  # --against reads the Keras file's custom layers too
        source, sets, run = _load_sets(request, facts, progress)
    default = DEFAULT_TOLERANCES[facts.precision]
    with progress.status(f"running {len(sets)} test sets on onnxruntime"):
        results, providers = replay(request.model, sets, request.provider or "auto", tolerances, default)
    found: list[Localization] = []
    if run is not None and value_map is not None:
        with progress.status("localising: comparing every Keras layer's output"):
            found = _localize(request, value_map, facts.precision, run.keras, sets[0], default)
    result = VerifyResult(request.model, source, default, providers, results, found,
                          None if run is None else run.inputs, None if run is None else run.backend)
    _write_reports(request, result)
    return result


def _write_reports(request: VerifyRequest, result: VerifyResult) -> None:
    from application.html_report import html_page
    from application.verify_reports import junit_xml, markdown

    writers = [("--junit", request.junit, junit_xml), ("--markdown", request.markdown, markdown),
               ("--html", request.html, html_page)]
    for option, path, render in writers:
        if path is None:
            continue
        try:
            path.write_text(render(result), encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write {path} (given to {option}): {err.strerror or err}",
                             hint="give a path in an existing, writable folder") from None


def parse_tolerances(items: list[str]) -> Tolerances:
    """NAME=RTOL,ATOL per output."""
    found: Tolerances = {}
    for item in items:
        name, _, numbers = item.rpartition("=")
        parts = numbers.split(",")
        try:
            rtol, atol = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            rtol = atol = math.nan
        if not name or not all(math.isfinite(v) and v >= 0 for v in (rtol, atol)):
            raise UsageError(f"--tol {item}: expected NAME=RTOL,ATOL with finite numbers >= 0",
                             hint="for example --tol logits=1e-4,1e-5")
        found[name] = (rtol, atol)
    return found


def _check_paths(request: VerifyRequest) -> None:
    if not request.model.is_file():
        raise UsageError(f"no such file: {request.model}", hint="give the path of an .onnx file")
    if request.reference is not None and request.test_data is not None:
        raise UsageError("--test-data and --reference are two sources of test data; give one")
    if request.reference is not None and request.against is not None:
        raise UsageError("--reference and --against are two references; give one",
                         hint="--against computes the expected outputs with Keras itself")
    for option, path in (("--reference", request.reference), ("--against", request.against),
                         ("--weights", request.weights)):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path} (given to {option})", hint="check the path")
    if request.weights is not None and request.against is None:
        raise UsageError("--weights is the weights file of an --against model.json; there is no --against")
    _check_user_files(request)
    if request.localize and request.against is None:
        raise UsageError("--localize needs --against KERAS_FILE: Keras computes each layer's output",
                         hint="kconvert verify MODEL.onnx --against MODEL.h5 --localize")
    if request.localize_mode not in (*MODES, "both"):
        raise UsageError(f"--localize-mode {request.localize_mode}: expected accumulated, isolated or both")
    if not request.localize_budget_mb > 0:
        raise UsageError(f"--localize-budget {request.localize_budget_mb}: expected a size in MB above 0")
    _check_feeding(request)


def _check_user_files(request: VerifyRequest) -> None:
    """--extension and --custom-objects serve the Keras file of --against, and must exist."""
    given = [("--extension", path) for path in request.extension] + \
        ([("--custom-objects", request.custom_objects)] if request.custom_objects is not None else [])
    for option, path in given:
        if request.against is None:
            raise UsageError(f"{option} applies to the Keras file of --against, and --against was not given",
                             hint=f"add --against KERAS_FILE, or drop {option}")
        if not path.is_file():
            raise UsageError(f"no such file: {path} (given to {option})", hint="check the path")


def _check_feeding(request: VerifyRequest) -> None:
    """What to feed applies only to --against (stored data holds its own inputs), and is checked here."""
    fed, generated = feeding_given(request)
    if fed and request.against is None:
        raise UsageError(f"{', '.join(fed)}: what is fed to Keras and onnxruntime with --against, and --against was "
                         "not given", hint="stored test data holds its own inputs; add --against KERAS_FILE")
    check_feeding_values(request, generated)
    if request.inputs is not None and not request.inputs.exists():
        raise UsageError(f"no such file or folder: {request.inputs} (given to --inputs)", hint="check the path")


def _load_sets(request: VerifyRequest, facts: ModelFacts, progress: Progress
               ) -> tuple[Path, list[TestSet], KerasRun | None]:
    """The test sets to replay; with --against, their expected outputs are Keras' (and Keras is kept for
    localisation)."""
    if request.reference is not None:
        from runtime.stored import load_reference

        given, expected = load_reference(request.reference, facts.inputs, facts.outputs)
        return request.reference, [TestSet(given, dict(zip(facts.outputs, expected)))], None
    if request.against is None:
        source, sets = travelling_sets(request.model, request.test_data, facts.metadata)
        return source, sets, None
    return _against_keras(request, facts, _stored_sets(request, facts), progress)


def _stored_sets(request: VerifyRequest, facts: ModelFacts) -> list[TestSet] | None:
    """The model's travelling test data, when it has some: --against runs Keras on the same inputs."""
    has_data = request.test_data is not None or data_folder_of(request.model).is_dir() or \
        embedded_sets(facts.metadata, request.model) is not None
    return travelling_sets(request.model, request.test_data, facts.metadata)[1] if has_data else None


def _against_keras(request: VerifyRequest, facts: ModelFacts, stored: list[TestSet] | None, progress: Progress
                   ) -> tuple[Path, list[TestSet], KerasRun]:
    from application.against import AgainstRequest, keras_sets
    from runtime.check import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES, Feeding
    from runtime.streamed import stream_states

    assert request.against is not None
    feeding = Feeding(samples=request.samples or DEFAULT_SAMPLES, seed=request.seed or 0,
                      batch_size=request.batch_size or DEFAULT_BATCH_SIZE,
                      shapes=parse_input_shapes(request.input_shape))
    generate = request.samples is not None or request.seed is not None or bool(request.input_shape)
    value_map = read_value_map(facts.metadata, str(request.model))
    asked = AgainstRequest(request.model, request.against, request.weights, value_map, stored, feeding,
                           request.inputs, generate, request.custom_objects)
    with progress.steps(f"Keras ({request.against.name}) on each batch") as advance:
        run = keras_sets(asked, facts.inputs, facts.outputs, advance, stream_states(facts.metadata))
    return request.against, run.sets, run


def _localizable(model: Path, facts: ModelFacts) -> ValueMap:
    """The model's layer map; without one no value can be named after a Keras layer."""
    value_map = read_value_map(facts.metadata, str(model))
    if value_map is None:
        raise UsageError(f"{model} holds no map from Keras layers to its values, so --localize cannot name a layer",
                         hint="convert the model with kconvert (it records the map)")
    return value_map


def _localize(request: VerifyRequest, value_map: ValueMap, precision: str, keras: LiveKeras, first: TestSet,
              tolerance: tuple[float, float]) -> list[Localization]:
    """Localise on the first set's inputs, in the modes asked for."""
    from runtime.localize import load_model, localize
    from runtime.session import make_session, run, session_feeds

    float16 = precision == "float16"
    provider = request.provider or "auto"

    def runner(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = make_session(model, provider, float16=float16)
        return run(session, session_feeds(session, feeds))

    modes = MODES if request.localize_mode == "both" else (request.localize_mode,)
    return localize(load_model(request.model), value_map, keras, first.inputs, runner, modes, tolerance,
                    int(request.localize_budget_mb * MB))

