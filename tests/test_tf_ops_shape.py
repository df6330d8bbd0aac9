"""Live cross-checks of the shape / indexing / joining / product tensor functions against Keras: tf.keras
op layers (`TFOpLambda` / `SlicingOpLambda`) saved by tf_keras, and Keras 3 op nodes, built at test time,
converted and matched against `model.predict` at rtol 1e-4 / atol 1e-5. Each model's config is checked to
hold every name of the function tables it covers (tests/test_ops_shape.py covers the spellings this
TensorFlow no longer writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_saved_model_matches

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

# Table names no TensorFlow of this venv writes: exercised by hand-made configs in test_ops_shape.py.
TF_OLD_SPELLINGS = {"transpose", "squeeze", "pad", "gather", "matmul", "compat.v1.expand_dims", "shape"}


def _shape_ops() -> tuple[set[str], set[str]]:
    from converter.layers import op_join, op_products, op_shape  # noqa: F401  (they fill the tables)
    from converter.layers.keras_op_nodes import KERAS_OPS
    from converter.layers.op_functions import TensorFunction
    from converter.layers.tf_op_layers import TF_FUNCTIONS, TF_SLICING

    mine = (op_shape.__name__, op_join.__name__, op_products.__name__, "converter.layers.op_getitem",
            "converter.layers.op_reshape")

    def ours(function: TensorFunction) -> bool:
        return type(function).__module__ in mine

    tf_names = {n for n, s in {**TF_FUNCTIONS, **TF_SLICING}.items() if ours(s.function)}
    return tf_names, {n for n, s in KERAS_OPS.items() if ours(s.function)}


def _called(model: Any) -> set[str]:
    layers = json.loads(model.to_json())["config"]["layers"]
    return {lay["config"]["function"] if "function" in lay["config"] else lay["class_name"] for lay in layers}


def _tf_keras_model(tf: Any, keras: Any, ellipsis: bool) -> Any:
    """tf_keras' .keras writer cannot serialise an ellipsis (`x[..., 0]`): only the .h5 model has one."""
    x, w = keras.Input((4, 6)), keras.Input((6, 3))
    ids = keras.Input((2,), dtype="int32")
    outs = [tf.reshape(x, [-1, 24]), tf.reshape(x, [-1, 2, 12]), tf.reshape(x, [tf.shape(x)[0], -1, 3]),
            tf.reshape(tf.transpose(x, [0, 2, 1]), tf.shape(x)), tf.reshape(x, [tf.shape(w)[0], 24]),
            tf.reshape(x, [-1, tf.shape(x)[2]]),
            tf.transpose(x, [0, 2, 1]),
            tf.compat.v1.transpose(x, perm=[2, 1, 0]), tf.expand_dims(x, 1), tf.expand_dims(x, -1),
            tf.squeeze(tf.expand_dims(x, 2), axis=2), tf.squeeze(x[:, :1], [1]), tf.identity(x),
            tf.tile(x, [1, 2, 3]), tf.broadcast_to(x[:1, :, :1], [1, 4, 6]),
            tf.reverse(x, [1, -1]), tf.pad(x, [[0, 0], [1, 2], [0, 1]]),
            tf.pad(x, [[0, 0], [1, 1], [2, 0]], mode="REFLECT"),
            tf.pad(x, [[0, 0], [1, 0], [0, 0]], constant_values=2.5),
            tf.slice(x, [0, 1, 2], [-1, 2, -1]), tf.slice(x, [0, 0, 1], [1, 4, 5]),
            x[:, 1:, ::2], x[..., 0] if ellipsis else x[:, :, 0], x[:, None, -1], x[:, ::-1],
            x[:, 1:-1:2, tf.newaxis], x[:, -2:, ::-3], x[0],
            tf.concat([x, x], axis=-1), tf.concat([x, x[:, :2]], 1), tf.stack([x, x], axis=1),
            tf.stack([x, x], axis=-1), tf.split(x, 2, axis=-1)[1],
            *tf.split(x, [2, -1, 1], axis=2), *tf.unstack(x, num=4, axis=1), tf.repeat(x, 2, axis=1),
            tf.repeat(x, [1, 2, 0, 1], axis=1), tf.repeat(x, 3, axis=-1), tf.gather(x, [0, 2], axis=1),
            tf.gather(x, [[0, 1], [3, 3]], axis=-1), tf.gather(x, ids, axis=2), tf.gather(x, 1, axis=1),
            tf.matmul(x, w), tf.linalg.matmul(x, x, transpose_b=True), x @ w,
            tf.matmul(x, np.arange(12, dtype="float32").reshape(6, 2) / 10),
            tf.matmul(w, x, transpose_a=True, adjoint_b=True)]
    return keras.Model([x, w, ids], outs)


def _inputs(rng: np.random.Generator) -> Any:
    return lambda n: [rng.normal(size=(n, 4, 6)).astype("float32"), rng.normal(size=(n, 6, 3)).astype("float32"),
                      rng.integers(0, 6, size=(n, 2)).astype("int32")]


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_tf_keras_op_layers(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    keras, tf = pytest.importorskip("tf_keras"), pytest.importorskip("tensorflow")
    model = _tf_keras_model(tf, keras, ellipsis=fmt == "h5")
    tf_names, _ = _shape_ops()
    assert tf_names - TF_OLD_SPELLINGS <= _called(model)
    assert_saved_model_matches(tmp_path, model, fmt, _inputs(np.random.default_rng(0)))


def _keras3_model(keras: Any) -> Any:
    ops = keras.ops
    x, w = keras.Input((4, 6)), keras.Input((6, 3))
    ids = keras.Input((2,), dtype="int32")
    outs = [ops.reshape(x, (-1, 24)), ops.ravel(x), ops.swapaxes(x, 1, 2), ops.moveaxis(x, 0, 2),
            ops.moveaxis(x, [1, 2], [2, 1]), ops.expand_dims(x, 1), ops.expand_dims(x, (0, -1)),
            ops.squeeze(ops.expand_dims(x, 2), axis=2), ops.squeeze(x[:, :1], axis=(1,)), ops.tile(x, (1, 2, 1)),
            ops.tile(x, (2, 1, 1, 2)), ops.tile(x, 2), ops.broadcast_to(x[:1, :, :1], (2, 4, 6)),
            ops.flip(x, axis=1), ops.flip(x), ops.pad(x, [[0, 0], [1, 2], [0, 1]]),
            ops.pad(x, [[0, 0], [1, 1], [0, 0]], mode="reflect"),
            ops.pad(x, [[0, 0], [1, 1], [1, 1]], constant_values=2.0),
            x[:, 1:, ::2], x[..., None, 0], x[:, -1], x[:, ::-1], x[1:, 1:-1:2, None], x[0],
            ops.concatenate([x, x], axis=-1), ops.concatenate([x, x[:, :1]], axis=1),
            ops.stack([x, x], axis=1), ops.split(x, 2, axis=-1)[1],
            *ops.split(x, [2, 5], axis=-1), *ops.unstack(x, num=4, axis=1), ops.repeat(x, 2, axis=1),
            ops.repeat(x, [1, 2, 0, 1], axis=1), ops.repeat(x, 2), ops.take(x, [0, 2], axis=1),
            ops.take(x, 1, axis=-1), ops.take(x, ids, axis=2), ops.take(x, [[3, 5]]),
            ops.matmul(x, w), ops.matmul(x, ops.transpose(x, (0, 2, 1))),
            ops.matmul(x, np.arange(12, dtype="float32").reshape(6, 2) / 10),
            ops.einsum("bij,bjk->bik", x, w), ops.einsum("bij->bji", x), ops.einsum("bij,bkj", x, x)]
    return keras.Model([x, w, ids], outs)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras3_op_nodes(tmp_path: Path, fmt: str) -> None:
    keras = pytest.importorskip("keras")
    model = _keras3_model(keras)
    _, keras_ops = _shape_ops()
    assert keras_ops <= _called(model)
    assert_saved_model_matches(tmp_path, model, fmt, _inputs(np.random.default_rng(1)))


def _conv_model(keras: Any, tf: Any | None) -> Any:
    """Op calls between convolutions: the layout pass runs the convolutions channels-first and must keep
    the Keras (channels-last) layout around every function that names axes."""
    L = keras.layers
    image = keras.Input((6, 5, 3))
    conv = L.Conv2D(4, 3, padding="same")(image)
    if tf is not None:
        joined = tf.concat([conv, tf.reverse(conv, [1])[:, :, :, :2]], axis=-1)
        moved = tf.transpose(tf.pad(joined, [[0, 0], [1, 0], [0, 1], [0, 0]]), [0, 2, 1, 3])
        flat = tf.reshape(tf.split(moved, [2, 4], axis=-1)[1], [-1, 7 * 6 * 4])
    else:
        ops = keras.ops
        joined = ops.concatenate([conv, ops.flip(conv, axis=1)[:, :, :, :2]], axis=-1)
        moved = ops.swapaxes(ops.pad(joined, [[0, 0], [1, 0], [0, 1], [0, 0]]), 1, 2)
        flat = ops.reshape(ops.split(moved, [2], axis=-1)[1], (-1, 7 * 6 * 4))
    out = L.Conv2D(2, 2)(moved)
    return keras.Model(image, [L.Dense(3)(flat), out])


@pytest.mark.parametrize("module, fmt", [("keras", "keras"), ("keras", "h5"), ("tf_keras", "h5")])
def test_op_calls_between_convolutions(tmp_path: Path, module: str, fmt: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if module == "tf_keras":
        monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    keras = pytest.importorskip(module)
    model = _conv_model(keras, pytest.importorskip("tensorflow") if module == "tf_keras" else None)
    rng = np.random.default_rng(4)
    for lay in model.layers:
        lay.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 for w in lay.get_weights()])
    assert_saved_model_matches(tmp_path, model, fmt, lambda n: [rng.normal(size=(n, 6, 5, 3)).astype("float32")])
