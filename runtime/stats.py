"""Error statistics of one output against its expected value, for `kconvert verify`'s reports: what a
single max/ok pair hides (how many elements are off, and by how much the tolerance would have to move)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TINY = 1e-12  # relative error's floor for the denominator (an expected 0)


@dataclass(frozen=True)
class OutputStats:
    """|actual - expected| statistics; `out_of_tolerance` counts elements with error > atol + rtol x |expected|
    (a NaN on one side only counts too); `atol_needed` is the smallest atol that passes at this rtol."""

    name: str
    rtol: float
    atol: float
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    max_abs: float = 0.0
    mean_abs: float = 0.0
    median_abs: float = 0.0
    p99_abs: float = 0.0
    max_rel: float = 0.0
    mean_rel: float = 0.0
    median_rel: float = 0.0
    p99_rel: float = 0.0
    cosine: float = 1.0
    out_of_tolerance: int = 0
    fraction_out: float = 0.0
    atol_needed: float = 0.0
    status: str = "ok"  # "ok" | "mismatch" | "shape" | "dtype"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_number(value) for key, value in asdict(self).items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return list(value) if isinstance(value, tuple) else value


def output_stats(name: str, actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> OutputStats:
    actual, expected = np.asarray(actual), np.asarray(expected)
    base = OutputStats(name, rtol, atol, tuple(actual.shape), tuple(expected.shape))
    if actual.shape != expected.shape:
        return _failed(base, "shape")
    if actual.dtype.kind in "OUS" or expected.dtype.kind in "OUS":
        return _strings(base, actual, expected)
    return _numeric(base, actual.astype(np.float64), expected.astype(np.float64))


def _failed(base: OutputStats, status: str) -> OutputStats:
    inf = float("inf")
    return OutputStats(**{**asdict(base), "max_abs": inf, "max_rel": inf, "atol_needed": inf, "cosine": 0.0,
                          "status": status, "shape": base.shape, "expected_shape": base.expected_shape})


def _strings(base: OutputStats, actual: np.ndarray, expected: np.ndarray) -> OutputStats:
    differ = int(np.sum(actual.astype(str) != expected.astype(str)))
    fraction = differ / actual.size if actual.size else 0.0
    return OutputStats(**{**asdict(base), "out_of_tolerance": differ, "fraction_out": fraction,
                          "status": "ok" if differ == 0 else "mismatch", "shape": base.shape,
                          "expected_shape": base.expected_shape})


def _numeric(base: OutputStats, a: np.ndarray, e: np.ndarray) -> OutputStats:
    if a.size == 0:
        return base
    nan_differs = np.isnan(a) ^ np.isnan(e)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
    diff = np.where(nan_differs, np.inf, diff)
    rel = diff / np.maximum(np.abs(np.nan_to_num(e)), TINY)
    slack = diff - base.rtol * np.abs(np.nan_to_num(e))
    out = int(np.sum(slack > base.atol))
    values = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "median_abs": float(np.median(diff)),
              "p99_abs": float(np.percentile(diff, 99)), "max_rel": float(rel.max()), "mean_rel": float(rel.mean()),
              "median_rel": float(np.median(rel)), "p99_rel": float(np.percentile(rel, 99)),
              "cosine": _cosine(np.nan_to_num(a), np.nan_to_num(e)), "out_of_tolerance": out,
              "fraction_out": out / a.size, "atol_needed": max(0.0, float(slack.max())),
              "status": "ok" if out == 0 else "mismatch"}
    return OutputStats(**{**asdict(base), **values, "shape": base.shape, "expected_shape": base.expected_shape})


def _cosine(a: np.ndarray, e: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(e))
    if norms == 0.0:
        return 1.0 if not a.any() and not e.any() else 0.0
    return float(np.dot(a.ravel(), e.ravel()) / norms)
