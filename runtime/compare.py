"""Per-output comparison as data: max abs / max rel error and a status under explicit tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    status: str  # "ok" | "mismatch" | "shape"
    shape: tuple[int, ...] = ()
    expected_shape: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_output(name: str, actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL,
                   atol: float = ATOL) -> OutputDiff:
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return OutputDiff(name, float("inf"), float("inf"), "shape", actual.shape, expected.shape)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(e), 1e-12)).max()) if diff.size else 0.0
    close = bool(np.all(diff <= atol + rtol * np.abs(e))) and not np.isnan(a).any() ^ np.isnan(e).any()
    return OutputDiff(name, max_abs, max_rel, "ok" if close else "mismatch", actual.shape, expected.shape)


def compare(actual: list[np.ndarray], expected: list[np.ndarray], names: list[str], rtol: float = RTOL,
            atol: float = ATOL) -> list[OutputDiff]:
    if len(actual) != len(expected):
        return [OutputDiff(n, float("inf"), float("inf"), "shape") for n in names]
    return [compare_output(n, a, e, rtol, atol) for n, a, e in zip(names, actual, expected)]
