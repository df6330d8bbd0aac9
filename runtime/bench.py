"""Latency measurement of an ONNX model on onnxruntime (used by bench/, never by timed unit tests)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.session import make_session


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    runs: int


def measure_latency(model: Any, feeds: dict[str, np.ndarray], threads: int = 1, warmup: int = 3,
                    runs: int = 20, provider: str = "cpu") -> Latency:
    session = make_session(model, provider, threads)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return Latency(statistics.median(times), times[int(0.9 * (len(times) - 1))], runs)
