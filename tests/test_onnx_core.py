"""export/onnx_core.py (onnx's protobuf classes and C++ checks without onnx/__init__) and the protos that
export/onnx.py builds without onnx.helper: byte-for-byte what onnx.helper / numpy_helper build, under the
fast path and the public-API fallback alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from kmodels import functional, input_layer, layer, run_onnx, save_keras, sequential
from onnx import helper, numpy_helper

from converter import __version__
from converter.api import opened
from converter.errors import UnsupportedLayerError
from converter.export import onnx as onnx_export
from converter.export import onnx_core, onnx_protos
from converter.ir import OpGraph
from converter.ir.ops import Op, ValueInfo
from converter.lowering import lower_for_export

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture
def public_core() -> Iterator[onnx_core.OnnxCore]:
    """The process' core replaced by the public-API fallback for one test."""
    core = onnx_core.load(fast=False)
    onnx_core.use(core)
    yield core
    onnx_core.use(None)


# ------------------------------------------------------------------------------------------------
# The reference: the serialiser export/onnx.py had before, on onnx.helper and numpy_helper.
# ------------------------------------------------------------------------------------------------

def _ref_value_info(info: ValueInfo) -> onnx.ValueInfoProto:
    dtype = onnx_protos.DTYPES.get(info.dtype, onnx.TensorProto.FLOAT)
    return helper.make_tensor_value_info(info.name, dtype, onnx_protos._dims(info.shape))


def _ref_node(op: Op) -> onnx.NodeProto:
    attrs = {key: _ref_graph(v) if isinstance(v, OpGraph) else v for key, v in op.attrs.items()}
    return helper.make_node(op.op_type, op.inputs, op.outputs, name=op.name, domain=op.domain or None, **attrs)


def _ref_graph(ops: OpGraph) -> onnx.GraphProto:
    initializers = [numpy_helper.from_array(np.asarray(a), name) for name, a in ops.initializers.items()]
    return helper.make_graph([_ref_node(op) for op in ops.ops], ops.name, [_ref_value_info(i) for i in ops.inputs],
                             [_ref_value_info(o) for o in ops.outputs], initializer=initializers)


def _ref_model(ops: OpGraph, metadata: dict[str, str]) -> onnx.ModelProto:
    nodes = [_ref_node(op) for op in ops.ops]
    opset_ids = [helper.make_opsetid("", ops.opset)]
    used = {node.domain for node in nodes}
    opset_ids += [helper.make_opsetid(d, v) for d, v in onnx_protos.DOMAIN_OPSETS.items() if d in used]
    model = helper.make_model(_ref_graph(ops), opset_imports=opset_ids, producer_name="kconvert",
                              producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opset_ids, ignore_unknown=True)
    helper.set_model_props(model, {**ops.metadata, **metadata})
    return model


# ------------------------------------------------------------------------------------------------
# Models: fixtures, a float16 conversion, a Scan (ConvLSTM) and a string model (ai.onnx.ml, strings).
# ------------------------------------------------------------------------------------------------

def _conv_lstm(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    cell = [rng.normal(size=s).astype(np.float32) for s in ((2, 2, 12), (2, 3, 12), (12,))]
    return save_keras(tmp_path / "cl.keras", sequential([layer("ConvLSTM1D", "cl", filters=3, kernel_size=2,
                                                               return_sequences=True)], (4, 6, 2)),
                      {"cl": {"cell": cell}})


def _string_lookup(tmp_path: Path) -> Path:
    config = functional([(input_layer("text", (2,), dtype="string"), []),
                         (layer("StringLookup", "lookup", vocabulary=["a", "b", "é"], mask_token="",
                                oov_token="[UNK]", num_oov_indices=1, output_mode="int"), ["text"])],
                        ["text"], ["lookup"])
    return save_keras(tmp_path / "s.keras", config, {})


CASES = {  # name: (model file or builder, float16)
    "small_cnn": (FIXTURES / "small_cnn" / "model.keras", False),
    "small_cnn_float16": (FIXTURES / "small_cnn" / "model.keras", True),
    "lstm_stack": (FIXTURES / "lstm_stack" / "model.keras", False),
    "embedding": (FIXTURES / "embedding" / "model.keras", False),
    "time_distributed_float16": (FIXTURES / "time_distributed" / "model.keras", True),
    "mobilenet_v3": (FIXTURES / "zoo" / "mobilenet_v3_small_a025" / "model.keras", False),
    "conv_lstm_scan": (_conv_lstm, False),
    "conv_lstm_scan_float16": (_conv_lstm, True),
    "string_lookup": (_string_lookup, False),
}


def _lowered(tmp_path: Path, case: str) -> tuple[OpGraph, dict[str, str]]:
    source, float16 = CASES[case]
    path = source if isinstance(source, Path) else source(tmp_path)
    with opened(path, mapped=False) as loaded:
        return lower_for_export(loaded.graph, onnx_export.DEFAULT_OPSET, float16, False), loaded.graph.metadata


@pytest.mark.parametrize("case", CASES)
def test_built_protos_equal_onnx_helpers(tmp_path: Path, case: str) -> None:
    ops, meta = _lowered(tmp_path, case)
    built = onnx_protos.to_model(ops, meta).SerializeToString()
    assert built == _ref_model(ops, meta).SerializeToString()


@pytest.mark.parametrize("case", ["small_cnn_float16", "conv_lstm_scan", "string_lookup"])
def test_written_files_equal_under_fast_and_public_cores(tmp_path: Path, case: str) -> None:
    """write_ops (the CLI's writer: streamed weights, checker and strict type inference) writes the same
    bytes through the C++ extension directly and through onnx's public API; onnxruntime loads them."""
    ops, meta = _lowered(tmp_path, case)
    onnx_export.write_ops(ops, tmp_path / "fast.onnx", meta)
    onnx_core.use(onnx_core.load(fast=False))
    try:
        assert not onnx_core.active().fast
        onnx_export.write_ops(ops, tmp_path / "public.onnx", meta)
    finally:
        onnx_core.use(None)
    assert (tmp_path / "fast.onnx").read_bytes() == (tmp_path / "public.onnx").read_bytes()
    model = onnx.load(str(tmp_path / "fast.onnx"))
    onnx.checker.check_model(model)
    if case == "conv_lstm_scan":
        x = np.random.default_rng(1).normal(size=(2, 4, 6, 2)).astype(np.float32)
        assert run_onnx(model, x)[0].shape == (2, 4, 5, 3)


# ------------------------------------------------------------------------------------------------
# Tensors and attributes, kind by kind.
# ------------------------------------------------------------------------------------------------

ARRAYS = {
    "float32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "float16": np.array([0.1, -2, 65504], np.float16),
    "float64": np.array([[1e-300, 2.5]]), "int8": np.array([-128, 0, 127], np.int8),
    "uint8": np.array([0, 255], np.uint8), "int32": np.array([-(2**31), 5], np.int32),
    "int64": np.array([2**40, -1]), "bool": np.array([True, False, True]),
    "big_endian": np.array([1.5, -3], dtype=">f4"), "scalar": np.array(3, np.int64), "empty": np.zeros((0, 4)),
    "bfloat16": np.array([1.0, -0.5, 3.25], dtype=ml_dtypes.bfloat16),
    "string_object": np.array(["a", "é", ""], dtype=object), "string_unicode": np.array([["xy", "z"]]),
    "bytes_object": np.array([b"\x00\xff"], dtype=object),
}


@pytest.mark.parametrize("kind", ARRAYS)
def test_tensors_equal_numpy_helper(kind: str) -> None:
    array = ARRAYS[kind]
    built = onnx_protos.tensor_proto(array, "w")
    native = array.astype(array.dtype.newbyteorder("=")) if kind == "big_endian" else array  # numpy_helper refuses >f4
    assert built.SerializeToString() == numpy_helper.from_array(native, "w").SerializeToString()
    if kind != "bytes_object":
        np.testing.assert_array_equal(numpy_helper.to_array(built), native)


ATTRIBUTES: dict[str, Any] = {
    "int": 3, "bool": True, "np_int": np.int64(-7), "float": 0.25, "np_float": np.float32(1e-3), "str": "same",
    "bytes": b"\x01", "ints": [1, -2, 3], "int_tuple": (0, 0), "int_array": np.array([4, 5]),
    "floats": [0.5, 1.5], "mixed_numbers": [1, 2.5], "float_array": np.array([0.1, 0.2], np.float32),
    "strings": ["a", "é"], "tensor": numpy_helper.from_array(np.array([1.0], np.float32), "value"),
}


@pytest.mark.parametrize("kind", ATTRIBUTES)
def test_attributes_equal_make_attribute(kind: str) -> None:
    value = ATTRIBUTES[kind]
    built = onnx_protos._attribute("a", value)
    assert built.SerializeToString() == helper.make_attribute("a", value).SerializeToString()


@pytest.mark.parametrize("value", [[], object(), [1, "a"]])
def test_attributes_refused_as_make_attribute_refuses(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as built:
        onnx_protos._attribute("a", value)
    with pytest.raises((TypeError, ValueError)) as reference:
        helper.make_attribute("a", value)
    assert type(built.value) is type(reference.value)


def test_graph_attribute_and_node_without_name_or_domain() -> None:
    body = OpGraph(name="body", opset=17, inputs=[ValueInfo("x", (None, 2), "float32")],
                   outputs=[ValueInfo("y", (), "float32")], ops=[Op("Identity", ["x"], ["y"], name="id")],
                   initializers={"k": np.ones(2, np.float32)})
    op = Op("Scan", ["s"], ["t"], name="", attrs={"body": body, "num_scan_inputs": 1, "unused": None})
    assert onnx_protos._node(op).SerializeToString() == _ref_node(op).SerializeToString()


# ------------------------------------------------------------------------------------------------
# The core: which path, the checks' errors, and onnx imported afterwards.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "fast"), [
    ("1.23.2", True), ("1.15.0", True), ("1.16.0rc1", True), ("1.24.0", True), ("1.14.1", False),
    ("1.25.0", False), ("2.0.0", False), ("weird", False)])
def test_fast_path_only_for_verified_onnx_series(monkeypatch: pytest.MonkeyPatch, version: str, fast: bool) -> None:
    monkeypatch.setattr(onnx_core.metadata, "version", lambda name: version)
    assert onnx_core.fast_path_supported() is fast
    assert onnx_core.load().fast is fast


def test_no_onnx_distribution_means_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(onnx_core.metadata, "version", missing)
    assert not onnx_core.fast_path_supported()


def test_installed_onnx_takes_the_fast_path() -> None:
    core = onnx_core.load()
    assert core.fast and core.proto is onnx.onnx_ml_pb2 and core.proto.ModelProto is onnx.ModelProto
    assert core.validation_error is onnx.checker.ValidationError
    assert core.inference_error is onnx.shape_inference.InferenceError
    assert core.max_opset() == onnx.defs.onnx_opset_version()


@pytest.mark.parametrize("fast", [True, False])
def test_checks_raise_onnx_errors_on_both_paths(fast: bool) -> None:
    core = onnx_core.load(fast=fast)
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.INT8, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT8, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    core.check_model(model.SerializeToString())  # structurally fine
    with pytest.raises(core.inference_error, match="Sigmoid"):
        core.infer_types_strictly(model.SerializeToString())
    model.ir_version = 10**6
    with pytest.raises(core.validation_error):
        core.check_model(model.SerializeToString())


def test_type_errors_name_the_layer_on_the_public_path(public_core: onnx_core.OnnxCore) -> None:
    ops = OpGraph(name="g", opset=17, inputs=[ValueInfo("x", (2,), "int8")], outputs=[ValueInfo("y", (2,), "int8")],
                  ops=[Op("Sigmoid", ["x"], ["y"], name="dense/sigmoid")])
    with pytest.raises(UnsupportedLayerError) as refused:
        onnx_export.check_types(onnx_protos.to_model(ops))
    assert refused.value.layer == "dense"


def test_convert_works_on_the_public_path(public_core: onnx_core.OnnxCore, tmp_path: Path) -> None:
    import converter

    model = converter.convert(FIXTURES / "small_cnn" / "model.keras")
    assert isinstance(model, onnx.ModelProto) and onnx_export.max_opset() == onnx.defs.onnx_opset_version()
    converter.save(model, tmp_path / "m.onnx")
    assert onnx.load(str(tmp_path / "m.onnx")) == model


AFTERWARDS = """
import json, sys
from converter.export import onnx_core
core = onnx_core.active()
before = sorted(m for m in sys.modules if m == "onnx" or m.startswith(("onnx.", "ml_dtypes")))
import onnx, onnx.helper, onnx.numpy_helper, onnx.reference
from onnx import onnx_ml_pb2
same = [core.proto is onnx_ml_pb2, core.proto.ModelProto is onnx.ModelProto,
        sys.modules["onnx.onnx_cpp2py_export"].checker is onnx.checker.C]
model = onnx.helper.make_model(onnx.helper.make_graph(
    [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
    [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
    [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])]))
onnx.checker.check_model(model, full_check=True)
x = __import__("numpy").array([-1.0, 2.0], "float32")
y = onnx.reference.ReferenceEvaluator(onnx.load_from_string(model.SerializeToString())).run(None, {"x": x})
attached = onnx_core.public_onnx().onnx_ml_pb2 is core.proto
print(json.dumps({"fast": core.fast, "before": before, "same": same, "y": [float(v) for v in y[0]],
                  "attached": attached}))
"""


def test_onnx_imported_after_the_core_reuses_its_modules() -> None:
    """In a fresh process: the core loads without onnx/__init__ (nor ml_dtypes); a later `import onnx`
    reuses its protobuf module and extension (no duplicate descriptor) and works as usual."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"}
    done = subprocess.run([sys.executable, "-c", AFTERWARDS], capture_output=True, text=True, env=env, cwd=ROOT,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["fast"] and all(report["same"]) and report["attached"] and report["y"] == [0.0, 2.0]
    assert "onnx" not in report["before"] and not any(m.startswith("ml_dtypes") for m in report["before"])
    assert "onnx.onnx_ml_pb2" in report["before"] and "onnx.helper" not in report["before"]
