"""Per-output comparison as data: max abs / max rel error and a status under explicit tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from converter.tolerances import ATOL, RTOL


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


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol' + rtol x |expected|, where atol' is atol, or with `atol_scaled`
    atol x max(1, max |expected|): float16 rounding grows with the activations' magnitude, so the
    near-zero elements of a large output need that much slack."""
    rtol: float = RTOL
    atol: float = ATOL
    atol_scaled: bool = False

    def absolute_for(self, expected: np.ndarray) -> float:
        if self.atol_scaled and expected.size:
            return self.atol * max(1.0, float(np.abs(expected).max()))
        return self.atol


def compare_output(name: str, actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance = Tolerance()
                   ) -> OutputDiff:
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return OutputDiff(name, float("inf"), float("inf"), "shape", actual.shape, expected.shape)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(e), 1e-12)).max()) if diff.size else 0.0
    within = bool(np.all(diff <= tolerance.absolute_for(e) + tolerance.rtol * np.abs(e)))
    close = within and not (np.isnan(a).any() ^ np.isnan(e).any())
    return OutputDiff(name, max_abs, max_rel, "ok" if close else "mismatch", actual.shape, expected.shape)


def compare(actual: list[np.ndarray], expected: list[np.ndarray], names: list[str],
            tolerance: Tolerance = Tolerance()) -> list[OutputDiff]:
    if len(actual) != len(expected):
        return [OutputDiff(n, float("inf"), float("inf"), "shape") for n in names]
    return [compare_output(n, a, e, tolerance) for n, a, e in zip(names, actual, expected)]
