"""Replaying stored test sets on an ONNX file (any tool's: inputs and outputs are matched by name) and
measuring each output against the expected one. `kconvert verify` orchestrates it (application/verify.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import FormatError, UsageError
from converter.export.onnx_protos import DTYPES
from runtime.stats import OutputStats, output_stats
from runtime.testdata import TestSet, model_proto

Tolerances = dict[str, tuple[float, float]]  # output name -> (rtol, atol)


@dataclass(frozen=True)
class SetResult:
    index: int
    outputs: list[OutputStats]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.outputs)


# Ops only a quantized model holds (onnxruntime.quantization's QDQ and QOperator formats).
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                           "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul"})


@dataclass(frozen=True)
class ModelFacts:
    """What verify needs to know of an ONNX file before running it, read in one parse: its input names
    (initializers excluded) and output names, its metadata_props (kconvert's provenance, layer map and
    embedded test data), and its precision: "quantized" (int8 ops anywhere), "float16" (every float
    initializer float16: a `--float16` conversion or another tool's fp16 model), else "float32"."""

    inputs: list[str]
    outputs: list[str]
    metadata: dict[str, str]
    precision: str


def model_facts(model: Path) -> ModelFacts:
    proto = model_proto(model)
    initializers = {t.name for t in proto.graph.initializer}
    return ModelFacts([i.name for i in proto.graph.input if i.name not in initializers],
                      [o.name for o in proto.graph.output], {p.key: p.value for p in proto.metadata_props},
                      _precision(proto))


def _precision(proto: Any) -> str:
    if any(node.op_type in QUANTIZED_OPS for node in proto.graph.node):
        return "quantized"
    kinds = [t.data_type for t in proto.graph.initializer if t.data_type in (DTYPES["float16"], DTYPES["float32"])]
    return "float16" if kinds and all(k == DTYPES["float16"] for k in kinds) else "float32"


def replay(model: Path, sets: list[TestSet], provider: str, tolerances: Tolerances,
           default: tuple[float, float]) -> tuple[list[SetResult], list[str]]:
    """Run every set on onnxruntime; per set, each expected output's statistics. Also the providers that ran."""
    from runtime.session import LOAD_ERRORS, make_session  # onnxruntime only here

    try:
        session = make_session(model, provider)
    except LOAD_ERRORS as err:  # onnxruntime refuses the file
        raise FormatError(f"onnxruntime cannot load {model}: {' '.join(str(err).split())[:300]}",
                          hint="pass a valid .onnx file") from None
    results = [_replay_set(session, index, test_set, tolerances, default) for index, test_set in enumerate(sets)]
    return results, session.get_providers()


def _replay_set(session: Any, index: int, test_set: TestSet, tolerances: Tolerances,
                default: tuple[float, float]) -> SetResult:
    """One set checked against the model's names, shapes and types, run, and each expected output measured."""
    from runtime.session import RUN_ERRORS, run, session_feeds

    declared = {i.name: i for i in [*session.get_inputs(), *session.get_outputs()]}
    _check_names(index, "input", list(test_set.inputs), [i.name for i in session.get_inputs()], exact=True)
    _check_names(index, "output", list(test_set.outputs), [o.name for o in session.get_outputs()], exact=False)
    for role, arrays in (("input", test_set.inputs), ("output", test_set.outputs)):
        for name, array in arrays.items():
            _check_fits(index, role, declared[name], array)
    try:
        ours = run(session, session_feeds(session, test_set.inputs))
    except RUN_ERRORS as err:  # what the checks above cannot see (a size too small for a kernel)
        raise UsageError(f"test set {index}: onnxruntime cannot run the model on its inputs "
                         f"({' '.join(str(err).split())[:300]})", hint="does the test data belong to this model?"
                         ) from None
    stats = [output_stats(name, ours[name], expected, *tolerances.get(name, default))
             for name, expected in test_set.outputs.items()]
    return SetResult(index, stats)


def _check_names(index: int, kind: str, stored: list[str], model: list[str], exact: bool) -> None:
    """Inputs must match the model's exactly; expected outputs must each be one of the model's."""
    missing = set(model) - set(stored) if exact else set()
    unknown = set(stored) - set(model)
    if missing or unknown:
        raise UsageError(f"test set {index}: its {kind}s ({', '.join(stored) or 'none'}) do not match the "
                         f"model's {kind}s ({', '.join(model) or 'none'})",
                         hint="the test data belongs to another model, or the model's names changed")


def _check_fits(index: int, role: str, declared: Any, array: np.ndarray) -> None:
    """An array fits a graph value when it has its rank, its fixed dims, and a kind of value its type takes
    (numbers for numbers, text for strings, whole numbers for integers): onnxruntime's own refusal comes
    from deep inside a run, or not at all (astype truncates 1.5 to 1)."""
    where = f"test set {index}: {role} '{declared.name}'"
    shape = [d if isinstance(d, int) else None for d in (declared.shape or [])]
    if len(shape) != array.ndim or any(d is not None and d != n for d, n in zip(shape, array.shape)):
        dims = ", ".join("?" if d is None else str(d) for d in shape)
        raise UsageError(f"{where} has shape {tuple(array.shape)}, and the model's {role} has shape ({dims})",
                         hint="the test data belongs to another model (? is any size)")
    wanted = declared.type.removeprefix("tensor(").removesuffix(")")
    kind = "text" if array.dtype.kind in "OUS" else "number" if array.dtype.kind in "biuf" else array.dtype.kind
    if kind != ("text" if wanted == "string" else "number"):
        raise UsageError(f"{where} holds {array.dtype} values, and the model's {role} is {wanted}",
                         hint=f"store {wanted} values")
    if wanted.startswith(("int", "uint")) and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise UsageError(f"{where} holds fractional values, and the model's {role} is {wanted}",
                         hint="store whole numbers")
