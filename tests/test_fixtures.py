"""Every committed fixture, in every format it was written in, converts and matches Keras' own outputs.

The fixtures (`fixtures/<case>/`) are real files written by Keras 3 and Keras 2 (tf_keras) through
`fixtures/make_fixtures.py`; `expected.npz` holds the outputs Keras computed for `inputs.npz`.
No TensorFlow is needed here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

import converter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# format id -> (model file, weights file or None, which Keras wrote it: the expected.npz prefix)
FORMATS: dict[str, tuple[str, str | None, str]] = {
    "k3_keras": ("model.keras", None, "k3"),
    "k3_h5": ("model.h5", None, "k3"),
    "k3_json": ("model.json", "model.weights.h5", "k3"),
    "k2_h5": ("model_k2.h5", None, "k2"),
    "k2_json": ("model_k2.json", "weights_k2.h5", "k2"),
}

ORT_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
             "tensor(double)": "float64"}


def _cases() -> list[tuple[str, str]]:
    return [(case.name, fmt) for case in sorted(p for p in FIXTURES.iterdir() if (p / "expected.npz").exists())
            for fmt, (model_file, _, _) in FORMATS.items() if (case / model_file).exists()]


CASES = _cases()
# Keras Hub tasks (fixtures/make_hub_fixtures.py): `.keras` files of constructor arguments, not rebuilt by
# make_fixtures.py's builders and not writable as a plain Keras 3 archive.
KERAS_HUB_PREFIX = "hub_"


def test_fixtures_are_present() -> None:
    """Guard against an empty parametrisation silently passing."""
    assert len({case for case, _ in CASES}) >= 21
    assert {("lstm_input_dim", "k2_json"), ("dense_input_dim", "k2_json"), ("nested", "k3_keras")} <= set(CASES)


def run_model(model: object, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    # Integer ids (Embedding) are stored as int32; feed them in whatever integer/float type the model declares.
    feeds = {spec.name: x.astype(ORT_TYPES[spec.type]) for spec, x in zip(session.get_inputs(), inputs)}
    assert len(feeds) == len(inputs), "the ONNX model has a different number of inputs than the Keras model"
    return list(session.run(None, feeds))


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, str], object]:
    """Convert each (case, format) once for both batch sizes."""
    return {}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("case", "fmt"), CASES, ids=[f"{c}-{f}" for c, f in CASES])
def test_fixture_matches_keras(case: str, fmt: str, batch: int, converted: dict[tuple[str, str], object]) -> None:
    folder = FIXTURES / case
    model_file, weights_file, source = FORMATS[fmt]
    if (case, fmt) not in converted:
        weights = None if weights_file is None else folder / weights_file
        converted[(case, fmt)] = converter.convert(folder / model_file, weights=weights)
    with np.load(folder / "inputs.npz") as data:
        inputs = [data[f"x{i}"][:batch] for i in range(len(data.files))]
    with np.load(folder / "expected.npz") as data:
        expected = [data[f"{source}_{i}"][:batch] for i in range(sum(k.startswith(source) for k in data.files))]
    outputs = run_model(converted[(case, fmt)], inputs)
    assert len(outputs) == len(expected)
    for actual, want in zip(outputs, expected):
        assert_close(actual, want)
