"""`kconvert MODEL --optimize`: onnxslim rewrites the written ONNX, and the rewrite is verified before it
replaces the file.

Order (application/service.py): the ONNX is written, then optimised here, then checked (--check or
--reference), so the check and the test data it saves are the optimised file's. Here:
1. onnxslim slims the written model in memory; kconvert's metadata (provenance, the Keras layer map
   `kconvert.keras_values`) is put back wherever onnxslim dropped or changed it.
2. The slim model is compared with the written one on generated inputs (runtime/inputs.py, the check's
   tolerance), on onnxruntime's CPU provider: no Keras needed.
3. Only when every output matches does the slim model replace the file (atomically, through the one
   writer). A mismatch keeps the unoptimised file, says so in a warning and in the report, and the run
   goes on (exit 0: the file written is a correct conversion, only not optimised).
Models whose weights went to external data (> 2 GB) are not optimised (a warning says so): onnxslim
would have to load and rewrite the whole weights file, and the one writer streams them.
The report: nodes before/after (and the op types whose count changed), file size, and the CPU latency of
one thread at batch 1 before and after (median of runs within LATENCY_BUDGET_S per model).
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.errors import KconvertWarning, UsageError
from runtime.compare import OutputDiff, Tolerance, compare

if TYPE_CHECKING:
    from converter.api import WrittenOnnx
    from converter.ir import Graph

OPTIMIZE_HINT = "pip install 'kconvert-onnx[optimize]'"
LATENCY_BUDGET_S = 0.15  # per model: the median of as many runs as fit (MIN_RUNS..MAX_RUNS)
MIN_RUNS, MAX_RUNS, WARMUP = 5, 50, 2


def onnxslim_installed() -> bool:
    return importlib.util.find_spec("onnxslim") is not None


def check_optimize_available() -> None:
    """--optimize without onnxslim: a UsageError before any work."""
    if not onnxslim_installed():
        raise UsageError("--optimize runs onnxslim, and it is not installed", hint=OPTIMIZE_HINT)


@dataclass(frozen=True)
class Latency:
    before_ms: float
    after_ms: float
    runs: int


@dataclass(frozen=True)
class OptimizeResult:
    """What --optimize did: `applied` when the slim model replaced the file; otherwise `reason` says why not."""

    applied: bool
    reason: str = ""
    nodes_before: int = 0
    nodes_after: int = 0
    ops_changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # op type: (before, after)
    bytes_before: int = 0
    bytes_after: int = 0
    latency: Latency | None = None
    outputs: list[OutputDiff] = field(default_factory=list)  # slim vs unoptimised, per output
    metadata_restored: list[str] = field(default_factory=list)  # keys onnxslim dropped or changed
    unmapped_layers: list[str] = field(default_factory=list)  # Keras layers whose ONNX value onnxslim removed

    def to_dict(self) -> dict[str, Any]:
        latency = None if self.latency is None else {
            "before_ms": round(self.latency.before_ms, 4), "after_ms": round(self.latency.after_ms, 4),
            "runs": self.latency.runs, "threads": 1, "batch": 1, "provider": "cpu"}
        return {"applied": self.applied, "reason": self.reason, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after,
                "ops_changed": {op: {"before": b, "after": a} for op, (b, a) in self.ops_changed.items()},
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "latency": latency,
                "outputs": [d.to_dict() for d in self.outputs], "metadata_restored": self.metadata_restored,
                "unmapped_layers": self.unmapped_layers}


def optimize_written(written: WrittenOnnx, graph: Graph, tolerance: Tolerance, shapes: dict[str, tuple[int, ...]],
                     float16: bool = False) -> OptimizeResult:
    """Slim the written file, compare, and replace it when the outputs match (see the module's doc)."""
    if len(written.files) > 1:
        return _skipped("the weights are in external data (> 2 GB); onnxslim would rewrite the whole weights "
                        "file, so the model is written unoptimised")
    from runtime.testdata import model_proto

    original = model_proto(written.path)
    slim, restored = _slimmed(original)
    diffs, latency = _compared(written.path, slim, graph, tolerance, shapes, float16)
    result = OptimizeResult(
        applied=all(d.ok for d in diffs), nodes_before=len(original.graph.node), nodes_after=len(slim.graph.node),
        ops_changed=ops_changed(original, slim), bytes_before=written.path.stat().st_size,
        bytes_after=slim.ByteSize(), latency=latency, outputs=diffs, metadata_restored=restored,
        unmapped_layers=_unmapped_layers(slim, str(written.path)))
    if not result.applied:
        return _mismatch(result, written.path)
    _save(slim, written.path)
    return replace(result, bytes_after=written.path.stat().st_size)


def _skipped(reason: str) -> OptimizeResult:
    warnings.warn(f"--optimize: not optimised: {reason}", KconvertWarning, stacklevel=3)
    return OptimizeResult(applied=False, reason=reason)


def _mismatch(result: OptimizeResult, path: Path) -> OptimizeResult:
    bad = [d for d in result.outputs if not d.ok]
    detail = ", ".join(f"{d.name} (max abs {d.max_abs:.3g}, {d.status})" for d in bad)
    reason = f"onnxslim's model differs from the unoptimised one at {detail}; {path} is kept unoptimised"
    warnings.warn(f"--optimize: {reason}", KconvertWarning, stacklevel=3)
    return replace(result, reason=reason, bytes_after=result.bytes_before)


def _slimmed(original: Any) -> tuple[Any, list[str]]:
    """onnxslim's model (it edits what it is given: it gets a copy), with kconvert's metadata entries put
    back where it dropped or changed them; the keys restored."""
    import onnxslim

    given = type(original)()
    given.CopyFrom(original)
    slim = onnxslim.slim(given)
    kept = {p.key: p.value for p in slim.metadata_props}
    restored = [p.key for p in original.metadata_props if kept.get(p.key) != p.value]
    if restored:  # kconvert's entries first, in their order, then any onnxslim added
        ours = {p.key for p in original.metadata_props}
        entries = [(p.key, p.value) for p in original.metadata_props]
        entries += [(key, value) for key, value in kept.items() if key not in ours]
        del slim.metadata_props[:]
        for key, value in entries:
            slim.metadata_props.add(key=key, value=value)
    # The IR version and opsets the conversion chose (--target-onnxruntime) stay: onnxslim may stamp newer.
    slim.ir_version = original.ir_version
    del slim.opset_import[:]
    slim.opset_import.extend(original.opset_import)
    return slim, restored


def ops_changed(before: Any, after: Any) -> dict[str, tuple[int, int]]:
    old = Counter(n.op_type for n in before.graph.node)
    new = Counter(n.op_type for n in after.graph.node)
    return {op: (old[op], new[op]) for op in sorted(old.keys() | new.keys()) if old[op] != new[op]}


def _unmapped_layers(slim: Any, where: str) -> list[str]:
    """The Keras layers in the layer map whose ONNX value the slim graph no longer has (`verify --localize`
    reports them unmapped)."""
    from runtime.value_map import read_value_map

    value_map = read_value_map({p.key: p.value for p in slim.metadata_props}, where)
    if value_map is None:
        return []
    values = {name for node in slim.graph.node for name in node.output}
    values |= {t.name for t in slim.graph.input} | {t.name for t in slim.graph.initializer}
    return [m.layer for m in value_map.layers if m.value not in values]


def _compared(path: Path, slim: Any, graph: Graph, tolerance: Tolerance, shapes: dict[str, tuple[int, ...]],
              float16: bool) -> tuple[list[OutputDiff], Latency]:
    """Both models on the same generated batches (the check's: a batch of one, then three); per output the
    largest error, and their latency on the batch of one."""
    from runtime.check import Feeding, feed_batches, merge_diffs
    from runtime.session import make_session, run, session_feeds

    before = make_session(path, "cpu", threads=1, float16=float16)
    after = make_session(slim, "cpu", threads=1, float16=float16)
    batches, _ = feed_batches(graph, before, Feeding(shapes=shapes))
    merged: dict[str, OutputDiff] = {}
    first: dict[str, np.ndarray] | None = None
    for batch in batches:
        feeds = session_feeds(before, batch)
        first = feeds if first is None else first
        expected, actual = run(before, feeds), run(after, feeds)
        names = list(expected)
        for diff in compare([actual.get(n, np.empty(0)) for n in names], [expected[n] for n in names], names,
                            tolerance):
            merged[diff.name] = merge_diffs(merged[diff.name], diff) if diff.name in merged else diff
    assert first is not None  # feed_batches yields at least the batch of one
    return list(merged.values()), measure_latency(before, after, first)


def measure_latency(before: Any, after: Any, feeds: dict[str, np.ndarray]) -> Latency:
    """Median of the same number of runs for both, as many as fit LATENCY_BUDGET_S for the slower."""
    for session in (before, after):
        for _ in range(WARMUP):
            session.run(None, feeds)
    slowest = max(_timed(before, feeds), _timed(after, feeds))
    runs = int(min(MAX_RUNS, max(MIN_RUNS, LATENCY_BUDGET_S / max(slowest, 1e-6))))
    return Latency(_median_ms(before, feeds, runs), _median_ms(after, feeds, runs), runs)


def _timed(session: Any, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - start


def _median_ms(session: Any, feeds: dict[str, np.ndarray], runs: int) -> float:
    return float(np.median([_timed(session, feeds) for _ in range(runs)]) * 1000)


def _save(slim: Any, path: Path) -> None:
    """Through the one writer: the file is replaced whole or not at all."""
    from converter.api import save
    from converter.export.files import cannot_write

    try:
        save(slim, path)
    except OSError as err:
        raise cannot_write(path, err) from None
