"""Math, activation and reduction tensor functions without TensorFlow: tf.keras TFOpLambda layers and
Keras 3 op nodes built as configs (the shapes tf_keras / Keras 3 write, see tests/test_tf_ops_math.py for
the live checks), converted and compared with numpy; and the refusals, by name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import UnsupportedLayerError

X = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
_erf = np.vectorize(math.erf)


def tf_model(tmp_path: Path, function: str, entry: list[Any], dtype: str = "float32") -> Path:
    """One TFOpLambda layer on input `x`, its call written as tf_keras writes it (one bare entry)."""
    op = layer("TFOpLambda", "op", function=function)
    op["inbound_nodes"] = [entry]
    x = input_layer("x", (4, 5), dtype)
    x["inbound_nodes"] = []
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [x, op],
                                                     "input_layers": [["x", 0, 0]], "output_layers": [["op", 0, 0]]}}
    return save_legacy_h5(tmp_path / "op.h5", config, {})


def keras3_model(tmp_path: Path, class_name: str, args: list[Any], config: dict[str, Any] | None = None,
                 h5: bool = False, dtype: str = "float32") -> Path:
    """One Keras 3 op node on input `x`: a .keras archive (the entry names its ops module) or a Keras 3
    legacy .h5 (no module; an op's config has no `trainable`)."""
    op: dict[str, Any] = {"class_name": class_name, "config": {"name": "op", **(config or {})}, "name": "op"}
    if not h5:
        op.update(module="keras.src.ops.numpy", registered_name=class_name)
    model = functional([(input_layer("x", (4, 5), dtype), []), (op, ["x"])], ["x"], ["op"])
    model["config"]["layers"][1]["inbound_nodes"] = [{"args": args, "kwargs": {}}]
    if h5:
        return save_legacy_h5(tmp_path / "op.h5", model, {}, keras_version="3.15.1")
    return save_keras(tmp_path / "op.keras", model, {})


def run(path: Path, x: np.ndarray = X) -> np.ndarray:
    (out,) = run_onnx(converter.convert(path), x)
    return out


TF_CASES: dict[str, tuple[str, list[Any], Any]] = {
    # case -> (function, the call's entry, numpy reference)
    "constant first": ("math.truediv", ["_CONSTANT_VALUE", -1, 2.0, {"y": ["x", 0, 0]}], lambda x: 2.0 / x),
    "floor_div": ("compat.v1.floor_div", ["x", 0, 0, {"y": 0.7}], lambda x: np.floor_divide(x, np.float32(0.7))),
    "floormod": ("math.floormod", ["x", 0, 0, {"y": -0.7}], lambda x: np.mod(x, np.float32(-0.7))),
    "reduce_sum": ("math.reduce_sum", ["x", 0, 0, {"axis": [1], "keepdims": True}],
                   lambda x: x.sum(axis=1, keepdims=True)),
    "reduce_max all": ("math.reduce_max", ["x", 0, 0, {}], lambda x: x.max()),
    "variance": ("math.reduce_variance", ["x", 0, 0, {"axis": -1}], lambda x: x.var(axis=-1)),
    "gelu": ("nn.gelu", ["x", 0, 0, {}], lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    "leaky_relu": ("nn.leaky_relu", ["x", 0, 0, {"alpha": 0.3}], lambda x: np.where(x > 0, x, 0.3 * x)),
    "softmax": ("nn.softmax", ["x", 0, 0, {"axis": 1}],
                lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
    "clip": ("clip_by_value", ["x", 0, 0, {"clip_value_min": -0.5, "clip_value_max": 0.5}],
             lambda x: np.clip(x, -0.5, 0.5)),
    "l2_normalize": ("math.l2_normalize", ["x", 0, 0, {"axis": -1}],
                     lambda x: x / np.sqrt((x * x).sum(axis=-1, keepdims=True))),
    "cumsum reverse": ("math.cumsum", ["x", 0, 0, {"axis": 2, "reverse": True}],
                       lambda x: np.flip(np.cumsum(np.flip(x, 2), axis=2), 2)),
}


@pytest.mark.parametrize("case", list(TF_CASES))
def test_tf_op_layer_matches_numpy(tmp_path: Path, case: str) -> None:
    function, entry, reference = TF_CASES[case]
    assert_close(run(tf_model(tmp_path, function, entry)), np.asarray(reference(X), dtype="float32"))


def test_tf_comparison_gives_bool_and_argmax_int64(tmp_path: Path) -> None:
    assert (run(tf_model(tmp_path, "math.greater", ["x", 0, 0, {"y": 0.0}])) == (X > 0)).all()
    indices = run(tf_model(tmp_path, "math.argmax", ["x", 0, 0, {"axis": 1}]))
    assert indices.dtype == np.int64 and (indices == X.argmax(axis=1)).all()


def test_tf_cast_truncates_toward_zero(tmp_path: Path) -> None:
    out = run(tf_model(tmp_path, "cast", ["x", 0, 0, {"dtype": "int32"}]), X * 5)
    assert out.dtype == np.int32 and (out == np.trunc(X * 5).astype("int32")).all()


def test_integer_floor_division_and_modulo_follow_the_divisor_sign(tmp_path: Path) -> None:
    ints = np.arange(-10, 10, dtype="int32").reshape(1, 4, 5)
    out = run(tf_model(tmp_path, "compat.v1.floor_div", ["x", 0, 0, {"y": -3}], "int32"), ints)
    assert (out == ints // -3).all()
    out = run(tf_model(tmp_path, "math.floormod", ["x", 0, 0, {"y": 3}], "int32"), ints)
    assert (out == ints % 3).all()


KERAS3_CASES: dict[str, tuple[str, list[Any], dict[str, Any], Any]] = {
    # case -> (class, call args ("x" is the tensor), config, numpy reference)
    "constant first": ("TrueDivide", [3.0, "x"], {}, lambda x: 3.0 / x),
    "power": ("Power", ["x", 2.0], {}, lambda x: x ** 2),
    "mean": ("Mean", ["x"], {"axis": [1, 2], "keepdims": False}, lambda x: x.mean(axis=(1, 2))),
    "logsumexp": ("Logsumexp", ["x"], {"axis": 1, "keepdims": True},
                  lambda x: np.log(np.exp(x).sum(axis=1, keepdims=True))),
    "elu": ("Elu", ["x"], {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "hard_silu": ("HardSilu", ["x"], {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "gelu approximate": ("Gelu", ["x"], {"approximate": True},
                         lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "clip": ("Clip", ["x"], {"x_min": -0.2, "x_max": 0.4}, lambda x: np.clip(x, -0.2, 0.4)),
    "round decimals": ("Round", ["x"], {"decimals": 1}, lambda x: np.round(x, 1)),
    "std": ("Std", ["x"], {"axis": 1, "keepdims": False}, lambda x: x.std(axis=1)),
    "atan2 constant": ("Arctan2", ["x", -1.0], {}, lambda x: np.arctan2(x, -1.0)),
    "cbrt": ("Cbrt", ["x"], {}, np.cbrt),
    "full_like": ("FullLike", ["x", 2.5], {"dtype": None}, lambda x: np.full_like(x, 2.5)),
}


def _keras3_args(args: list[Any]) -> list[Any]:
    return [keras_tensor("x") if a == "x" else a for a in args]


@pytest.mark.parametrize("h5", [False, True])
@pytest.mark.parametrize("case", list(KERAS3_CASES))
def test_keras3_op_node_matches_numpy(tmp_path: Path, case: str, h5: bool) -> None:
    class_name, args, config, reference = KERAS3_CASES[case]
    path = keras3_model(tmp_path, class_name, _keras3_args(args), config, h5=h5)
    assert_close(run(path), np.asarray(reference(X), dtype="float32"))


def test_keras3_integer_tensor_meets_a_float_constant_in_float32(tmp_path: Path) -> None:
    """Keras 3 promotes `int32 - 0.5` to float32 (a weak float); an int constant keeps int32."""
    ints = np.arange(-10, 10, dtype="int32").reshape(1, 4, 5)
    out = run(keras3_model(tmp_path, "Subtract", [keras_tensor("x"), 0.5], dtype="int32"), ints)
    assert out.dtype == np.float32 and (out == ints - 0.5).all()
    out = run(keras3_model(tmp_path, "Subtract", [keras_tensor("x"), 2], dtype="int32"), ints)
    assert out.dtype == np.int32 and (out == ints - 2).all()


def test_keras3_argmin_keeps_dims_as_int32(tmp_path: Path) -> None:
    path = keras3_model(tmp_path, "Argmin", [keras_tensor("x")], {"axis": -1, "keepdims": True})
    out = run(path)
    assert out.dtype == np.int32 and (out == X.argmin(axis=-1)[..., None]).all()


REFUSED_TF: dict[str, tuple[str, list[Any], str, str]] = {
    # case -> (function, entry, input dtype, what the message names)
    "unknown function": ("math.bessel_i0", ["x", 0, 0, {}], "float32", "tf.math.bessel_i0"),
    "axis in the graph": ("math.reduce_sum", ["x", 0, 0, {"axis": ["x", 0, 0]}], "float32", "axis="),
    "where alone": ("where", ["x", 0, 0, {}], "float32", "where(condition) alone"),
    "cast to complex": ("cast", ["x", 0, 0, {"dtype": "complex64"}], "float32", "dtype='complex64'"),
    "integer mean": ("math.reduce_mean", ["x", 0, 0, {"axis": 1}], "int32", "integer mean truncates"),
    "unknown argument": ("nn.relu", ["x", 0, 0, {"threshold": 1.0}], "float32", "argument threshold"),
    "option of the wrong kind": ("nn.gelu", ["x", 0, 0, {"approximate": "yes"}], "float32", "approximate="),
}


@pytest.mark.parametrize("case", list(REFUSED_TF))
def test_tf_op_layer_refused_by_name(tmp_path: Path, case: str) -> None:
    function, entry, dtype, named = REFUSED_TF[case]
    with pytest.raises(UnsupportedLayerError, match=named.replace("(", r"\(").replace(")", r"\)")) as err:
        converter.convert(tf_model(tmp_path, function, entry, dtype))
    assert err.value.exit_code == 3


REFUSED_KERAS3: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown op class": ("Median", {"axis": 1, "keepdims": False}, "Median"),
    "initial set": ("Max", {"axis": 1, "keepdims": False, "initial": 1.0}, "initial="),
    "argmax over the flat tensor": ("Argmax", {"axis": None, "keepdims": False}, "axis=None"),
    "normalize order 1": ("Normalize", {"axis": -1, "order": 1, "epsilon": None}, "order=1"),
}


@pytest.mark.parametrize("case", list(REFUSED_KERAS3))
def test_keras3_op_node_refused_by_name(tmp_path: Path, case: str) -> None:
    class_name, config, named = REFUSED_KERAS3[case]
    with pytest.raises(UnsupportedLayerError, match=named):
        converter.convert(keras3_model(tmp_path, class_name, [keras_tensor("x")], config))


def test_keras3_h5_subtract_layer_stays_a_merge_layer(tmp_path: Path) -> None:
    """In a Keras 3 .h5 (no `module`), the Subtract *layer* (called on a list) keeps its merge handler while
    the Subtract op (called on operands) is an op node."""
    merge = {"class_name": "Subtract", "config": {"name": "op", "trainable": True}, "name": "op"}
    model = functional([(input_layer("x", (4, 5)), []), (input_layer("y", (4, 5)), []), (merge, ["x", "y"])],
                       ["x", "y"], ["op"])
    path = save_legacy_h5(tmp_path / "merge.h5", model, {}, keras_version="3.15.1")
    (out,) = run_onnx(converter.convert(path), X, 2 * X)
    assert_close(out, -X)
