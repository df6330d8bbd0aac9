"""`kconvert verify MODEL.onnx --against KERAS_FILE`: live Keras is the reference, and `--localize` asks it
for each layer's output.

The inputs are the stored test sets' (when the model has test data), else generated for the Keras model as
`--check` generates them. They go to onnxruntime in the ONNX file's layout and to Keras in Keras' layout:
the file's layer map (runtime/value_map.py) says which inputs and outputs are channels-first. Keras'
outputs become ordinary test sets, so the comparison and its reports are the same as for stored data.
Loading Keras runs no code from the file: runtime/reference.py refuses Lambda layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import UsageError
from runtime.testdata import TestSet
from runtime.value_map import Perm, ValueMap

GENERATED_BATCHES = (1, 3)  # what --check feeds: a batch of one and a batch of several


@dataclass
class LiveKeras:
    """The loaded Keras model and the inputs being localised (Keras layout, in the model's input order):
    runtime/localize.py's KerasSide."""

    model: Any
    inputs: list[np.ndarray]

    def layers(self) -> list[tuple[str, str]]:
        return [(layer.name, type(layer).__name__) for layer in self.model.layers
                if type(layer).__name__ != "InputLayer"]

    def outputs(self, layers: list[str]) -> dict[str, list[np.ndarray]]:
        from runtime.reference import layer_outputs

        found: dict[str, list[np.ndarray]] = layer_outputs(self.model, self.inputs, layers)
        return found


@dataclass(frozen=True)
class KerasRun:
    sets: list[TestSet]  # inputs (ONNX layout) and Keras' outputs (ONNX layout)
    keras: LiveKeras  # for localisation: the first set's inputs


def keras_sets(model: Path, against: Path, weights: Path | None, value_map: ValueMap | None,
               stored: list[TestSet] | None, onnx_inputs: list[str], onnx_outputs: list[str]) -> KerasRun:
    """Keras' outputs for the stored sets' inputs, or for generated ones."""
    from converter.api import opened
    from runtime.reference import load_keras_model, reference_outputs

    with opened(against, weights, mapped=True) as loaded:
        keras_model = load_keras_model(loaded.artifact, weights)
        perms_in = value_map.inputs if value_map else {}
        perms_out = value_map.outputs if value_map else {}
        feeds = [s.inputs for s in stored] if stored else _generated(loaded.graph, model, perms_in)
    _check_names(against, "input", onnx_inputs, len(keras_model.inputs))
    _check_names(against, "output", onnx_outputs, len(keras_model.outputs))
    sets, first = [], []
    for given in feeds:
        keras_inputs = [_to_keras(given[name], perms_in.get(name)) for name in onnx_inputs]
        expected = reference_outputs(keras_model, keras_inputs)
        sets.append(TestSet(dict(given), {name: _to_onnx(array, perms_out.get(name))
                                          for name, array in zip(onnx_outputs, expected)}))
        first = first or keras_inputs
    return KerasRun(sets, LiveKeras(keras_model, first))


def _generated(graph: Any, model: Path, perms: dict[str, Perm | None]) -> list[dict[str, np.ndarray]]:
    """Generated inputs as --check makes them (ids below each Embedding's size, lookup tokens, N(0, 1)), in
    the ONNX file's layout; unknown dimensions take the first size at which the ONNX model runs."""
    from runtime.inputs import DEFAULT_UNKNOWN_DIM, find_unknown_dim_size, generate_inputs, has_unknown_dims
    from runtime.session import make_session, run_error

    def in_onnx_layout(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: _to_onnx(array, perms.get(name)) for name, array in inputs.items()}

    size = DEFAULT_UNKNOWN_DIM
    if has_unknown_dims(graph):
        session = make_session(model, "cpu")
        size = find_unknown_dim_size(graph, lambda feeds: run_error(session, in_onnx_layout(feeds)))
    return [in_onnx_layout(generate_inputs(graph, batch, seed=batch, size=size)) for batch in GENERATED_BATCHES]


def _check_names(against: Path, kind: str, onnx_names: list[str], keras_count: int) -> None:
    if len(onnx_names) != keras_count:
        raise UsageError(f"the ONNX model has {len(onnx_names)} {kind}s ({', '.join(onnx_names)}) and the Keras "
                         f"model {against.name} has {keras_count}",
                         hint="--against takes the Keras file this ONNX model was converted from")


def _to_keras(array: np.ndarray, perm: Perm | None) -> np.ndarray:
    array = np.asarray(array)
    array = array.astype(np.float32) if array.dtype == np.float16 else array  # Keras computes in float32
    return np.transpose(array, perm) if perm is not None and array.ndim == len(perm) else array


def _to_onnx(array: np.ndarray, perm: Perm | None) -> np.ndarray:
    array = np.asarray(array)
    return np.transpose(array, np.argsort(perm)) if perm is not None and array.ndim == len(perm) else array
