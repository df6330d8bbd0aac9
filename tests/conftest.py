from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def keras_outputs(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Keras' own answer, one array per output, computed as `kconvert --check` computes it: through
    runtime/reference.py, which also runs channels_first layers on CPUs where plain `model.predict`
    has no kernel for them (no AVX-512, oneDNN off)."""
    from runtime.reference import reference_outputs

    return reference_outputs(model, inputs)


def assert_saved_model_matches(tmp_path: Path, model: Any, fmt: str, inputs: Any) -> None:
    """Live cross-check: save a Keras model as `m.<fmt>`, convert it, and compare with Keras' outputs
    at batch 1 and 3. `inputs(batch)` returns the input arrays."""
    from kmodels import run_onnx

    import converter

    path = tmp_path / f"m.{fmt}"
    model.save(path)
    onnx_model = converter.convert(path)
    for batch in (1, 3):
        xs = inputs(batch)
        expected = keras_outputs(model, xs)
        got = run_onnx(onnx_model, *xs)
        assert len(got) == len(expected)
        for actual, want in zip(got, expected):
            assert_close(actual, want)


@pytest.fixture
def clean_extension_registrations() -> Iterator[None]:
    """Drop every handler a test registered through converter.extensions (its own or an --extension file's)."""
    from converter.extensions import registrations, unregister_lambda, unregister_layer

    yield
    for name in registrations()["layers"]:
        unregister_layer(name)
    for name in registrations()["lambdas"]:
        unregister_lambda(name)
