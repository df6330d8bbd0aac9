from __future__ import annotations

import numpy as np
import pytest

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
