"""Replaying stored test sets on an ONNX file (any tool's: inputs and outputs are matched by name) and
measuring each output against the expected one. `kconvert verify` orchestrates it (application/verify.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import FormatError, UsageError
from converter.export.onnx_protos import DTYPES, proto_module
from runtime.stats import OutputStats, output_stats
from runtime.testdata import TestSet

Tolerances = dict[str, tuple[float, float]]  # output name -> (rtol, atol)


@dataclass(frozen=True)
class SetResult:
    index: int
    outputs: list[OutputStats]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.outputs)


def has_float16_weights(model: Path) -> bool:
    """Whether the model's initializers are float16 (a `--float16` conversion, or another tool's fp16 model)."""
    proto = _parsed(model)
    kinds = [t.data_type for t in proto.graph.initializer if t.data_type in (DTYPES["float16"], DTYPES["float32"])]
    return bool(kinds) and all(k == DTYPES["float16"] for k in kinds)


def _parsed(model: Path) -> Any:
    proto = proto_module().ModelProto()
    try:
        proto.ParseFromString(model.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise FormatError(f"{model} is not a readable ONNX model ({' '.join(str(err).split())[:200]})",
                          hint="pass a .onnx file") from None
    return proto


def replay(model: Path, sets: list[TestSet], provider: str, tolerances: Tolerances,
           default: tuple[float, float]) -> tuple[list[SetResult], list[str]]:
    """Run every set on onnxruntime; per set, each expected output's statistics. Also the providers that ran."""
    from runtime.session import make_session, run, session_feeds  # onnxruntime only here

    try:
        session = make_session(model, provider)
    except UsageError:
        raise
    except Exception as err:  # onnxruntime refuses the file
        raise FormatError(f"onnxruntime cannot load {model}: {' '.join(str(err).split())[:300]}",
                          hint="pass a valid .onnx file") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    results = []
    for index, test_set in enumerate(sets):
        _check_names(index, "input", list(test_set.inputs), inputs, exact=True)
        _check_names(index, "output", list(test_set.outputs), outputs, exact=False)
        ours = run(session, session_feeds(session, test_set.inputs))
        stats = [output_stats(name, ours[name], expected, *tolerances.get(name, default))
                 for name, expected in test_set.outputs.items()]
        results.append(SetResult(index, stats))
    return results, session.get_providers()


def _check_names(index: int, kind: str, stored: list[str], model: list[str], exact: bool) -> None:
    """Inputs must match the model's exactly; expected outputs must each be one of the model's."""
    missing = set(model) - set(stored) if exact else set()
    unknown = set(stored) - set(model)
    if missing or unknown:
        raise UsageError(f"test set {index}: its {kind}s ({', '.join(stored) or 'none'}) do not match the "
                         f"model's {kind}s ({', '.join(model) or 'none'})",
                         hint="the test data belongs to another model, or the model's names changed")



def model_names(model: Path) -> tuple[list[str], list[str]]:
    """The graph's input names (initializers excluded) and output names, read without onnxruntime."""
    proto = _parsed(model)
    initializers = {t.name for t in proto.graph.initializer}
    return ([i.name for i in proto.graph.input if i.name not in initializers], [o.name for o in proto.graph.output])


def model_metadata(model: Path) -> dict[str, str]:
    """The model's metadata_props (kconvert's provenance and its Keras layer map among them)."""
    return {p.key: p.value for p in _parsed(model).metadata_props}
