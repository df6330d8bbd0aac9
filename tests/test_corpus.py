"""The real-world corpus (../shared/corpus/real): every entry converts or is refused with a precise reason;
inspect works wherever there is a config; tf-marked: outputs match Keras where Keras can load the file."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.reference import ReferenceFailed

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("corpus_report", ROOT / "bench" / "corpus_report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules["corpus_report"] = report  # dataclasses look their module up while the class is built
_spec.loader.exec_module(report)

CORPUS = Path(os.environ.get("KCONVERT_CORPUS", report.DEFAULT_CORPUS))
ENTRIES = report.load_manifest(CORPUS) if (CORPUS / "manifest.json").exists() else []
pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(not ENTRIES, reason=f"the real-world corpus is not at {CORPUS}")]


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entries]


def _all_builtin(entry: dict[str, Any]) -> bool:
    from converter.keras.dialects import canonical_class
    from converter.keras.legacy_config import MERGE_MODES
    from converter.layers import LAYERS

    known = set(MERGE_MODES) | {"Merge", "InputLayer", "Sequential", "Functional", "Model", "TimeDistributedDense"}
    return all(cls in known or canonical_class(cls) in LAYERS for cls in entry["layers"])


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids(ENTRIES))
def test_entry_converts_or_is_refused_precisely(entry: dict[str, Any]) -> None:
    model, outcome = report.convert_entry(CORPUS, entry)
    assert outcome.result != "FAILED", outcome.detail
    if entry["format"] == "weights-only":
        assert outcome.result == "refused: FormatError" and "weights only" in outcome.detail
    elif entry["format"] == "json-only" and model is None and outcome.result == "refused: WeightsError":
        assert "holds only the architecture" in outcome.detail
    elif "Lambda" in entry["layers"]:
        assert outcome.result == "refused: UnsupportedLayerError" and "(Lambda)" in outcome.detail
    elif model is None:
        assert outcome.result == "refused: UnsupportedLayerError", outcome.detail
        assert "' (" in outcome.detail  # names the layer and its class
        assert not (_all_builtin(entry) and entry["format"] != "json-only"), \
            f"made only of supported layers, yet refused: {outcome.detail}"
    else:
        assert len(model.graph.output) >= 1


WITH_CONFIG = [e for e in ENTRIES if e["format"] != "weights-only"]


@pytest.mark.parametrize("entry", WITH_CONFIG, ids=_ids(WITH_CONFIG))
def test_inspect_works_on_every_entry_with_a_config(entry: dict[str, Any]) -> None:
    import converter
    from converter.errors import UnsupportedLayerError

    model_path, weights = report.entry_paths(CORPUS, entry)
    try:
        summary = converter.inspect(model_path, weights=weights, backend=report.backend_of(entry))
    except UnsupportedLayerError as err:  # inspect still refuses code it would have to run
        assert "' (" in err.message
        return
    assert summary["layers"] and summary["inputs"]


REFERENCED = [e for e in ENTRIES if e["era"] != "keras1" and e["format"] not in ("weights-only", "json-only")]


@pytest.mark.tf
@pytest.mark.parametrize("entry", REFERENCED, ids=_ids(REFERENCED))
def test_entry_matches_keras(entry: dict[str, Any]) -> None:
    if report.holds_code(CORPUS, entry):  # checked before anything imports TensorFlow
        pytest.skip("holds a Lambda: never given to TensorFlow (tf_keras runs its bytecode)")
    pytest.importorskip("keras")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    model, outcome = report.convert_entry(CORPUS, entry)
    if model is None:
        pytest.skip(f"not converted: {outcome.detail}")
    inputs = report.sample_inputs(model)
    try:
        expected = report.keras_outputs(CORPUS, entry, inputs)
    except ReferenceFailed as err:  # Keras 3 reads some tf.keras files with another input spec than they state
        pytest.skip(f"Keras loads this file but cannot call it on its stated input shape: {str(err)[:120]}")
    if expected is None:
        pytest.skip("no installed Keras loads this file")
    for got, want in zip(report.run_onnx_model(model, inputs), expected):
        np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-5)
