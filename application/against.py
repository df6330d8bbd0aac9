"""`kconvert verify MODEL.onnx --against KERAS_FILE`: live Keras is the reference, and `--localize` asks it
for each layer's output.

The inputs are the stored test sets' (when the model has test data), else generated for the Keras model as
`--check` generates them. They go to onnxruntime in the ONNX file's layout and to Keras in Keras' layout:
the file's layer map (runtime/value_map.py) says which inputs and outputs are channels-first. Keras'
outputs become ordinary test sets, so the comparison and its reports are the same as for stored data.
Loading Keras runs no code from the file: runtime/reference.py refuses Lambda layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.errors import UsageError
from runtime.check import Feeding, InputsUsed, OnBatch, batch_of, summary_shapes
from runtime.streamed import zero_states
from runtime.testdata import TestSet
from runtime.value_map import Perm, ValueMap

if TYPE_CHECKING:
    from runtime.reference import ReferenceBackend
    from runtime.streamed import StreamStates


@dataclass
class LiveKeras:
    """The loaded Keras model and the inputs being localised (Keras layout, in the model's input order):
    runtime/localize.py's KerasSide."""

    model: Any
    inputs: list[np.ndarray]
    names: list[str] | None = None  # the inputs' names (a model taking a dict of inputs is fed by name)

    def layers(self) -> list[tuple[str, str]]:
        # Keras 3 lists operation nodes (`x + 1` saved as an Add op) in `operations`, not in `layers`.
        layers = getattr(self.model, "operations", None) or self.model.layers
        return [(layer.name, type(layer).__name__) for layer in layers if type(layer).__name__ != "InputLayer"]

    def outputs(self, layers: list[str]) -> dict[str, list[np.ndarray]]:
        from runtime.reference import layer_outputs

        found: dict[str, list[np.ndarray]] = layer_outputs(self.model, self.inputs, layers, self.names)
        return found


@dataclass(frozen=True)
class KerasRun:
    sets: list[TestSet]  # inputs (ONNX layout) and Keras' outputs (ONNX layout)
    keras: LiveKeras  # for localisation: the first set's inputs
    inputs: InputsUsed  # what was fed
    backend: ReferenceBackend | None  # which Keras, on which backend, computed the expected outputs


@dataclass(frozen=True)
class AgainstRequest:
    """Where Keras is, and what to feed it: --inputs, else the model's travelling test data (`stored`),
    else generated inputs (--samples, --seed, --input-shape; also when one of those is given)."""

    model: Path  # the ONNX file
    against: Path
    weights: Path | None
    value_map: ValueMap | None
    stored: list[TestSet] | None
    feeding: Feeding
    inputs_path: Path | None = None
    generate: bool = False  # --samples/--seed/--input-shape given: generated even where test data exists
    custom_objects: Path | None = None  # --custom-objects: the user's Keras classes, for Keras to load the file


def keras_sets(request: AgainstRequest, onnx_inputs: list[str], onnx_outputs: list[str],
               on_batch: OnBatch | None = None, states: StreamStates | None = None) -> KerasRun:
    """Keras' outputs for each batch fed, as test sets in the ONNX file's layout. A streamed file's state
    inputs (`states`) are fed zeros, where Keras starts, and its state outputs are not Keras' to give."""
    from converter.api import opened
    from runtime.reference import load_keras_model, reference_backend, reference_outputs

    perms_in = request.value_map.inputs if request.value_map else {}
    perms_out = request.value_map.outputs if request.value_map else {}
    keras_in = [n for n in onnx_inputs if states is None or n not in states.inputs]
    keras_out = [n for n in onnx_outputs if states is None or n not in states.outputs]
    with opened(request.against, request.weights, mapped=True) as loaded:
        keras_model = load_keras_model(loaded.artifact, request.weights, request.custom_objects)
        _check_names(request.against, "input", keras_in, len(keras_model.inputs))
        _check_names(request.against, "output", keras_out, len(keras_model.outputs))
        state_shapes = _state_shapes(request.model, states)
        batches, used = _feeds(request, loaded.graph, perms_in, state_shapes)
        sets, first = [], []
        shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in keras_in}
        for done, given in enumerate(batches, start=1):
            keras_inputs = [_to_keras(given[name], perms_in.get(name)) for name in keras_in]
            for name, array in zip(keras_in, keras_inputs):
                shapes[name].append(tuple(array.shape))
            expected = reference_outputs(keras_model, keras_inputs, keras_in)
            fed = {**zero_states(state_shapes, batch_of({n: given[n] for n in keras_in})), **given}
            sets.append(TestSet(fed, {name: _to_onnx(array, perms_out.get(name))
                                      for name, array in zip(keras_out, expected)}))
            first = first or keras_inputs
            if on_batch is not None:
                on_batch(done, used.batches)
    used = replace(used, shapes=summary_shapes(shapes))  # Keras' order, as --check reports them
    return KerasRun(sets, LiveKeras(keras_model, first, keras_in), used, reference_backend(keras_model))


def _feeds(request: AgainstRequest, graph: Any, perms: dict[str, Perm | None],
           state_shapes: dict[str, tuple[int, ...]]) -> tuple[list[dict[str, np.ndarray]], InputsUsed]:
    """The batches in the ONNX file's layout, and what they are."""
    from runtime.check import feed_batches
    from runtime.session import make_session
    from runtime.user_inputs import load_inputs, model_inputs

    if request.stored and request.inputs_path is None and not request.generate:
        samples = sum(batch_of(s.inputs) for s in request.stored)
        return [s.inputs for s in request.stored], InputsUsed("test data", samples, len(request.stored), None, {})
    feeding = request.feeding
    if request.inputs_path is not None:
        given = load_inputs(request.inputs_path, model_inputs(graph), feeding.batch_size)
        feeding = replace(feeding, given=given, source=str(request.inputs_path))
    session: Any = make_session(request.model, "cpu")  # probing unknown dims runs the ONNX file itself
    if state_shapes:
        session = _WithZeroStates(session, state_shapes)
    batches, used = feed_batches(graph, session, feeding)
    # The graph read here has the default layout, so its batches are in Keras' order; the file's map says
    # which of its inputs are channels-first (a --nchw-inputs conversion).
    return [{name: _to_onnx(array, perms.get(name)) for name, array in batch.items()} for batch in batches], used


def _state_shapes(model: Path, states: StreamStates | None) -> dict[str, tuple[int, ...]]:
    """Each state input's shape after the batch, as the ONNX file declares it (units, or spatial dims and
    filters: all fixed)."""
    if states is None:
        return {}
    from runtime.session import make_session

    declared = {i.name: i.shape for i in make_session(model, "cpu").get_inputs()}
    return {name: tuple(d if isinstance(d, int) else 1 for d in declared[name][1:]) for name in states.inputs}


class _WithZeroStates:
    """A streamed file's session seen as the Keras model's, for probing unknown sizes: its state inputs
    are fed zeros."""

    def __init__(self, session: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        self._session = session
        self._shapes = shapes

    def run(self, names: Any, feeds: dict[str, np.ndarray], *options: Any) -> Any:
        return self._session.run(names, {**zero_states(self._shapes, batch_of(feeds)), **feeds}, *options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


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
