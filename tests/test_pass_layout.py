"""The layout pass: graph structure (where Transposes are) and numerics equal before and after it.

"Before" is the graph right after shape inference, emitted as is (channels_last spatial handlers
then transpose around themselves); "after" is the same graph through cleanup + layout.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.export.onnx import export
from converter.ir import Graph
from converter.ir.internal import INTERNAL_TRANSPOSE
from converter.passes import cleanup, layout
from converter.passes.layout import LayoutOptions

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _conv(name: str, filters: int, **extra: Any) -> dict[str, Any]:
    config = {"filters": filters, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
              "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "linear",
              "use_bias": True, **extra}
    return layer("Conv2D", name, **config)


def _conv_weights(rng: np.random.Generator, cin: int, cout: int) -> list[np.ndarray]:
    return [rng.normal(size=(3, 3, cin, cout)).astype("float32") * 0.3, rng.normal(size=cout).astype("float32")]


def _pool(name: str) -> dict[str, Any]:
    return layer("MaxPooling2D", name, pool_size=[2, 2], strides=[2, 2], padding="valid", data_format="channels_last")


def _residual(rng: np.random.Generator, head: list[tuple[dict[str, Any], list[str]]] | None = None,
              head_weights: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """x -> conv -> relu -> conv -> add(skip) -> relu -> pool [-> head]: a ResNet block."""
    body: list[tuple[dict[str, Any], list[str]]] = [
        (input_layer("image", (8, 8, 3)), []),
        (_conv("c1", 4), ["image"]),
        (layer("Activation", "r1", activation="relu"), ["c1"]),
        (_conv("c2", 4), ["r1"]),
        (layer("Add", "add"), ["c2", "r1"]),
        (layer("Activation", "r2", activation="relu"), ["add"]),
        (_pool("pool"), ["r2"]),
        *(head or []),
    ]
    out = body[-1][0]["config"]["name"]
    weights = {"c1": _conv_weights(rng, 3, 4), "c2": _conv_weights(rng, 4, 4), **(head_weights or {})}
    return functional(body, ["image"], [out]), weights, out


def _graphs(path: Path, options: LayoutOptions | None = None) -> tuple[Graph, Graph]:
    before = converter.load(path, optimize=False)
    after = converter.load(path, optimize=False)
    before.artifact.close()
    after.artifact.close()
    return before.graph, layout.run(cleanup.run(after.graph), options)


def _kinds(graph: Graph) -> Counter[str]:
    return Counter(n.kind for n in graph.nodes)


def _ops(graph: Graph) -> Counter[str]:
    return Counter(n.op_type for n in export(graph).graph.node)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_stack_pays_one_transpose_per_spatial_input_and_output(
        tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    config, weights, _ = _residual(rng)
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights))
    assert _kinds(after)[INTERNAL_TRANSPOSE] == 2
    assert all(n.spec.data_format == "channels_first" for n in after.nodes if n.kind in ("Conv2D", "MaxPooling2D"))
    assert _ops(after)["Transpose"] == 2
    x = rng.normal(size=(batch, 8, 8, 3)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


@pytest.mark.parametrize("nchw_inputs,nchw_outputs,transposes", [
    (True, True, 0), (True, False, 1), (False, True, 1), (False, False, 2)])
def test_nchw_io_options_remove_the_boundary_transposes(
        tmp_path: Path, rng: np.random.Generator, nchw_inputs: bool, nchw_outputs: bool, transposes: int) -> None:
    config, weights, _ = _residual(rng)
    options = LayoutOptions(nchw_inputs=nchw_inputs, nchw_outputs=nchw_outputs)
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights), options)
    assert _ops(after)["Transpose"] == transposes
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    expected = run_onnx(export(before), x)[0]
    got = run_onnx(export(after), x.transpose(0, 3, 1, 2) if nchw_inputs else x)[0]
    assert after.inputs[0].shape == (("batch", 3, 8, 8) if nchw_inputs else ("batch", 8, 8, 3))
    assert_close(got.transpose(0, 2, 3, 1) if nchw_outputs else got, expected)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("nchw_inputs", [False, True])
def test_flatten_dense_folds_the_permutation_into_the_kernel(
        tmp_path: Path, rng: np.random.Generator, fmt: str, nchw_inputs: bool) -> None:
    head = [(layer("Flatten", "flat", data_format="channels_last"), ["pool"]),
            (layer("Dense", "dense", units=5, activation="linear", use_bias=True), ["flat"])]
    head_weights = {"dense": [rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=5).astype("float32")]}
    config, weights, _ = _residual(rng, head, head_weights)
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights), LayoutOptions(nchw_inputs=nchw_inputs))
    assert _ops(after)["Transpose"] == (0 if nchw_inputs else 1)
    dense = next(n for n in after.nodes if n.kind == "Dense")
    assert not np.array_equal(dense.weights["kernel"], head_weights["dense"][0])  # rows permuted
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    got = run_onnx(export(after), x.transpose(0, 3, 1, 2) if nchw_inputs else x)[0]
    assert_close(got, run_onnx(export(before), x)[0])


def test_transposes_sink_through_merges_of_two_spatial_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    """Two image inputs, a conv on each, merged: one Transpose per input, one at the output, none between."""
    config = functional([
        (input_layer("a", (6, 6, 2)), []), (input_layer("b", (6, 6, 2)), []),
        (_conv("ca", 3), ["a"]), (_conv("cb", 3), ["b"]),
        (layer("Multiply", "mul"), ["ca", "cb"]),
        (layer("Activation", "act", activation="tanh"), ["mul"]),
        (layer("Subtract", "sub"), ["act", "ca"]),
    ], ["a", "b"], ["sub"])
    weights = {"ca": _conv_weights(rng, 2, 3), "cb": _conv_weights(rng, 2, 3)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _ops(after)["Transpose"] == 3
    a, b = (rng.normal(size=(2, 6, 6, 2)).astype("float32") for _ in range(2))
    assert_close(run_onnx(export(after), a, b)[0], run_onnx(export(before), a, b)[0])


def test_non_spatial_model_is_untouched_even_with_nchw_options(tmp_path: Path, rng: np.random.Generator) -> None:
    """Dense on a rank-3 sequence: no spatial layer, so no Transpose and the input keeps its layout."""
    config = sequential([layer("Dense", "d1", units=4, activation="relu", use_bias=True),
                         layer("Activation", "act", activation="sigmoid")], (5, 3))
    weights = {"d1": [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=4).astype("float32")]}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights),
                            LayoutOptions(nchw_inputs=True, nchw_outputs=True))
    assert _kinds(after)[INTERNAL_TRANSPOSE] == 0
    assert after.inputs[0].shape == ("batch", 5, 3)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_channels_first_keras_model_needs_no_transpose(tmp_path: Path, rng: np.random.Generator) -> None:
    config = sequential([_conv("c1", 4, data_format="channels_first"),
                         layer("Activation", "act", activation="relu"),
                         layer("MaxPooling2D", "pool", pool_size=[2, 2], strides=[2, 2], padding="valid",
                               data_format="channels_first")], (3, 8, 8))
    weights = {"c1": _conv_weights(rng, 3, 4)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _ops(after)["Transpose"] == 0
    x = rng.normal(size=(2, 3, 8, 8)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_rigid_layer_between_convs_gets_a_transpose_pair(tmp_path: Path, rng: np.random.Generator) -> None:
    """A Reshape sees Keras' layout: the pass puts the tensor back to channels_last for it, and the
    following conv takes it channels-first again (the only Transposes are the necessary ones)."""
    config = sequential([_conv("c1", 4), layer("Reshape", "rs", target_shape=[4, 8, 4]), _conv("c2", 2)], (8, 4, 8))
    weights = {"c1": _conv_weights(rng, 8, 4), "c2": _conv_weights(rng, 4, 2)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)[INTERNAL_TRANSPOSE] == 4
    x = rng.normal(size=(2, 8, 4, 8)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_full_pipeline_options_reach_the_layout_pass(tmp_path: Path, rng: np.random.Generator) -> None:
    from converter.passes import run_pipeline

    config, weights, _ = _residual(rng)
    loaded = converter.load(save_keras(tmp_path / "m.keras", config, weights), optimize=False)
    loaded.artifact.close()
    graph = run_pipeline(loaded.graph, LayoutOptions(nchw_inputs=True, nchw_outputs=True))
    assert _kinds(graph)[INTERNAL_TRANSPOSE] == 0
    assert graph.outputs[0].shape == ("batch", 4, 4, 4)


def _bn(name: str) -> dict[str, Any]:
    return layer("BatchNormalization", name, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True)


def _bn_weights(rng: np.random.Generator, c: int) -> list[np.ndarray]:
    return [(rng.normal(size=c) + 1).astype("float32"), rng.normal(size=c).astype("float32"),
            rng.normal(size=c).astype("float32"), rng.uniform(0.5, 2, size=c).astype("float32")]


@pytest.mark.parametrize("fmt", SAVERS)
def test_axis_layers_take_remapped_axes_instead_of_transposes(tmp_path: Path, rng: np.random.Generator,
                                                              fmt: str) -> None:
    """A DenseNet block: concat(-1) and a BN that follows no conv both run on the NCHW tensor."""
    config = functional([
        (input_layer("image", (6, 6, 3)), []),
        (_conv("c1", 4), ["image"]),
        (layer("Concatenate", "cat", axis=-1), ["image", "c1"]),
        (_bn("bn"), ["cat"]),
        (layer("Activation", "act", activation="relu"), ["bn"]),
        (_conv("c2", 2), ["act"]),
    ], ["image"], ["c2"])
    weights = {"c1": _conv_weights(rng, 3, 4), "bn": _bn_weights(rng, 7), "c2": _conv_weights(rng, 7, 2)}
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights))
    assert _ops(after)["Transpose"] == 2
    assert next(n for n in after.nodes if n.kind == "Concatenate").spec.axis == 1
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_squeeze_excite_reshape_produces_channels_first_directly(tmp_path: Path, rng: np.random.Generator) -> None:
    """GAP -> Reshape(1, 1, C) -> 1x1 conv -> multiply with the feature map: no Transpose inside."""
    pointwise = {"kernel_size": [1, 1], "activation": "sigmoid"}
    config = functional([
        (input_layer("image", (5, 5, 4)), []),
        (_conv("c1", 4), ["image"]),
        (layer("GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False), ["c1"]),
        (layer("Reshape", "rs", target_shape=[1, 1, 4]), ["gap"]),
        (_conv("se", 4, **pointwise), ["rs"]),
        (layer("Multiply", "mul"), ["c1", "se"]),
    ], ["image"], ["mul"])
    weights = {"c1": _conv_weights(rng, 4, 4),
               "se": [rng.normal(size=(1, 1, 4, 4)).astype("float32"), rng.normal(size=4).astype("float32")]}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _ops(after)["Transpose"] == 2
    assert _kinds(after)["Reshape"] == 0  # the pooling keeps its dims instead
    x = rng.normal(size=(3, 5, 5, 4)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_nested_concatenations_on_one_axis_are_spliced(tmp_path: Path, rng: np.random.Generator) -> None:
    """Inception's mixed blocks: concat(a, concat(b, c)) becomes one Concat of three inputs."""
    config = functional([
        (input_layer("image", (4, 4, 2)), []),
        (_conv("a", 3), ["image"]), (_conv("b", 2), ["image"]), (_conv("c", 1), ["image"]),
        (layer("Concatenate", "inner", axis=-1), ["b", "c"]),
        (layer("Concatenate", "outer", axis=3), ["a", "inner"]),
    ], ["image"], ["outer"])
    weights = {"a": _conv_weights(rng, 2, 3), "b": _conv_weights(rng, 2, 2), "c": _conv_weights(rng, 2, 1)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)["Concatenate"] == 1 and _ops(after)["Transpose"] == 2
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def _normalization_stem(adapted: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rescaling (per channel) -> Normalization -> Rescaling(1/255) -> conv: the top of EfficientNet-like apps."""
    norm = {"axis": -1, "invert": False}
    if not adapted:
        norm.update(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.16])
    body: list[tuple[dict[str, Any], list[str]]] = [
        (input_layer("image", (8, 8, 3)), []),
        (layer("Rescaling", "rgb", scale=[2.0, 0.5, 1.5], offset=[0.1, -0.2, 0.0]), ["image"]),
        (layer("Normalization", "norm", **norm), ["rgb"]),
        (layer("Rescaling", "unit", scale=1 / 255, offset=0.0), ["norm"]),
        (_conv("c1", 4), ["unit"]),
    ]
    rng = np.random.default_rng(5)
    weights: dict[str, Any] = {"c1": _conv_weights(rng, 3, 4)}
    if adapted:
        weights["norm"] = [np.array([0.4, 0.5, 0.6], "float32"), np.array([0.04, 0.09, 0.16], "float32"),
                           np.array(100, "int64")]
    return functional(body, ["image"], ["c1"]), weights


@pytest.mark.parametrize("adapted", [False, True])
@pytest.mark.parametrize("fmt", SAVERS)
def test_input_transpose_climbs_above_the_preprocessing_layers(tmp_path: Path, rng: np.random.Generator,
                                                                fmt: str, adapted: bool) -> None:
    """The Transpose the conv needs moves to the graph input; Rescaling and Normalization then broadcast
    their per-channel constants over channels-first planes (as (C, 1, 1)), and x * 1/255 needs no Add."""
    config, weights = _normalization_stem(adapted)
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights))
    model = export(after)
    first = model.graph.node[0]
    assert first.op_type == "Transpose" and first.input[0] == "image"
    assert _ops(after)["Transpose"] == 2  # the input's, and the conv output's back to Keras' layout
    assert [n.spec.axis for n in after.nodes if n.kind == "Normalization"] == [1]
    assert Counter(n.op_type for n in model.graph.node)["Add"] == 1  # only the per-channel offset's
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    reference = ((x * [2.0, 0.5, 1.5] + [0.1, -0.2, 0.0]) - [0.4, 0.5, 0.6]) / [0.2, 0.3, 0.4] / 255
    assert_close(run_onnx(export(before), x)[0], run_onnx(model, x)[0])
    kernel, bias = weights["c1"]
    padded = np.pad(reference, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = sum(padded[:, i:i + 8, j:j + 8, :] @ kernel[i, j] for i in range(3) for j in range(3)) + bias
    assert_close(run_onnx(model, x)[0], conv.astype("float32"))


def test_transpose_stays_below_a_merge_of_two_channels_last_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    """Climbing above a two-input node would take two Transposes where one does: it stays below."""
    body: list[tuple[dict[str, Any], list[str]]] = [
        (input_layer("a", (8, 8, 3)), []), (input_layer("b", (8, 8, 3)), []),
        (layer("Add", "add"), ["a", "b"]),
        (_conv("c1", 4), ["add"]),
    ]
    config = functional(body, ["a", "b"], ["c1"])
    _, after = _graphs(save_keras(tmp_path / "m.keras", config, {"c1": _conv_weights(rng, 3, 4)}))
    assert _ops(after)["Transpose"] == 2
    assert export(after).graph.node[0].op_type == "Add"
