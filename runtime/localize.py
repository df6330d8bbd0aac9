"""Localisation: which Keras layer's output is the first to diverge between an ONNX file and Keras.

The ONNX file says which value holds which top-level Keras layer's output (runtime/value_map.py). Two
modes, each giving a Localization (runtime/localize_types.py):

- accumulated: the whole ONNX model runs on the inputs and each mapped value is compared with Keras'
  output of its layer. It shows how error grows along the model, but an early small error can push a
  later, correct layer out of tolerance.
- isolated: each layer's own ONNX ops (from the values of the layers before it, "cut" there) are fed
  Keras' values of those layers and compared with Keras' output of the layer. A layer that is wrong is
  wrong here alone, whatever came before.

Memory stays bounded: layers are taken in chunks whose values (ONNX and Keras side together) fit a byte
budget; the chunk size adapts to the bytes per layer seen so far. Only one chunk is held at once, never
every intermediate of the model (what marking all outputs does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from converter.errors import FormatError
from runtime.localize_types import ACCUMULATED, DEFAULT_BUDGET_BYTES, LayerError, Localization
from runtime.stats import output_stats
from runtime.value_map import MappedValue, ValueMap

FIRST_CHUNK = 1  # layers in the first chunk: the bytes per layer are not known before it ran
ONNX_FLOAT16 = onnx.TensorProto.FLOAT16
Runner = Callable[[bytes, dict[str, np.ndarray]], dict[str, np.ndarray]]  # model bytes, feeds -> outputs


class KerasSide(Protocol):
    """What localisation needs of Keras: the model's top-level layers, and their outputs for the inputs."""

    def layers(self) -> list[tuple[str, str]]:
        """(name, class) of every top-level layer, in the model's order."""
        ...

    def outputs(self, layers: list[str]) -> dict[str, list[np.ndarray]]:
        """Each named layer's output arrays (Keras layout) for the inputs being localised."""
        ...


@dataclass
class _Plan:
    model: onnx.ModelProto
    mapped: list[MappedValue]  # layers whose value the model still holds, in depth order
    unmapped: list[str]
    rtol: float
    atol: float
    budget: int


def load_model(path: Path) -> onnx.ModelProto:
    """The whole model (weights included: the isolated mode copies each layer's own into its segment)."""
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as err:
        raise FormatError(f"cannot read {path}: {' '.join(str(err).split())[:200]}", hint="pass a .onnx file") from None


def localize(model: onnx.ModelProto, value_map: ValueMap, keras: KerasSide, feeds: dict[str, np.ndarray],
             run: Runner, modes: tuple[str, ...], tolerance: tuple[float, float],
             budget: int = DEFAULT_BUDGET_BYTES) -> list[Localization]:
    """`feeds` are the ONNX inputs (ONNX layout, the session's dtypes); `run` runs model bytes on them."""
    plan = _plan(model, value_map, keras, tolerance, budget)
    found = []
    for mode in modes:
        walk = _accumulated if mode == ACCUMULATED else _isolated
        layers, peak = walk(plan, keras, feeds, run)
        found.append(Localization(mode, layers, plan.unmapped, peak))
    return found


def _plan(model: onnx.ModelProto, value_map: ValueMap, keras: KerasSide, tolerance: tuple[float, float],
          budget: int) -> _Plan:
    present = _produced(model.graph)
    mapped = [m for m in value_map.layers if m.value in present]
    names = {m.layer for m in mapped} | {name for m in mapped for name in m.folded}
    unmapped = [name for name, _ in keras.layers() if name not in names]
    return _Plan(model, mapped, unmapped, tolerance[0], tolerance[1], budget)


def _produced(graph: onnx.GraphProto) -> set[str]:
    return {out for node in graph.node for out in node.output if out}


def _chunks(layers: list[MappedValue], budget: int) -> Iterator[list[MappedValue]]:
    """Consecutive chunks; the caller sends back the bytes a chunk held, which sizes the next one."""
    start, size = 0, FIRST_CHUNK
    while start < len(layers):
        chunk = layers[start:start + size]
        held = yield chunk
        start += len(chunk)
        per_layer = (held or 0) / len(chunk)
        size = max(1, int(budget // per_layer)) if per_layer else len(layers)


def _walk(plan: _Plan, one_chunk: Callable[[list[MappedValue]], tuple[list[LayerError], int]]
          ) -> tuple[list[LayerError], int]:
    """Run `one_chunk` over the adaptive chunks; the errors in depth order and the peak bytes held."""
    errors: list[LayerError] = []
    peak = 0
    chunks = _chunks(plan.mapped, plan.budget)
    try:
        chunk = next(chunks)
        while True:
            found, held = one_chunk(chunk)
            errors.extend(found)
            peak = max(peak, held)
            chunk = chunks.send(held)
    except StopIteration:
        pass
    return errors, peak


def _accumulated(plan: _Plan, keras: KerasSide, feeds: dict[str, np.ndarray], run: Runner
                 ) -> tuple[list[LayerError], int]:
    def one_chunk(chunk: list[MappedValue]) -> tuple[list[LayerError], int]:
        values = _values_of(plan.model, [m.value for m in chunk], feeds, run)
        reference = keras.outputs(sorted({m.layer for m in chunk}))
        held = _bytes(values.values()) + _bytes(a for arrays in reference.values() for a in arrays)
        return [_compare(plan, m, values[m.value], reference) for m in chunk], held

    return _walk(plan, one_chunk)


def _values_of(model: onnx.ModelProto, values: list[str], feeds: dict[str, np.ndarray], run: Runner
               ) -> dict[str, np.ndarray]:
    """The model run with `values` as its only outputs (the proto's outputs are restored afterwards)."""
    kept = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=v) for v in dict.fromkeys(values))
    try:
        return run(model.SerializeToString(), feeds)
    finally:
        del model.graph.output[:]
        model.graph.output.extend(kept)


def _compare(plan: _Plan, mapped: MappedValue, value: np.ndarray, reference: dict[str, list[np.ndarray]]
             ) -> LayerError:
    ours = value if mapped.perm is None or value.ndim != len(mapped.perm) else np.transpose(value, mapped.perm)
    theirs = reference.get(mapped.layer, [])
    expected = theirs[mapped.output] if mapped.output < len(theirs) else np.full(ours.shape, np.nan)
    name = mapped.layer if mapped.output == 0 else f"{mapped.layer}:{mapped.output}"
    stats = output_stats(name, ours, np.asarray(expected), plan.rtol, plan.atol)
    return LayerError(mapped.depth, mapped.layer, mapped.class_name, mapped.output, mapped.value, stats,
                      mapped.folded)


def _bytes(arrays: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays))


def _isolated(plan: _Plan, keras: KerasSide, feeds: dict[str, np.ndarray], run: Runner
              ) -> tuple[list[LayerError], int]:
    cutter = _Cutter(plan.model, {m.value for m in plan.mapped})
    by_value = {m.value: m for m in plan.mapped}

    def one_chunk(chunk: list[MappedValue]) -> tuple[list[LayerError], int]:
        segments = {m.value: cutter.segment(m.value) for m in chunk}
        cut_layers = {by_value[c].layer for s in segments.values() for c in s.cuts}
        reference = keras.outputs(sorted(cut_layers | {m.layer for m in chunk}))
        errors, largest = [], 0
        for m in chunk:
            segment = segments[m.value]
            given = {c: _keras_value(by_value[c], reference, cutter.dtype(c)) for c in segment.cuts}
            given.update({name: feeds[name] for name in segment.inputs})
            value = run(cutter.model_of(segment, m.value), given)[m.value]
            errors.append(_compare(plan, m, value, reference))
            largest = max(largest, value.nbytes + _bytes(given.values()))
        return errors, _bytes(a for arrays in reference.values() for a in arrays) + largest

    return _walk(plan, one_chunk)


def _keras_value(mapped: MappedValue, reference: dict[str, list[np.ndarray]], dtype: Any) -> np.ndarray:
    """Keras' value of a cut, laid out and typed as the ONNX value it replaces."""
    array = np.asarray(reference[mapped.layer][mapped.output])
    if mapped.perm is not None and array.ndim == len(mapped.perm):
        array = np.transpose(array, np.argsort(mapped.perm))
    return np.ascontiguousarray(array.astype(dtype) if dtype is not None else array)


@dataclass(frozen=True)
class _Segment:
    nodes: list[int]  # indices into the graph's nodes, in graph order
    cuts: list[str]  # mapped values the segment reads (fed Keras' values)
    inputs: list[str]  # graph inputs it reads
    initializers: list[str]


class _Cutter:
    """Each mapped value's own ops: walked back from the value to the mapped values, graph inputs and
    initializers it reads."""

    def __init__(self, model: onnx.ModelProto, mapped: set[str]) -> None:
        graph = model.graph
        self.model = model
        self.mapped = mapped
        self.producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
        self.inputs = {i.name for i in graph.input}
        self.initializers = {t.name: i for i, t in enumerate(graph.initializer)}
        self.types = _value_types(model)

    def dtype(self, value: str) -> Any:
        elem = self.types.get(value)
        return None if elem is None else onnx.helper.tensor_dtype_to_np_dtype(elem)

    def segment(self, target: str) -> _Segment:
        nodes, cuts, inputs, inits = set(), set(), set(), set()
        stack, seen = [target], set()
        while stack:
            value = stack.pop()
            if value in seen or not value:
                continue
            seen.add(value)
            if value != target and value in self.mapped:
                cuts.add(value)
            elif value in self.initializers:
                inits.add(value)
            elif value in self.inputs:
                inputs.add(value)
            elif value in self.producer:
                index = self.producer[value]
                nodes.add(index)
                stack.extend(_reads(self.model.graph.node[index]))
        return _Segment(sorted(nodes), sorted(cuts), sorted(inputs), sorted(inits))

    def model_of(self, segment: _Segment, target: str) -> bytes:
        graph = self.model.graph
        sub = onnx.GraphProto(name=f"{graph.name}/{target}")
        sub.node.extend(graph.node[i] for i in segment.nodes)
        sub.initializer.extend(graph.initializer[self.initializers[n]] for n in segment.initializers)
        sub.input.extend(self._typed(name) for name in [*segment.cuts, *segment.inputs])
        sub.output.append(onnx.ValueInfoProto(name=target))
        model = onnx.ModelProto(ir_version=self.model.ir_version, graph=sub)
        model.opset_import.extend(self.model.opset_import)
        return model.SerializeToString()

    def _typed(self, name: str) -> onnx.ValueInfoProto:
        info = onnx.ValueInfoProto(name=name)
        info.type.tensor_type.elem_type = self.types.get(name, onnx.TensorProto.FLOAT)
        return info


def _reads(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, and the outer values its subgraphs (Scan, Loop, If bodies) read."""
    reads = list(node.input)
    for attribute in node.attribute:
        for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            reads.extend(_outer_reads(body))
    return reads


def _outer_reads(body: onnx.GraphProto) -> list[str]:
    own = {i.name for i in body.input} | {t.name for t in body.initializer}
    own |= {out for node in body.node for out in node.output}
    return [name for node in body.node for name in _reads(node) if name not in own]


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every value's element type, by onnx's shape inference on the model's structure (weights left out)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model) if not model.graph.initializer else _copy_without_data(model, skeleton)
    inferred = onnx.shape_inference.infer_shapes(skeleton)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    types = {i.name: i.type.tensor_type.elem_type for i in infos if i.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return {name: elem for name, elem in types.items() if elem}


def _copy_without_data(model: onnx.ModelProto, skeleton: onnx.ModelProto) -> None:
    """The model's graph with each initializer as a typed, shaped graph input instead (no bytes copied)."""
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    for tensor in model.graph.initializer:
        graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
