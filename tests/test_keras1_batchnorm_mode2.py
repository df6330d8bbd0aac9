"""Keras 1 BatchNormalization(mode=2): the batch's own statistics at inference, against a numpy reference of
Keras 1.2.2's `K.normalize_batch_in_training` (no Keras 1 to run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from k1models import k1layer, k1sequential, save_keras1_h5
from kmodels import layer, run_onnx, save_keras, sequential

import converter
from converter.errors import UnsupportedLayerError

EPSILON = 1e-3


def keras1_mode2(x: np.ndarray, axis: int, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """tf.nn.moments over every axis but `axis` (biased variance), then tf.nn.batch_normalization."""
    axis = axis % x.ndim
    reduced = tuple(a for a in range(x.ndim) if a != axis)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=reduced, keepdims=True), x64.var(axis=reduced, keepdims=True)
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x64 - mean) / np.sqrt(var + EPSILON) * gamma.reshape(shape) + beta.reshape(shape)


def _bn_weights(rng: np.random.Generator, n: int) -> list[tuple[str, np.ndarray]]:
    """gamma, beta, then running statistics that mode=2 must ignore (far from the batch's)."""
    gamma, beta = rng.normal(size=n).astype("float32"), rng.normal(size=n).astype("float32")
    return [("gamma", gamma), ("beta", beta), ("running_mean", np.full(n, 5.0, "float32")),
            ("running_std", np.full(n, 9.0, "float32"))]


def _bn(sample: tuple[int, ...], axis: int) -> dict[str, Any]:
    return k1layer("BatchNormalization", "bn_1", mode=2, axis=axis, epsilon=EPSILON, momentum=0.99,
                   batch_input_shape=[None, *sample])


CASES = [((4,), -1), ((3, 4, 5), 1), ((6, 3), -1), ((6, 3), 1), ((2, 3, 4, 2), -1)]


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("sample, axis", CASES, ids=[f"{s}-axis{a}" for s, a in CASES])
def test_mode2_matches_the_batch_statistics(tmp_path: Path, rng: np.random.Generator, batch: int,
                                            sample: tuple[int, ...], axis: int) -> None:
    weights = _bn_weights(rng, sample[axis - 1 if axis > 0 else axis])
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([_bn(sample, axis)]), {"bn_1": weights})
    x = (rng.normal(size=(batch, *sample)) * 3 + 1).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, keras1_mode2(x, axis, weights[0][1], weights[1][1]).astype("float32"))


def test_output_depends_on_the_rest_of_the_batch(tmp_path: Path, rng: np.random.Generator) -> None:
    """As in Keras 1: the same sample gives other outputs in another batch (and a 2D batch of one gives beta)."""
    weights = _bn_weights(rng, 4)
    model = converter.convert(save_keras1_h5(tmp_path / "m.h5", k1sequential([_bn((4,), -1)]), {"bn_1": weights}))
    x = rng.normal(size=(3, 4)).astype("float32")
    (alone,), (together,) = run_onnx(model, x[:1]), run_onnx(model, x)
    assert_close(alone[0], weights[1][1])
    assert not np.allclose(alone[0], together[0])


def test_not_folded_into_the_dense_before_it(tmp_path: Path, rng: np.random.Generator) -> None:
    """BN folding would bake statistics into the Dense: mode=2 has none to fold."""
    w, b = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    dense = k1layer("Dense", "dense_1", output_dim=4, input_dim=3, batch_input_shape=[None, 3])
    bn = k1layer("BatchNormalization", "bn_1", mode=2, axis=-1, epsilon=EPSILON)
    weights = _bn_weights(rng, 4)
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([dense, bn]),
                          {"dense_1": [("W", w), ("b", b)], "bn_1": weights})
    model = converter.convert(path)
    assert {"ReduceMean"} <= {n.op_type for n in model.graph.node}
    x = rng.normal(size=(4, 3)).astype("float32")
    (y,) = run_onnx(model, x)
    assert_close(y, keras1_mode2(x @ w + b, -1, weights[0][1], weights[1][1]).astype("float32"))


def test_model_json_with_weights(tmp_path: Path, rng: np.random.Generator) -> None:
    config = k1sequential([_bn((3, 4, 5), 1)])
    weights = _bn_weights(rng, 3)
    full = save_keras1_h5(tmp_path / "full.h5", config, {"bn_1": weights})
    (tmp_path / "model.json").write_text(json.dumps(config))
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(tmp_path / "model.json", weights=full), x)
    assert_close(y, keras1_mode2(x, 1, weights[0][1], weights[1][1]).astype("float32"))


def test_mode_outside_keras1_files_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    ones = np.ones(4, "float32")
    path = save_keras(tmp_path / "m.keras", sequential([layer("BatchNormalization", "bn", mode=2)], (4,)),
                      {"bn": [ones, ones, ones, ones]})
    with pytest.raises(UnsupportedLayerError, match=r"'bn'.*mode=2 in a Keras 3 file"):
        converter.convert(path)


def test_keras3_archive_refuses_mode2(tmp_path: Path, rng: np.random.Generator) -> None:
    """A Keras 3 BatchNormalization has no batch-statistics inference: writing one would change the model."""
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([_bn((4,), -1)]), {"bn_1": _bn_weights(rng, 4)})
    with pytest.raises(UnsupportedLayerError, match=r"'bn_1'.*mode=2"):
        converter.save_keras(path, tmp_path / "out.keras")
