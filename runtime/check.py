"""Checking a written ONNX file: run it on onnxruntime and compare with Keras' outputs, computed live or
stored in an .npz. Only runs and compares: what is converted, written or kept is the application's
(application/service.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converter.api import LoadedModel
from converter.ir import Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.passes.layout import to_channels_first, to_channels_last
from runtime.compare import OutputDiff, Tolerance, compare
from runtime.inputs import DEFAULT_UNKNOWN_DIM, find_unknown_dim_size, generate_inputs, has_unknown_dims
from runtime.reference import reference_outputs
from runtime.testdata import TestSet

__all__ = ["CHECK_BATCHES", "Reference", "check_against_keras", "check_against_reference"]
CHECK_BATCHES = (1, 3)
Reference = tuple[dict[str, np.ndarray], list[np.ndarray]]


def to_keras_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    """A channels-first graph input/output (--nchw-inputs/--nchw-outputs) in Keras' channels_last order."""
    return np.transpose(array, to_channels_last(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def to_onnx_layout(tensor: Tensor, array: np.ndarray) -> np.ndarray:
    return np.transpose(array, to_channels_first(array.ndim)) if tensor.layout == CHANNELS_FIRST else array


def as_keras_input(array: np.ndarray) -> np.ndarray:
    """What Keras gets for the values onnxruntime got: the Keras model computes in float32."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def check_against_keras(loaded: LoadedModel, onnx_path: Path, keras_model: Any, provider: str,
                        tolerance: Tolerance, float16: bool = False, sets: list[TestSet] | None = None
                        ) -> tuple[list[OutputDiff], list[str]]:
    """Per output, the worst error over batch sizes 1 and 3 of generated inputs; and the providers that ran.
    `sets`, when given, receives each batch's feeds and Keras' outputs (in the ONNX graph's layout)."""
    from runtime.session import make_session, run, run_error, session_feeds  # onnxruntime only when checking

    session = make_session(onnx_path, provider, float16=float16)
    graph = loaded.graph
    size = DEFAULT_UNKNOWN_DIM
    if has_unknown_dims(graph):
        size = find_unknown_dim_size(graph, lambda feeds: run_error(session, feeds))
    names = list(graph.output_names)
    worst: dict[str, OutputDiff] = {}
    for batch in CHECK_BATCHES:
        feeds = session_feeds(session, generate_inputs(graph, batch, seed=batch, size=size))
        ours = run(session, feeds)
        theirs = reference_outputs(keras_model, [to_keras_layout(t, as_keras_input(feeds[t.name]))
                                                 for t in graph.inputs])
        mine = [to_keras_layout(t, ours[n]) for t, n in zip(graph.outputs, names)]
        _record(sets, feeds, graph.outputs, names, theirs)
        for diff in compare(mine, theirs, names, tolerance):
            if diff.name not in worst or _worse(diff, worst[diff.name]):
                worst[diff.name] = diff
    return [worst[n] for n in names], session.get_providers()


def check_against_reference(loaded: LoadedModel, onnx_path: Path, stored: Reference, provider: str,
                            tolerance: Tolerance, float16: bool = False, sets: list[TestSet] | None = None
                            ) -> tuple[list[OutputDiff], list[str]]:
    """Compare with Keras outputs stored in an .npz (fitted to the model by runtime/stored.py); `sets` as
    in check_against_keras."""
    from runtime.session import make_session, run, session_feeds  # onnxruntime only when checking

    inputs, expected = stored
    names = list(loaded.graph.output_names)
    session = make_session(onnx_path, provider, float16=float16)
    tensors = {t.name: t for t in loaded.graph.inputs}
    feeds = session_feeds(session, {k: to_onnx_layout(tensors[k], v) for k, v in inputs.items()})
    ours = run(session, feeds)
    mine = [to_keras_layout(t, ours[n]) for t, n in zip(loaded.graph.outputs, names)]
    _record(sets, feeds, loaded.graph.outputs, names, expected)
    return compare(mine, expected, names, tolerance), session.get_providers()


def _record(sets: list[TestSet] | None, feeds: dict[str, np.ndarray], outputs: list[Tensor], names: list[str],
            expected: list[np.ndarray]) -> None:
    """One test set: what onnxruntime was fed, and what Keras answered, as the ONNX graph lays it out."""
    if sets is not None and len(expected) == len(names):
        sets.append(TestSet(dict(feeds), {n: to_onnx_layout(t, np.asarray(e))
                                          for t, n, e in zip(outputs, names, expected)}))


def _worse(a: OutputDiff, b: OutputDiff) -> bool:
    return (not a.ok and b.ok) or (a.ok == b.ok and a.max_abs > b.max_abs)
