"""Shape tensor functions without TensorFlow: hand-written tf.keras op-layer and Keras 3 op-node configs
(the spellings older TensorFlows write, forms this one does not test live) against numpy, and the refusals
by name (exit 3) of what does not convert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import UnsupportedLayerError


def _tf_op(tmp_path: Path, function: str, kwargs: dict[str, Any], shapes: tuple[tuple[int, ...], ...] = ((4, 6),),
           cls: str = "TFOpLambda") -> Path:
    """A tf.keras model: inputs x0, x1, ... and one op layer called on x0 with `kwargs` (as tf_keras writes)."""
    inputs = [input_layer(f"x{i}", s) for i, s in enumerate(shapes)]
    for entry in inputs:
        entry["inbound_nodes"] = []
    op = layer(cls, "op", function=function)
    op["inbound_nodes"] = [["x0", 0, 0, kwargs]]
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [*inputs, op],
                                                     "input_layers": [[f"x{i}", 0, 0] for i in range(len(shapes))],
                                                     "output_layers": [["op", 0, 0]]}}
    return save_legacy_h5(tmp_path / "op.h5", config, {})


def _keras_op(tmp_path: Path, class_name: str, config: dict[str, Any], args: list[Any]) -> Path:
    op = {"module": "keras.src.ops.numpy", "class_name": class_name, "config": {"name": "op", **config},
          "registered_name": class_name, "name": "op"}
    model = functional([(input_layer("x", (4, 6)), []), (op, ["x"])], ["x"], ["op"])
    model["config"]["layers"][1]["inbound_nodes"] = [{"args": args, "kwargs": {}}]
    return save_keras(tmp_path / "op.keras", model, {})


X = np.random.default_rng(0).normal(size=(3, 4, 6)).astype("float32")
W = np.random.default_rng(1).normal(size=(3, 6, 4)).astype("float32")

# The spellings of older TensorFlows (tf.keras 2.4-2.15) and forms this TensorFlow writes otherwise.
TF_CASES = [
    ("transpose", {"perm": [0, 2, 1], "conjugate": False}, lambda x: x.transpose(0, 2, 1)),
    ("transpose", {"perm": None}, lambda x: x.transpose(2, 1, 0)),
    ("squeeze", {"axis": None}, lambda x: x),
    ("compat.v1.squeeze", {"squeeze_dims": [1]}, None),
    ("pad", {"paddings": [[0, 0], [2, 1], [1, 0]], "mode": "constant", "constant_values": -1.0},
     lambda x: np.pad(x, [[0, 0], [2, 1], [1, 0]], constant_values=-1.0)),
    ("gather", {"indices": [3, 0, -1], "axis": 1}, lambda x: x[:, [3, 0, -1]]),
    ("gather", {"indices": [1, 0], "axis": None}, lambda x: x[[1, 0]]),
    ("compat.v1.expand_dims", {"dim": -1}, lambda x: x[..., None]),
    ("reshape", {"shape": [-1, 3, 8]}, lambda x: x.reshape(-1, 3, 8)),
    ("split", {"num_or_size_splits": [4, -1], "axis": 2}, lambda x: x[:, :, :4]),
]


@pytest.mark.parametrize("function, kwargs, reference", TF_CASES)
def test_tf_op_layer_spellings(tmp_path: Path, function: str, kwargs: dict[str, Any], reference: Any) -> None:
    if function == "compat.v1.squeeze":  # squeeze a size-1 axis: x[:, :1] is the input
        path = _tf_op(tmp_path, function, kwargs, ((1, 6),))
        (actual,) = run_onnx(converter.convert(path), X[:, :1])
        assert_close(actual, X[:, 0])
        return
    (actual,) = run_onnx(converter.convert(_tf_op(tmp_path, function, kwargs)), X)
    assert_close(actual, reference(X))


def test_tf_matmul_old_name_with_tensor_operand(tmp_path: Path) -> None:
    path = _tf_op(tmp_path, "matmul", {"b": ["x1", 0, 0], "transpose_a": False, "adjoint_b": False},
                  ((4, 6), (6, 4)))
    (actual,) = run_onnx(converter.convert(path), X, W)
    assert_close(actual, X @ W)


@pytest.mark.parametrize("out_type", ["int32", "int64"])
def test_tf_shape_v2_name(tmp_path: Path, out_type: str) -> None:
    """`tf.shape` as TensorFlow 2.x before 2.16 names it: the run-time shape, batch included."""
    (actual,) = run_onnx(converter.convert(_tf_op(tmp_path, "shape", {"out_type": out_type})), X)
    assert actual.dtype == np.dtype(out_type)
    np.testing.assert_array_equal(actual, [3, 4, 6])


def test_squeeze_without_axis_keeps_an_open_batch_axis(tmp_path: Path) -> None:
    """TensorFlow drops every size-1 axis at run time (a batch of 1 too); the model's shapes know only
    the static ones, and the converted model keeps the batch axis, as Keras' declared shape does."""
    path = _tf_op(tmp_path, "compat.v1.squeeze", {"axis": None}, ((1, 6, 1),))
    x = np.random.default_rng(2).normal(size=(2, 1, 6, 1)).astype("float32")
    (actual,) = run_onnx(converter.convert(path), x)
    assert_close(actual, x[:, 0, :, 0])


KERAS_CASES = [
    ("Pad", {"pad_width": [[0, 0], [1, 2], [2, 1]], "mode": "edge"},
     lambda x: np.pad(x, [[0, 0], [1, 2], [2, 1]], mode="edge")),
    ("Take", {"axis": None}, lambda x: x.reshape(-1)[[5, 70]]),
    ("GetItem", {}, lambda x: x[:, ::-2, 1:5:3]),
    ("Moveaxis", {"source": [0, 1], "destination": [2, 0]}, lambda x: np.moveaxis(x, [0, 1], [2, 0])),
    ("Einsum", {"subscripts": "b...j->...b"}, lambda x: np.einsum("b...j->...b", x)),
    ("Repeat", {"repeats": 2, "axis": 0}, lambda x: np.repeat(x, 2, axis=0)),
]
KERAS_ARGS: dict[str, list[Any]] = {
    "Take": [[5, 70]],
    "GetItem": [[{"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}},
                 {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": -2}},
                 {"class_name": "__slice__", "config": {"start": 1, "stop": 5, "step": 3}}]],
}


@pytest.mark.parametrize("class_name, config, reference", KERAS_CASES)
def test_keras_op_node_forms(tmp_path: Path, class_name: str, config: dict[str, Any], reference: Any) -> None:
    path = _keras_op(tmp_path, class_name, config, [keras_tensor("x"), *KERAS_ARGS.get(class_name, [])])
    (actual,) = run_onnx(converter.convert(path), X)
    assert_close(actual, reference(X))


REFUSED = [
    ("einsum", {}, "tf.einsum"),  # unknown here: tf_keras does not save einsum's operands
    ("broadcast_to", {"shape": ["x0", 0, 0]}, "argument shape=.* is computed in the graph"),
    ("unstack", {"axis": 1}, "argument num=None is not given"),
    ("compat.v1.pad", {"paddings": [[0, 0], [1, 1], [0, 0]], "mode": "SYMMETRIC"}, "argument mode='SYMMETRIC'"),
    ("gather", {"indices": [0], "axis": 1, "batch_dims": 1}, "argument batch_dims=1"),
    ("tile", {"multiples": [1, 2, 1], "bogus": 1}, "has the argument bogus"),
    ("slice", {"begin": [0, 1], "size": [-1, 2]}, "argument begin=.* must be 3 integers each"),
]


@pytest.mark.parametrize("function, kwargs, message", REFUSED)
def test_refused_by_name(tmp_path: Path, function: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=message):
        converter.convert(_tf_op(tmp_path, function, kwargs))


def test_slice_bound_held_in_a_tensor_is_refused(tmp_path: Path) -> None:
    spec = [{"start": None, "stop": None, "step": None}, {"start": ["x0", 0, 0], "stop": None, "step": None}]
    path = _tf_op(tmp_path, "__operators__.getitem", {"slice_spec": spec}, cls="SlicingOpLambda")
    with pytest.raises(UnsupportedLayerError, match="only constant integer bounds convert"):
        converter.convert(path)


def test_reshape_to_a_shape_built_from_tf_shape_keeps_the_batch_axis(tmp_path: Path) -> None:
    """`tf.reshape(x, [tf.shape(x)[0], -1, 3])`: the shape is concatenated at run time, and its first
    entry is traced to x's batch axis, so the -1 is known (8) for the layers after it."""
    x = input_layer("x0", (4, 6))
    x["inbound_nodes"] = []
    shape = layer("TFOpLambda", "s", function="compat.v1.shape")
    shape["inbound_nodes"] = [["x0", 0, 0, {"out_type": "int32", "name": None}]]
    first = layer("SlicingOpLambda", "g", function="__operators__.getitem")
    first["inbound_nodes"] = [["s", 0, 0, {"slice_spec": 0}]]
    reshape = layer("TFOpLambda", "r", function="reshape")
    reshape["inbound_nodes"] = [["x0", 0, 0, {"shape": [["g", 0, 0], -1, 3]}]]
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [x, shape, first, reshape],
                                                     "input_layers": [["x0", 0, 0]], "output_layers": [["r", 0, 0]]}}
    model = converter.convert(save_legacy_h5(tmp_path / "op.h5", config, {}))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [8, 3]
    assert dims[0].dim_param == model.graph.input[0].type.tensor_type.shape.dim[0].dim_param != ""
    (actual,) = run_onnx(model, X)
    assert_close(actual, X.reshape(3, 8, 3))
