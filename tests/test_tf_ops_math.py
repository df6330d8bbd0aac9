"""Live cross-checks of the math / activation / reduction tensor functions: one model per front end that
calls every name in kconvert's tables (tf.keras TFOpLambda functions, Keras 3 op classes), built with
tf_keras (saved .h5 and .keras) and Keras 3 (.keras and .h5), converted and matched against Keras' own
outputs at rtol 1e-4 / atol 1e-5, batch 1 and 3. The tables below must name every registered function of
the math modules (a registered name without a live check fails `test_every_*_name_is_exercised`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import keras_outputs
from kmodels import run_onnx

import converter
from converter.layers.keras_op_nodes import KERAS_OPS
from converter.layers.tf_op_layers import TF_FUNCTIONS

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

RTOL, ATOL = 1e-4, 1e-5
MATH_MODULES = {"converter.layers.op_math", "converter.layers.op_activations", "converter.layers.op_reductions",
                "converter.layers.op_elementwise", "converter.layers.op_special"}
# Inputs, shape (5, 6): x and y normal, p in [0.5, 2] (logs, roots), u in [-0.9, 0.9] (asin, atanh).
Calls = Callable[[Any, Any, Any, Any, Any], list[Any]]


def math_names(table: dict[str, Any]) -> set[str]:
    return {name for name, sig in table.items() if type(sig.function).__module__ in MATH_MODULES}


def tf_calls(tf: Any) -> dict[str, Calls]:
    """TensorFlow name as tf_keras writes it -> calls producing it (x, y, p, u are Keras tensors)."""
    m, nn = tf.math, tf.nn
    return {
        "__operators__.add": lambda x, y, p, u: [x + y, 1.0 + x, x + 2],
        "math.add": lambda x, y, p, u: [m.add(x, y)],
        "math.subtract": lambda x, y, p, u: [x - y, 1.5 - x],
        "math.multiply": lambda x, y, p, u: [x * y, x * 2.0],
        "math.truediv": lambda x, y, p, u: [x / p, 2.0 / p],
        "compat.v1.floor_div": lambda x, y, p, u: [(x * 4) // p, tf.cast(x * 9, "int32") // 4],
        "math.floormod": lambda x, y, p, u: [(x * 4) % p, x % -0.7, tf.cast(x * 9, "int32") % 4],
        "truncatediv": lambda x, y, p, u: [tf.truncatediv(tf.cast(x * 9, "int32"), 4)],
        "truncatemod": lambda x, y, p, u: [tf.truncatemod(x * 4, p)],
        "math.pow": lambda x, y, p, u: [p ** y, x ** 2.0],
        "math.maximum": lambda x, y, p, u: [m.maximum(x, y), m.maximum(x, 0.1)],
        "math.minimum": lambda x, y, p, u: [m.minimum(x, y)],
        "math.squared_difference": lambda x, y, p, u: [m.squared_difference(x, y)],
        "math.divide_no_nan": lambda x, y, p, u: [m.divide_no_nan(x, nn.relu(y))],
        "math.multiply_no_nan": lambda x, y, p, u: [m.multiply_no_nan(x, nn.relu(y))],
        "math.xlogy": lambda x, y, p, u: [m.xlogy(nn.relu(x), p)],
        "math.negative": lambda x, y, p, u: [-x],
        "math.abs": lambda x, y, p, u: [abs(x), m.abs(tf.cast(x * 9, "int32"))],
        "math.square": lambda x, y, p, u: [m.square(x)],
        "math.sqrt": lambda x, y, p, u: [m.sqrt(p)],
        "math.rsqrt": lambda x, y, p, u: [m.rsqrt(p)],
        "math.exp": lambda x, y, p, u: [m.exp(x)],
        "math.log": lambda x, y, p, u: [m.log(p)],
        "math.log1p": lambda x, y, p, u: [m.log1p(p)],
        "math.expm1": lambda x, y, p, u: [m.expm1(x)],
        "math.sign": lambda x, y, p, u: [m.sign(x)],
        "math.reciprocal": lambda x, y, p, u: [m.reciprocal(p)],
        "math.round": lambda x, y, p, u: [m.round(x * 3)],
        "math.rint": lambda x, y, p, u: [m.rint(x * 3)],
        "math.floor": lambda x, y, p, u: [m.floor(x * 3)],
        "math.ceil": lambda x, y, p, u: [m.ceil(x * 3)],
        "math.sin": lambda x, y, p, u: [m.sin(x)], "math.cos": lambda x, y, p, u: [m.cos(x)],
        "math.tan": lambda x, y, p, u: [m.tan(u)], "math.asin": lambda x, y, p, u: [m.asin(u)],
        "math.acos": lambda x, y, p, u: [m.acos(u)], "math.atan": lambda x, y, p, u: [m.atan(x)],
        "math.sinh": lambda x, y, p, u: [m.sinh(x)], "math.cosh": lambda x, y, p, u: [m.cosh(x)],
        "math.asinh": lambda x, y, p, u: [m.asinh(x)], "math.acosh": lambda x, y, p, u: [m.acosh(p + 1.0)],
        "math.atanh": lambda x, y, p, u: [m.atanh(u)], "math.tanh": lambda x, y, p, u: [tf.tanh(x)],
        "math.sigmoid": lambda x, y, p, u: [tf.sigmoid(x)], "math.erf": lambda x, y, p, u: [m.erf(x)],
        "math.erfc": lambda x, y, p, u: [m.erfc(x)],
        "math.is_nan": lambda x, y, p, u: [m.is_nan(m.log(x))],
        "math.is_inf": lambda x, y, p, u: [m.is_inf(x / nn.relu(y))],
        "math.is_finite": lambda x, y, p, u: [m.is_finite(m.log(x))],
        "math.equal": lambda x, y, p, u: [m.equal(m.round(x), m.round(y)), m.equal(m.round(x), 0.0)],
        "math.not_equal": lambda x, y, p, u: [m.not_equal(m.round(x), m.round(y))],
        "math.less": lambda x, y, p, u: [x < y, x < 0.2], "math.less_equal": lambda x, y, p, u: [x <= y],
        "math.greater": lambda x, y, p, u: [x > y], "math.greater_equal": lambda x, y, p, u: [x >= 0.0],
        "math.logical_and": lambda x, y, p, u: [(x > 0.0) & (y > 0.0)],
        "math.logical_or": lambda x, y, p, u: [(x > 0.0) | (y > 0.0)],
        "math.logical_not": lambda x, y, p, u: [~(x > 0.0)],
        "where": lambda x, y, p, u: [tf.where(x > y, x, y), tf.where(x > 0.0, x, 0.0)],
        "cast": lambda x, y, p, u: [tf.cast(x * 9, tf.int32), tf.cast(x * 1000, "float16"), tf.cast(x, "bool")],
        "clip_by_value": lambda x, y, p, u: [tf.clip_by_value(x, -0.5, 0.5)],
        "math.add_n": lambda x, y, p, u: [m.add_n([x, y, x])],
        "compat.v1.math.scalar_mul": lambda x, y, p, u: [m.scalar_mul(2.5, x)],
        "nn.relu": lambda x, y, p, u: [nn.relu(x)], "nn.relu6": lambda x, y, p, u: [nn.relu6(x * 5)],
        "nn.elu": lambda x, y, p, u: [nn.elu(x)], "nn.selu": lambda x, y, p, u: [nn.selu(x)],
        "nn.gelu": lambda x, y, p, u: [nn.gelu(x), nn.gelu(x, approximate=True)],
        "nn.silu": lambda x, y, p, u: [nn.silu(x), nn.swish(x), nn.silu(x, beta=0.5)],
        "math.softplus": lambda x, y, p, u: [nn.softplus(x * 3)], "nn.softsign": lambda x, y, p, u: [nn.softsign(x)],
        "nn.leaky_relu": lambda x, y, p, u: [nn.leaky_relu(x, alpha=0.3), nn.leaky_relu(x)],
        "nn.softmax": lambda x, y, p, u: [nn.softmax(x), nn.softmax(x, axis=1)],
        "nn.log_softmax": lambda x, y, p, u: [nn.log_softmax(x), m.log_softmax(x, axis=1)],
        "math.log_sigmoid": lambda x, y, p, u: [m.log_sigmoid(x * 3)],
        "nn.bias_add": lambda x, y, p, u: [nn.bias_add(x, np.linspace(-1, 1, 6, dtype="float32")),
                                           nn.bias_add(x, np.linspace(-1, 1, 5, dtype="float32"), "NCHW")],
        "math.reduce_sum": lambda x, y, p, u: [x - tf.reduce_sum(x), m.reduce_sum(x, axis=1),
                                               m.reduce_sum(x, axis=[1, 2], keepdims=True)],
        "math.reduce_mean": lambda x, y, p, u: [m.reduce_mean(x, axis=-1), m.reduce_mean(x, [1], keepdims=True)],
        "math.reduce_max": lambda x, y, p, u: [m.reduce_max(x, axis=1), m.reduce_max(x)],
        "math.reduce_min": lambda x, y, p, u: [m.reduce_min(x, axis=[2, 1])],
        "math.reduce_prod": lambda x, y, p, u: [m.reduce_prod(p, axis=-1, keepdims=True)],
        "math.reduce_any": lambda x, y, p, u: [m.reduce_any(x > 1.0, axis=1)],
        "math.reduce_all": lambda x, y, p, u: [m.reduce_all(x > -1.0, axis=[1, 2])],
        "math.reduce_std": lambda x, y, p, u: [m.reduce_std(x, axis=1)],
        "math.reduce_variance": lambda x, y, p, u: [m.reduce_variance(x, axis=[1, 2], keepdims=True)],
        "math.reduce_logsumexp": lambda x, y, p, u: [m.reduce_logsumexp(x * 5, axis=-1)],
        "math.reduce_euclidean_norm": lambda x, y, p, u: [m.reduce_euclidean_norm(x, axis=2)],
        "math.argmax": lambda x, y, p, u: [m.argmax(x, axis=2), m.argmax(x, axis=1, output_type="int32")],
        "math.argmin": lambda x, y, p, u: [m.argmin(x, axis=-1)],
        "math.l2_normalize": lambda x, y, p, u: [m.l2_normalize(x, axis=-1), nn.l2_normalize(x, axis=[1, 2])],
        "math.cumsum": lambda x, y, p, u: [m.cumsum(x, axis=1), m.cumsum(x, axis=2, exclusive=True, reverse=True)],
        "math.count_nonzero": lambda x, y, p, u: [m.count_nonzero(m.round(x), axis=1)],
        "math.atan2": lambda x, y, p, u: [m.atan2(x, y), m.atan2(u, -p)],
        "zeros_like": lambda x, y, p, u: [tf.zeros_like(x)],
        "ones_like": lambda x, y, p, u: [tf.ones_like(x, dtype="int32")],
        "compat.v1.where": lambda x, y, p, u: [tf.compat.v1.where(x > y, x, y)],
    }


def keras_calls(ops: Any) -> dict[str, Calls]:
    """Keras 3 op class -> keras.ops calls producing it."""
    return {
        "Subtract": lambda x, y, p, u: [x - y, 0.5 - x, ops.subtract(x, 2)],
        "TrueDivide": lambda x, y, p, u: [x / p, 3.0 / p, ops.true_divide(x, 4)],
        "Divide": lambda x, y, p, u: [ops.divide(x, p)],
        "FloorDivide": lambda x, y, p, u: [(x * 4) // p, ops.floor_divide(ops.cast(x * 9, "int32"), 4)],
        "Mod": lambda x, y, p, u: [(x * 4) % p, ops.mod(ops.cast(x * 9, "int32"), -4)],
        "Fmod": lambda x, y, p, u: [ops.fmod(x * 4, p)],
        "Power": lambda x, y, p, u: [p ** y, ops.power(x, 3)],
        "Logaddexp": lambda x, y, p, u: [ops.logaddexp(x * 30, y)],
        "Negative": lambda x, y, p, u: [-x], "Absolute": lambda x, y, p, u: [ops.abs(x)],
        "Square": lambda x, y, p, u: [ops.square(x)], "Sqrt": lambda x, y, p, u: [ops.sqrt(p)],
        "Rsqrt": lambda x, y, p, u: [ops.rsqrt(p)], "Exp": lambda x, y, p, u: [ops.exp(x)],
        "Log": lambda x, y, p, u: [ops.log(p)], "Log1p": lambda x, y, p, u: [ops.log1p(p)],
        "Expm1": lambda x, y, p, u: [ops.expm1(x)], "Sign": lambda x, y, p, u: [ops.sign(x)],
        "Reciprocal": lambda x, y, p, u: [ops.reciprocal(p)],
        "Round": lambda x, y, p, u: [ops.round(x * 3), ops.round(x, decimals=1)],
        "Floor": lambda x, y, p, u: [ops.floor(x * 3)], "Ceil": lambda x, y, p, u: [ops.ceil(x * 3)],
        "Trunc": lambda x, y, p, u: [ops.trunc(x * 3)],
        "Sin": lambda x, y, p, u: [ops.sin(x)], "Cos": lambda x, y, p, u: [ops.cos(x)],
        "Tan": lambda x, y, p, u: [ops.tan(u)], "Arcsin": lambda x, y, p, u: [ops.arcsin(u)],
        "Arccos": lambda x, y, p, u: [ops.arccos(u)], "Arctan": lambda x, y, p, u: [ops.arctan(x)],
        "Sinh": lambda x, y, p, u: [ops.sinh(x)], "Cosh": lambda x, y, p, u: [ops.cosh(x)],
        "Arcsinh": lambda x, y, p, u: [ops.arcsinh(x)], "Arccosh": lambda x, y, p, u: [ops.arccosh(p + 1.0)],
        "Arctanh": lambda x, y, p, u: [ops.arctanh(u)], "Tanh": lambda x, y, p, u: [ops.tanh(x)],
        "Erf": lambda x, y, p, u: [ops.erf(x)],
        "Log2": lambda x, y, p, u: [ops.log2(p)], "Log10": lambda x, y, p, u: [ops.log10(p)],
        "Exp2": lambda x, y, p, u: [ops.exp2(x)],
        "Isnan": lambda x, y, p, u: [ops.isnan(ops.log(x))],
        "Isinf": lambda x, y, p, u: [ops.isinf(x / ops.relu(y))],
        "Isfinite": lambda x, y, p, u: [ops.isfinite(ops.log(x))],
        "Equal": lambda x, y, p, u: [ops.equal(ops.round(x), ops.round(y))],
        "Less": lambda x, y, p, u: [x < y], "LessEqual": lambda x, y, p, u: [x <= 0.1],
        "Greater": lambda x, y, p, u: [x > y], "GreaterEqual": lambda x, y, p, u: [ops.greater_equal(x, y)],
        "LogicalAnd": lambda x, y, p, u: [ops.logical_and(x > 0, y > 0)],
        "LogicalOr": lambda x, y, p, u: [ops.logical_or(x > 0, y > 0)],
        "LogicalXor": lambda x, y, p, u: [ops.logical_xor(x > 0, y > 0)],
        "LogicalNot": lambda x, y, p, u: [ops.logical_not(x > 0)],
        "Where": lambda x, y, p, u: [ops.where(x > y, x, y), ops.where(x > 0, x, 0.0), ops.where(x > 0, 1.5, y)],
        "Cast": lambda x, y, p, u: [ops.cast(x * 9, "int32"), ops.cast(x * 1000, "float16"), ops.cast(x, "bool")],
        "Clip": lambda x, y, p, u: [ops.clip(x, -0.5, 0.5)],
        "Relu": lambda x, y, p, u: [ops.relu(x)], "Relu6": lambda x, y, p, u: [ops.relu6(x * 5)],
        "Sigmoid": lambda x, y, p, u: [ops.sigmoid(x)], "Silu": lambda x, y, p, u: [ops.silu(x), ops.swish(x)],
        "Gelu": lambda x, y, p, u: [ops.gelu(x), ops.gelu(x, approximate=False)],
        "Softmax": lambda x, y, p, u: [ops.softmax(x), ops.softmax(x, axis=1)],
        "LogSoftmax": lambda x, y, p, u: [ops.log_softmax(x, axis=-2)],
        "Elu": lambda x, y, p, u: [ops.elu(x, alpha=0.5)], "Selu": lambda x, y, p, u: [ops.selu(x)],
        "LeakyRelu": lambda x, y, p, u: [ops.leaky_relu(x, negative_slope=0.1)],
        "HardSigmoid": lambda x, y, p, u: [ops.hard_sigmoid(x * 4)],
        "HardSilu": lambda x, y, p, u: [ops.hard_silu(x * 4), ops.hard_swish(x)],
        "Softplus": lambda x, y, p, u: [ops.softplus(x * 3)], "Softsign": lambda x, y, p, u: [ops.softsign(x)],
        "LogSigmoid": lambda x, y, p, u: [ops.log_sigmoid(x * 3)], "Celu": lambda x, y, p, u: [ops.celu(x, 0.7)],
        "Glu": lambda x, y, p, u: [ops.glu(x)],
        "HardTanh": lambda x, y, p, u: [ops.hard_tanh(x * 2)],
        "SoftShrink": lambda x, y, p, u: [ops.soft_shrink(x, 0.3)],
        "HardShrink": lambda x, y, p, u: [ops.hard_shrink(x)], "TanhShrink": lambda x, y, p, u: [ops.tanh_shrink(x)],
        "Squareplus": lambda x, y, p, u: [ops.squareplus(x, 2)],
        "SparsePlus": lambda x, y, p, u: [ops.sparse_plus(x * 2)],
        "Threshold": lambda x, y, p, u: [ops.threshold(x, 0.2, -1.0)],
        "Sum": lambda x, y, p, u: [x - ops.sum(x), ops.sum(x, axis=1, keepdims=True)],
        "Mean": lambda x, y, p, u: [ops.mean(x, axis=(1, 2)), ops.mean(x, axis=-1, keepdims=True)],
        "Max": lambda x, y, p, u: [ops.max(x, axis=1)], "Min": lambda x, y, p, u: [ops.min(x, axis=[1, 2])],
        "Amax": lambda x, y, p, u: [ops.amax(x, axis=2)], "Amin": lambda x, y, p, u: [ops.amin(x, axis=1)],
        "Prod": lambda x, y, p, u: [ops.prod(p, axis=-1)],
        "All": lambda x, y, p, u: [ops.all(x > -1.0, axis=1)],
        "Argmax": lambda x, y, p, u: [ops.argmax(x, axis=1)],
        "Argmin": lambda x, y, p, u: [ops.argmin(x, axis=-1, keepdims=True)],
        "Std": lambda x, y, p, u: [ops.std(x, axis=1)], "Var": lambda x, y, p, u: [ops.var(x, axis=[1, 2])],
        "Logsumexp": lambda x, y, p, u: [ops.logsumexp(x * 5, axis=1)],
        "Average": lambda x, y, p, u: [ops.average(x, axis=1)],
        "Normalize": lambda x, y, p, u: [ops.normalize(x, axis=-1)],
        "Cumsum": lambda x, y, p, u: [ops.cumsum(x, axis=1)],
        "CountNonzero": lambda x, y, p, u: [ops.count_nonzero(ops.round(x), axis=1)],
        "Arctan2": lambda x, y, p, u: [ops.arctan2(x, y)], "Hypot": lambda x, y, p, u: [ops.hypot(x, y)],
        "Heaviside": lambda x, y, p, u: [ops.heaviside(ops.round(x), y)],
        "NanToNum": lambda x, y, p, u: [ops.nan_to_num(ops.log(x)), ops.nan_to_num(x / ops.relu(y), posinf=5.0)],
        "Cbrt": lambda x, y, p, u: [ops.cbrt(x)], "ZerosLike": lambda x, y, p, u: [ops.zeros_like(x)],
        "OnesLike": lambda x, y, p, u: [ops.ones_like(x, dtype="int32")],
        "FullLike": lambda x, y, p, u: [ops.full_like(x, 2.5)],
    }


def _inputs(batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    shape = (batch, 5, 6)
    return [rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32"),
            rng.uniform(0.5, 2.0, size=shape).astype("float32"), rng.uniform(-0.9, 0.9, size=shape).astype("float32")]


def build(keras: Any, calls: dict[str, Calls]) -> tuple[Any, list[str]]:
    """One model calling every function; returns it and each output's function name."""
    tensors = [keras.Input((5, 6)) for _ in range(4)]
    outputs, names = [], []
    for name, call in calls.items():
        for out in call(*tensors):
            outputs.append(out)
            names.append(name)
    return keras.Model(tensors, outputs), names


def assert_matches(tmp_path: Path, model: Any, names: list[str], fmt: str, opset: int | None = None) -> float:
    """Save, convert, compare at batch 1 and 3; the largest absolute error."""
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    onnx_model = converter.convert(path, opset=opset)
    rng, worst = np.random.default_rng(0), 0.0
    for batch in (1, 3):
        xs = _inputs(batch, rng)
        expected, got = keras_outputs(model, xs), run_onnx(onnx_model, *xs)
        assert len(got) == len(expected)
        for name, actual, want in zip(names, got, expected):
            want = np.asarray(want)
            assert actual.shape == want.shape, f"{name}: shape {actual.shape} != {want.shape}"
            assert actual.dtype == want.dtype or want.dtype.kind == actual.dtype.kind == "f", \
                f"{name}: dtype {actual.dtype} != {want.dtype}"
            a, w = actual.astype("float64"), want.astype("float64")
            np.testing.assert_allclose(a, w, rtol=RTOL, atol=ATOL, err_msg=name)
            finite = np.isfinite(w)
            worst = max(worst, float(np.abs(a - w)[finite].max(initial=0.0)))
    return worst


@pytest.fixture
def tf_keras(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    return pytest.importorskip("tf_keras")


def test_every_tf_name_is_exercised() -> None:
    tf = pytest.importorskip("tensorflow")
    assert set(tf_calls(tf)) == math_names(TF_FUNCTIONS)


def test_every_keras_op_class_is_exercised() -> None:
    keras = pytest.importorskip("keras")
    assert set(keras_calls(keras.ops)) == math_names(KERAS_OPS)


# The default opset, and opset 13 (the oldest kconvert writes: reduce axes as attributes, no HardSwish).
@pytest.mark.parametrize("fmt, opset", [("h5", None), ("keras", None), ("h5", 13)])
def test_tf_keras_op_layers_match(tmp_path: Path, tf_keras: Any, fmt: str, opset: int | None) -> None:
    import tensorflow as tf

    model, names = build(tf_keras, tf_calls(tf))
    written = {layer.get_config().get("function") for layer in model.layers}
    assert math_names(TF_FUNCTIONS) <= written, "tf_keras writes another name than the table's"
    assert_matches(tmp_path, model, names, fmt, opset)


@pytest.mark.parametrize("fmt, opset", [("keras", None), ("h5", None), ("keras", 13)])
def test_keras3_op_nodes_match(tmp_path: Path, fmt: str, opset: int | None) -> None:
    keras = pytest.importorskip("keras")
    model, names = build(keras, keras_calls(keras.ops))
    written = {type(op).__name__ for op in model.operations}
    assert math_names(KERAS_OPS) <= written, "Keras 3 writes another class than the table's"
    assert_matches(tmp_path, model, names, fmt, opset)
