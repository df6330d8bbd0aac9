"""The unwrap pass: TimeDistributed and keras.layers.Pipeline become ordinary graph nodes that every
later pass sees (cleanup, BN folding, layout), with the same numbers as the wrapped layers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import input_layer, keras_tensor, layer, run_onnx, save_keras, sequential

import converter
from converter.errors import UsageError
from converter.export.onnx import export
from converter.ir import Graph
from converter.ir.internal import INTERNAL_TRANSPOSE
from converter.layers.registry import handler_for
from converter.layers.wrappers import INTERNAL_MERGE_BATCH_TIME, INTERNAL_SPLIT_BATCH_TIME
from converter.passes import masking, shape_inference, shape_semantics, unwrap

F = np.float32


def _td(inner: dict[str, Any], name: str) -> dict[str, Any]:
    return layer("TimeDistributed", name, layer=inner)


def _load(path: Path, optimize: bool = True) -> Graph:
    loaded = converter.load(path, optimize=optimize)
    loaded.artifact.close()
    return loaded.graph


def _kinds(graph: Graph) -> Counter[str]:
    return Counter(n.kind for n in graph.nodes)


def _bn_weights(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.uniform(0.5, 1.5, n).astype(F), rng.normal(size=n).astype(F), rng.normal(size=n).astype(F),
            rng.uniform(0.5, 1.5, n).astype(F)]


def _bn(x: np.ndarray, w: list[np.ndarray], eps: float = 1e-3) -> np.ndarray:
    gamma, beta, mean, var = w
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_time_distributed_conv_is_placed_by_the_layout_pass(tmp_path: Path, rng: np.random.Generator) -> None:
    """TimeDistributed(Conv2D) -> TimeDistributed(MaxPooling2D): one merge, the spatial nodes on the merged
    tensor switched to channels_first between the layout pass's Transposes, one split."""
    conv = layer("Conv2D", "conv", filters=4, kernel_size=[3, 3], activation="relu")
    config = sequential([_td(conv, "td"), _td(layer("MaxPooling2D", "mp", pool_size=[2, 2]), "td_mp")],
                        (3, 6, 6, 2))
    kernel, bias = rng.normal(size=(3, 3, 2, 4)).astype(F), rng.normal(size=4).astype(F)
    path = save_keras(tmp_path / "m.keras", config, {"td": {"layer": [kernel, bias]}})
    graph = _load(path)
    kinds = _kinds(graph)
    assert kinds["TimeDistributed"] == 0 and kinds["Conv2D"] == 1 and kinds["MaxPooling2D"] == 1
    assert kinds[INTERNAL_MERGE_BATCH_TIME] == 1 and kinds[INTERNAL_SPLIT_BATCH_TIME] == 1
    assert kinds[INTERNAL_TRANSPOSE] == 2  # into channels-first once, back once
    spatial = [n for n in graph.nodes if n.kind in ("Conv2D", "MaxPooling2D")]
    assert all(handler_for(n).is_channels_first(n) for n in spatial)  # type: ignore[union-attr]
    x = rng.normal(size=(2, 3, 6, 6, 2)).astype(F)
    (y,) = run_onnx(converter.convert(path), x)
    windows = np.lib.stride_tricks.sliding_window_view(x.reshape(-1, 6, 6, 2), (3, 3), axis=(1, 2))
    steps = np.maximum(np.einsum("nhwcij,ijcf->nhwf", windows, kernel) + bias, 0)
    assert_close(y, steps.reshape(-1, 2, 2, 2, 2, 4).max(axis=(2, 4)).reshape(2, 3, 2, 2, 4))


def test_pipeline_layers_are_cleaned_and_folded(tmp_path: Path, rng: np.random.Generator) -> None:
    """A Pipeline's Dropout is removed by cleanup, its BatchNormalization folds into the Dense before it."""
    config = sequential([layer("Pipeline", "pp", layers=[
        layer("Dense", "dense", units=3), layer("BatchNormalization", "batch_normalization", epsilon=1e-3),
        layer("Dropout", "dropout", rate=0.5), layer("Dense", "dense_1", units=2)])], (4,))
    w = {"dense": [rng.normal(size=(4, 3)).astype(F), rng.normal(size=3).astype(F)],
         "batch_normalization": _bn_weights(rng, 3),
         "dense_1": [rng.normal(size=(3, 2)).astype(F), rng.normal(size=2).astype(F)]}
    path = save_keras(tmp_path / "m.keras", config, {"pp": {f"layers/{k}": v for k, v in w.items()}})
    graph = _load(path)
    assert [(n.kind, n.name) for n in graph.nodes] == [("Dense", "pp/dense"), ("Dense", "pp/dense_1")]
    x = rng.normal(size=(3, 4)).astype(F)
    (y,) = run_onnx(converter.convert(path), x)
    hidden = _bn(x @ w["dense"][0] + w["dense"][1], w["batch_normalization"])
    assert_close(y, hidden @ w["dense_1"][0] + w["dense_1"][1])


def test_time_distributed_layers_in_a_row_share_one_merge(tmp_path: Path, rng: np.random.Generator) -> None:
    """A split feeding the next merge cancels; a time-distributed Dropout leaves nothing behind."""
    config = sequential([_td(layer("Dense", "d1", units=3, use_bias=False), "td1"),
                         _td(layer("Dropout", "dr", rate=0.5), "td_dr"),
                         _td(layer("Dense", "d2", units=2, use_bias=False), "td2")], (5, 4))
    k1, k2 = rng.normal(size=(4, 3)).astype(F), rng.normal(size=(3, 2)).astype(F)
    path = save_keras(tmp_path / "m.keras", config, {"td1": {"layer": [k1]}, "td2": {"layer": [k2]}})
    graph = _load(path)
    assert [n.kind for n in graph.nodes] == [INTERNAL_MERGE_BATCH_TIME, "Dense", "Dense", INTERNAL_SPLIT_BATCH_TIME]
    x = rng.normal(size=(2, 5, 4)).astype(F)
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x @ k1 @ k2)


def test_time_distributed_identity_disappears(tmp_path: Path, rng: np.random.Generator) -> None:
    config = sequential([_td(layer("Dropout", "dr", rate=0.5), "td"), layer("ReLU", "relu")], (5, 4))
    graph = _load(save_keras(tmp_path / "m.keras", config, {}))
    assert [n.kind for n in graph.nodes] == ["ReLU"]


def test_unwrap_keeps_the_mask_through_time_distributed(tmp_path: Path, rng: np.random.Generator) -> None:
    """Masking runs before the unwrap: it still walks back through the TimeDistributed to the Embedding."""
    config = sequential([layer("Embedding", "emb", input_dim=5, output_dim=3, mask_zero=True),
                         _td(layer("Dense", "dense", units=2), "td"),
                         layer("SimpleRNN", "rnn", units=2)], None)
    config["config"]["layers"].insert(0, input_layer("ids", (4,), "int32"))
    w = {"emb": [rng.normal(size=(5, 3)).astype(F)],
         "td": {"layer": [rng.normal(size=(3, 2)).astype(F), rng.normal(size=2).astype(F)]},
         "rnn": [rng.normal(size=(2, 2)).astype(F), rng.normal(size=(2, 2)).astype(F), np.zeros(2, F)]}
    graph = _load(save_keras(tmp_path / "m.keras", config, w))
    rnn = next(n for n in graph.nodes if n.kind == "SimpleRNN")
    assert rnn.call.has_tensor("mask") and "TimeDistributed" not in _kinds(graph)


def test_nested_wrappers_unwrap_completely(tmp_path: Path, rng: np.random.Generator) -> None:
    inner = layer("Pipeline", "pp", layers=[layer("Flatten", "flat"), layer("ReLU", "relu")])
    config = sequential([_td(inner, "td")], (3, 2, 2))
    path = save_keras(tmp_path / "m.keras", config, {})
    kinds = _kinds(_load(path))
    assert kinds["TimeDistributed"] == 0 and kinds["Pipeline"] == 0
    assert kinds["Flatten"] == 1 and kinds["ReLU"] == 1
    x = rng.normal(size=(2, 3, 2, 2)).astype(F)
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.maximum(x.reshape(2, 3, 4), 0))


def test_shared_time_distributed_calls_get_their_own_nodes(tmp_path: Path, rng: np.random.Generator) -> None:
    """Two calls of one TimeDistributed(Conv2D): each call's Conv2D is its own node (the layout pass switches
    each one), and the weights are stored once."""
    td = _td(layer("Conv2D", "conv", filters=2, kernel_size=[1, 1], use_bias=False), "td")
    td["inbound_nodes"] = [{"args": [keras_tensor("a")], "kwargs": {}}, {"args": [keras_tensor("b")], "kwargs": {}}]
    add = layer("Add", "add")
    add["inbound_nodes"] = [{"args": [[keras_tensor("td", 0), keras_tensor("td", 1)]], "kwargs": {}}]
    inputs = [{**input_layer(n, (2, 3, 3, 2)), "inbound_nodes": []} for n in ("a", "b")]
    config = {"class_name": "Functional", "config": {
        "name": "f", "layers": [*inputs, td, add], "input_layers": [["a", 0, 0], ["b", 0, 0]],
        "output_layers": [["add", 0, 0]]}}
    kernel = rng.normal(size=(1, 1, 2, 2)).astype(F)
    path = save_keras(tmp_path / "m.keras", config, {"td": {"layer": [kernel]}})
    convs = [n for n in _load(path).nodes if n.kind == "Conv2D"]
    assert len(convs) == 2 and convs[0] is not convs[1] and convs[0].attrs is not convs[1].attrs
    model = converter.convert(path)
    assert sum(1 for t in model.graph.initializer if t.name.endswith("kernel")) == 1
    a, b = (rng.normal(size=(2, 2, 3, 3, 2)).astype(F) for _ in range(2))
    (y,) = run_onnx(model, a, b)
    assert_close(y, (a + b) @ kernel[0, 0])


def test_unwrap_infers_the_same_shapes(tmp_path: Path, rng: np.random.Generator) -> None:
    """The unwrapped nodes end in the wrapper's own output tensor, with the shape the wrapper inferred."""
    config = sequential([_td(layer("Reshape", "r", target_shape=[-1]), "td")], (None, None, 3))
    graph = shape_inference.run(shape_semantics.run(_load(save_keras(tmp_path / "m.keras", config, {}),
                                                          optimize=False)))
    out = graph.outputs[0]
    before = out.shape
    graph = unwrap.run(masking.run(graph))
    assert graph.outputs[0] is out and out.shape == before and out.producer is graph.nodes[-1]
    split = graph.nodes[-1]
    assert split.kind == INTERNAL_SPLIT_BATCH_TIME and len(split.inputs) == 2  # sizes read at run time


def test_an_unoptimized_graph_lowers_wrappers_only_unwrapped(tmp_path: Path, rng: np.random.Generator) -> None:
    """Handlers emit one layout and a wrapper has no emission of its own: lowering a wrapper left whole
    (load(optimize=False)) is refused with what to run; once unwrapped the graph lowers."""
    conv = layer("Conv2D", "conv", filters=2, kernel_size=[1, 1], use_bias=False)
    config = sequential([_td(conv, "td")], (3, 2, 2, 2))
    kernel = rng.normal(size=(1, 1, 2, 2)).astype(F)
    graph = _load(save_keras(tmp_path / "m.keras", config, {"td": {"layer": [kernel]}}), optimize=False)
    assert [n.kind for n in graph.nodes] == ["TimeDistributed"]
    with pytest.raises(UsageError, match="still wrapped") as refused:
        export(graph)
    assert "unwrap.run" in (refused.value.hint or "")
    x = rng.normal(size=(2, 3, 2, 2, 2)).astype(F)
    (y,) = run_onnx(export(unwrap.run(graph)), x)
    assert_close(y, x @ kernel[0, 0])


def test_graphs_without_wrappers_are_untouched(tmp_path: Path) -> None:
    graph = _load(save_keras(tmp_path / "m.keras", sequential([layer("ReLU", "relu")], (4,)), {}), optimize=False)
    nodes = list(graph.nodes)
    assert unwrap.run(graph) is graph and graph.nodes == nodes
