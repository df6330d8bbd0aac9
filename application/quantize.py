"""`kconvert MODEL --quantize int8`: the written float32 ONNX becomes an int8 QDQ model through
onnxruntime.quantization, measured against the float32 one before it replaces the file.

Order (application/service.py): the ONNX is written (and --optimize'd), then quantized here, then checked
(--check/--reference, with the int8 tolerances of converter/tolerances.py), so the check and the test data
it saves are the int8 file's. Here:
1. The float32 file is kept beside the output as `<stem>.fp32.onnx`: the baseline a deployment compares
   with, and the file to fall back to when int8 costs too much accuracy.
2. onnxruntime's `quant_pre_process` (shape inference and optimisation, as its docs advise) prepares it.
3. Static quantization (QDQ, per-channel weights) calibrated on `--inputs` or on generated samples
   (`--samples`, default CALIBRATION_SAMPLES); a model with recurrent ops (LSTM/GRU/RNN/Scan/Loop) is
   quantized dynamically instead: static QDQ does not quantize those ops, and their weights are most of
   such a model, while dynamic quantization has int8 kernels for them (the report says which and why).
4. The int8 model is compared with the float32 one on generated inputs of another seed than the
   calibration's (runtime/stats.py: max/mean/p99 abs, cosine, fraction out of the int8 tolerance), and
   their size and one-thread CPU latency are measured (application/optimize.py's helpers).
5. The int8 model replaces the output file through the one writer; kconvert's metadata (provenance, the
   Keras layer map) is put back where quantization dropped it.
Models whose weights went to external data (> 2 GB) are refused: a UsageError, the files removed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from application.optimize import Latency, measure_latency, ops_changed
from converter.errors import UsageError
from runtime.stats import OutputStats, output_stats

if TYPE_CHECKING:
    from converter.api import WrittenOnnx
    from converter.ir import Graph
    from runtime.check import Batch, Feeding

QUANTIZE_MODES = ("int8",)
CALIBRATION_SAMPLES = 16  # generated calibration samples when --samples is not given
STATS_SAMPLES = 8  # generated samples (another seed) on which int8 is compared with float32
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "Scan", "Loop"})


@dataclass(frozen=True)
class QuantizeResult:
    """What --quantize did: `method` static or dynamic (and why), the float32 file kept, sizes, latency,
    and per output the int8-vs-float32 statistics."""

    method: str  # "static" | "dynamic"
    why: str
    fp32_path: Path
    calibration: str  # where the calibration data came from ("" for dynamic)
    bytes_before: int
    bytes_after: int
    latency: Latency
    stats: list[OutputStats] = field(default_factory=list)
    ops_changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # op type: (float32, int8) counts
    metadata_restored: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "int8", "method": self.method, "why": self.why, "fp32": str(self.fp32_path),
                "calibration": self.calibration, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "latency": {"before_ms": round(self.latency.before_ms, 4), "after_ms": round(self.latency.after_ms, 4),
                            "runs": self.latency.runs, "threads": 1, "batch": 1, "provider": "cpu"},
                "stats": [s.to_dict() for s in self.stats],
                "ops_changed": {op: {"before": b, "after": a} for op, (b, a) in self.ops_changed.items()},
                "metadata_restored": self.metadata_restored}


def fp32_path_of(output: Path) -> Path:
    """Where the float32 model is kept: `<stem>.fp32.onnx` beside the int8 output."""
    return output.with_name(output.stem + ".fp32.onnx")


def recurrent_ops(model: Any) -> list[str]:
    """The recurrent op types in the model (sorted): what makes quantization dynamic."""
    return sorted({node.op_type for node in model.graph.node} & RECURRENT_OPS)


def quantize_written(written: WrittenOnnx, graph: Graph, calibration: Feeding, tolerance: tuple[float, float]
                     ) -> QuantizeResult:
    """Quantize the written file in place, keeping the float32 one as `<stem>.fp32.onnx` (module doc)."""
    from converter.api import save
    from runtime.testdata import model_proto

    if len(written.files) > 1:
        raise UsageError("--quantize: the weights are in external data (> 2 GB), which onnxruntime's quantizer "
                         "cannot take here", hint="drop --quantize, or quantize the float32 file separately")
    original = model_proto(written.path)
    fp32 = fp32_path_of(written.path)
    save(original, fp32)
    try:
        return _quantized(written.path, fp32, original, graph, calibration, tolerance)
    except BaseException:
        fp32.unlink(missing_ok=True)
        raise


def _quantized(path: Path, fp32: Path, original: Any, graph: Graph, calibration: Feeding,
               tolerance: tuple[float, float]) -> QuantizeResult:
    from converter.api import save
    from runtime.session import make_session

    found = recurrent_ops(original)
    fp32_session = make_session(fp32, "cpu", threads=1)
    with tempfile.TemporaryDirectory(prefix="kconvert-quantize-") as work:
        prepared = _pre_processed(fp32, Path(work))
        if found:
            method, source = "dynamic", ""
            why = (f"recurrent ops ({', '.join(found)}): static QDQ leaves them float; dynamic quantizes LSTM and "
                   "MatMul weights")
            int8 = _dynamic(prepared, Path(work))
        else:
            method, why = "static", "QDQ, per-channel weights, calibrated activations"
            int8, source = _static(prepared, Path(work), graph, fp32_session, calibration)
    changed = ops_changed(original, int8)
    if not _has_int8_ops(int8):  # e.g. a GRU-only model: onnxruntime has no int8 kernel for GRU
        why += "; onnxruntime quantized none of its ops, so the model stays float32"
    restored = _restore_metadata(original, int8)
    _drop_unused_opsets(int8)
    int8_session = make_session(int8, "cpu", threads=1)
    stats, feeds = _stats(graph, fp32_session, int8_session, calibration, tolerance)
    latency = measure_latency(fp32_session, int8_session, feeds)
    save(int8, path)
    return QuantizeResult(method, why, fp32, source, fp32.stat().st_size, path.stat().st_size, latency, stats,
                          changed, restored)


def _has_int8_ops(model: Any) -> bool:
    """QuantizeLinear, DynamicQuantizeLinear/LSTM, MatMulInteger, ConvInteger...: any int8 computation."""
    return any("Quantize" in node.op_type or node.op_type.endswith("Integer") for node in model.graph.node)


def _pre_processed(fp32: Path, work: Path) -> Path:
    """onnxruntime's quant_pre_process: shape inference and graph optimisation before quantizing. Its
    symbolic shape inference needs sympy (not a kconvert dependency): without it, ONNX's shape inference
    alone runs, which suffices for kconvert's graphs (every value's shape is declared but the batch)."""
    import importlib.util

    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=importlib.util.find_spec("sympy") is None)
    return prepared


def _dynamic(prepared: Path, work: Path) -> Any:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from runtime.testdata import model_proto

    target = work / "int8.onnx"
    quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
    return model_proto(target)


def _static(prepared: Path, work: Path, graph: Graph, session: Any, calibration: Feeding) -> tuple[Any, str]:
    """QDQ with per-channel weights (a conv's channels differ in range by orders of magnitude)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from runtime.check import feed_batches
    from runtime.session import session_feeds
    from runtime.testdata import model_proto

    batches, plan = feed_batches(graph, session, calibration)
    fed = [session_feeds(session, batch) for batch in batches]
    target = work / "int8.onnx"
    quantize_static(str(prepared), str(target), _Reader(fed), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=output_softmaxes(model_proto(prepared)))
    origin = f"generated (seed {plan.seed})" if plan.source == "generated" else plan.source
    return model_proto(target), f"{plan.samples} samples {origin}"


def output_softmaxes(model: Any) -> list[str]:
    """The Softmax nodes whose output is a model output: they stay float. onnxruntime fixes a Softmax's int8
    range to [0, 1] (steps of 1/255), which rounds the probabilities of a many-class head (a 1000-way
    softmax's are ~1e-3 when no class dominates) to 0."""
    outputs = {value.name for value in model.graph.output}
    return [node.name for node in model.graph.node if node.op_type == "Softmax" and set(node.output) & outputs]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: get_next() gives a feed dict, then None."""

    def __init__(self, batches: list[Batch]) -> None:
        self._batches: Iterator[Batch] = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._batches, None)


def _restore_metadata(original: Any, int8: Any) -> list[str]:
    """kconvert's metadata entries the quantizer dropped or changed, put back (the keys restored)."""
    kept = {p.key: p.value for p in int8.metadata_props}
    restored = [p.key for p in original.metadata_props if kept.get(p.key) != p.value]
    for prop in original.metadata_props:
        if prop.key in restored:
            for stale in [p for p in int8.metadata_props if p.key == prop.key]:
                int8.metadata_props.remove(stale)
            int8.metadata_props.add(key=prop.key, value=prop.value)
    return restored


def _drop_unused_opsets(model: Any) -> None:
    """quant_pre_process's onnxruntime-optimised model imports every domain onnxruntime knows (ai.onnx.ml 5,
    com.microsoft.nchwc...); an older onnxruntime (--target-onnxruntime) may refuse a version it lacks."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _stats(graph: Graph, fp32: Any, int8: Any, calibration: Feeding, tolerance: tuple[float, float]
           ) -> tuple[list[OutputStats], Batch]:
    """int8 against float32 on generated inputs of another seed than the calibration's, batch by batch,
    statistics over all of them; and the first batch of one (the latency's feeds)."""
    from dataclasses import replace

    from runtime.check import feed_batches
    from runtime.session import run, session_feeds

    independent = replace(calibration, given=None, samples=STATS_SAMPLES, seed=calibration.seed + 1,
                          batch_size=STATS_SAMPLES)
    batches, _ = feed_batches(graph, fp32, independent)
    expected: dict[str, list[np.ndarray]] = {}
    actual: dict[str, list[np.ndarray]] = {}
    first: Batch | None = None
    for batch in batches:
        feeds = session_feeds(fp32, batch)
        first = first or {name: array[:1] for name, array in feeds.items()}
        for name, value in run(fp32, feeds).items():
            expected.setdefault(name, []).append(value)
        for name, value in run(int8, feeds).items():
            actual.setdefault(name, []).append(value)
    assert first is not None  # feed_batches yields at least one batch
    rtol, atol = tolerance
    stats = [output_stats(name, np.concatenate(actual.get(name, [])), np.concatenate(values), rtol, atol)
             for name, values in expected.items()]
    return stats, first
