"""Folding ZeroPadding into the MaxPooling after it: the Pad node goes only where a padded zero can
never be a window's maximum, and the numbers are equal before and after."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.export.onnx import export
from converter.ir import Graph
from converter.passes import cleanup, fold_padding, layout

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _stem(producer: dict[str, Any], padding: Any = 1, pool_size: int = 3, pool_padding: str = "valid",
          rank: int = 2) -> dict[str, Any]:
    """producer -> ZeroPadding -> MaxPooling, as ResNet's and DenseNet's stems."""
    spatial = (9,) * rank
    pool = layer(f"MaxPooling{rank}D", "pool", pool_size=[pool_size] * rank, strides=[2] * rank, padding=pool_padding,
                 data_format="channels_last")
    return sequential([producer, layer(f"ZeroPadding{rank}D", "pad", padding=padding, data_format="channels_last"),
                       pool], (*spatial, 3))


def _graphs(path: Path) -> tuple[Graph, Graph]:
    before, after = converter.load(path, optimize=False), converter.load(path, optimize=False)
    before.artifact.close()
    after.artifact.close()
    return layout.run(cleanup.run(before.graph)), layout.run(fold_padding.run(cleanup.run(after.graph)))


def _pads(graph: Graph) -> int:
    return Counter(n.op_type for n in export(graph).graph.node)["Pad"]


RELU = layer("Activation", "relu", activation="relu")


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize(("producer", "padding", "rank"), [
    (RELU, 1, 2),
    (RELU, [[0, 1], [1, 2]], 2),  # asymmetric, each side below the pool size
    (layer("ReLU", "relu", max_value=6.0, negative_slope=0.0, threshold=0.0), 1, 2),
    (layer("Activation", "sig", activation="sigmoid"), 2, 2),
    (RELU, 1, 1),
    (RELU, [1, 0, 2], 3),
])
def test_zero_padding_after_a_relu_folds_into_the_max_pool(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                          producer: dict[str, Any], padding: Any, rank: int) -> None:
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", _stem(producer, padding, rank=rank), {}))
    assert _pads(before) == 1 and _pads(after) == 0
    assert not any(n.kind.startswith("ZeroPadding") for n in after.nodes)
    x = rng.normal(size=(2, *(9,) * rank, 3)).astype("float32")  # half negative: only the relu makes it >= 0
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0], rtol=0, atol=0)


@pytest.mark.parametrize(("producer", "padding", "pool_size", "pool_padding"), [
    (layer("Activation", "lin", activation="linear"), 1, 3, "valid"),  # negatives: a zero can be the max
    (layer("Activation", "tanh", activation="tanh"), 1, 3, "valid"),
    (layer("ReLU", "leaky", negative_slope=0.1, threshold=0.0), 1, 3, "valid"),
    (RELU, 3, 3, "valid"),  # a window of padding alone would be 0, not -inf
    (RELU, 1, 3, "same"),
])
def test_padding_stays_where_folding_could_change_the_result(tmp_path: Path, rng: np.random.Generator,
                                                             producer: dict[str, Any], padding: int, pool_size: int,
                                                             pool_padding: str) -> None:
    config = _stem(producer, padding, pool_size, pool_padding)
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, {}))
    assert _pads(after) == 1
    x = rng.normal(size=(2, 9, 9, 3)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0], rtol=0, atol=0)
    if pool_padding == "valid":  # and the whole pipeline agrees with numpy
        act = {"lin": x, "tanh": np.tanh(x), "leaky": np.where(x > 0, x, 0.1 * x), "relu": np.maximum(x, 0)}
        padded = np.pad(act[producer["config"]["name"]], ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        out = (padded.shape[1] - pool_size) // 2 + 1
        want = np.stack([np.stack([padded[:, 2 * i:2 * i + pool_size, 2 * j:2 * j + pool_size].max(axis=(1, 2))
                                   for j in range(out)], 1) for i in range(out)], 1)
        assert_close(run_onnx(converter.convert(tmp_path / "m.keras"), x)[0], want)


def test_padding_that_feeds_two_layers_stays(tmp_path: Path) -> None:
    from kmodels import functional, input_layer

    body = [(input_layer("x", (9, 9, 3)), []), (RELU, ["x"]),
            (layer("ZeroPadding2D", "pad", padding=1, data_format="channels_last"), ["relu"]),
            (layer("MaxPooling2D", "pool", pool_size=[3, 3], strides=[2, 2], padding="valid",
                   data_format="channels_last"), ["pad"]),
            (layer("Activation", "other", activation="linear"), ["pad"])]
    config = functional(body, ["x"], ["pool", "other"])
    _, after = _graphs(save_keras(tmp_path / "m.keras", config, {}))
    assert _pads(after) == 1
