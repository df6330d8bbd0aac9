"""Folding BatchNormalization into the layer before it: BN nodes gone, numerics equal before and after."""

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
from converter.passes import cleanup, fold_batch_norm, layout

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
SPATIAL = {"data_format": "channels_last", "strides": [1, 1], "padding": "same", "dilation_rate": [1, 1]}


def _bn(name: str, axis: int = -1, center: bool = True, scale: bool = True) -> dict[str, Any]:
    return layer("BatchNormalization", name, axis=axis, momentum=0.99, epsilon=1e-3, center=center, scale=scale)


def _bn_weights(rng: np.random.Generator, c: int, center: bool = True, scale: bool = True) -> list[np.ndarray]:
    gamma, beta = rng.normal(size=c) + 1, rng.normal(size=c)
    mean, var = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)
    arrays = ([gamma] if scale else []) + ([beta] if center else []) + [mean, var]
    return [a.astype("float32") for a in arrays]


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.normal(size=shape) * 0.3).astype("float32")


# kind -> (layer config, its weights (rng -> list), input shape); 4 output channels each.
CASES: dict[str, Any] = {
    "Dense": (dict(units=4, activation="linear", use_bias=True),
              lambda r: [_normal(r, 6, 4), _normal(r, 4)], (6,)),
    "Dense_nobias": (dict(units=4, activation="linear", use_bias=False), lambda r: [_normal(r, 6, 4)], (6,)),
    "Conv2D": (dict(filters=4, kernel_size=[3, 3], groups=1, activation="linear", use_bias=True, **SPATIAL),
               lambda r: [_normal(r, 3, 3, 2, 4), _normal(r, 4)], (5, 5, 2)),
    "Conv2D_nobias": (dict(filters=4, kernel_size=[3, 3], groups=1, activation="linear", use_bias=False, **SPATIAL),
                      lambda r: [_normal(r, 3, 3, 2, 4)], (5, 5, 2)),
    "Conv1D": (dict(filters=4, kernel_size=[3], groups=1, activation="linear", use_bias=True,
                    data_format="channels_last", strides=[1], padding="valid", dilation_rate=[1]),
               lambda r: [_normal(r, 3, 2, 4), _normal(r, 4)], (7, 2)),
    "DepthwiseConv2D": (dict(kernel_size=[3, 3], depth_multiplier=2, activation="linear", use_bias=True, **SPATIAL),
                        lambda r: [_normal(r, 3, 3, 2, 2), _normal(r, 4)], (5, 5, 2)),
    "SeparableConv2D": (dict(filters=4, kernel_size=[3, 3], depth_multiplier=1, activation="linear", use_bias=True,
                             **SPATIAL),
                        lambda r: [_normal(r, 3, 3, 2, 1), _normal(r, 1, 1, 2, 4), _normal(r, 4)], (5, 5, 2)),
    "Conv2DTranspose": (dict(filters=4, kernel_size=[3, 3], output_padding=None, activation="linear", use_bias=True,
                             **{**SPATIAL, "strides": [2, 2]}),
                        lambda r: [_normal(r, 3, 3, 4, 2), _normal(r, 4)], (4, 4, 2)),
}


def _model(case: str, rng: np.random.Generator, **bn: Any) -> tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]:
    config, make_weights, shape = CASES[case]
    kind = case.split("_")[0]
    center, scale = bn.get("center", True), bn.get("scale", True)
    model = sequential([layer(kind, "layer", **config), _bn("bn", **bn)], shape)
    return model, {"layer": make_weights(rng), "bn": _bn_weights(rng, 4, center, scale)}, shape


def _graphs(path: Path) -> tuple[Graph, Graph]:
    before, after = converter.load(path, optimize=False), converter.load(path, optimize=False)
    before.artifact.close()
    after.artifact.close()
    return cleanup.run(before.graph), fold_batch_norm.run(cleanup.run(after.graph))


def _kinds(graph: Graph) -> Counter[str]:
    return Counter(n.kind for n in graph.nodes)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_batch_norm_folds_into_the_layer_before(tmp_path: Path, rng: np.random.Generator, fmt: str, case: str,
                                               batch: int) -> None:
    config, weights, shape = _model(case, rng)
    before, after = _graphs(SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights))
    assert _kinds(before)["BatchNormalization"] == 1
    assert _kinds(after)["BatchNormalization"] == 0
    ops = Counter(n.op_type for n in export(layout.run(after)).graph.node)
    assert ops["Mul"] == 0  # the BN's Mul (and Add) are gone
    x = rng.normal(size=(batch, *shape)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_fold_without_gamma_or_beta(tmp_path: Path, rng: np.random.Generator, center: bool, scale: bool) -> None:
    config, weights, shape = _model("Dense", rng, center=center, scale=scale)
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)["BatchNormalization"] == 0
    x = rng.normal(size=(3, *shape)).astype("float32")
    kernel, bias = weights["layer"]
    bn = dict(zip((["gamma"] if scale else []) + (["beta"] if center else []) + ["mean", "var"], weights["bn"]))
    y = (x @ kernel + bias - bn["mean"]) / np.sqrt(bn["var"] + 1e-3) * bn.get("gamma", 1.0) + bn.get("beta", 0.0)
    assert_close(run_onnx(export(after), x)[0], y.astype("float32"))


def test_channels_first_conv_folds_with_axis_1(tmp_path: Path, rng: np.random.Generator) -> None:
    conv = layer("Conv2D", "layer", filters=4, kernel_size=[3, 3], groups=1, activation="linear", use_bias=True,
                 **{**SPATIAL, "data_format": "channels_first"})
    config = sequential([conv, _bn("bn", axis=1)], (2, 5, 5))
    weights = {"layer": [_normal(rng, 3, 3, 2, 4), _normal(rng, 4)], "bn": _bn_weights(rng, 4)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)["BatchNormalization"] == 0
    x = rng.normal(size=(2, 2, 5, 5)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def _kept_cases(rng: np.random.Generator) -> dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]]:
    dense = CASES["Dense"][0]
    w = {"layer": [_normal(rng, 6, 4), _normal(rng, 4)], "bn": _bn_weights(rng, 4)}
    activated = sequential([layer("Dense", "layer", **{**dense, "activation": "relu"}), _bn("bn")], (6,))
    two_users = functional([(input_layer("x", (6,)), []), (layer("Dense", "layer", **dense), ["x"]),
                            (_bn("bn"), ["layer"]), (layer("Add", "add"), ["bn", "layer"])], ["x"], ["add"])
    conv = layer("Conv2D", "layer", filters=4, kernel_size=[3, 3], groups=1, activation="linear", use_bias=True,
                 **SPATIAL)
    other_axis = sequential([conv, _bn("bn", axis=1)], (4, 4, 2))
    w_axis = {"layer": [_normal(rng, 3, 3, 2, 4), _normal(rng, 4)], "bn": _bn_weights(rng, 4)}
    return {"activation": (activated, w, (6,)), "two_users": (two_users, w, (6,)),
            "other_axis": (other_axis, w_axis, (4, 4, 2))}


@pytest.mark.parametrize("case", ["activation", "two_users", "other_axis"])
def test_batch_norm_is_kept_when_folding_would_change_the_result(tmp_path: Path, rng: np.random.Generator,
                                                                 case: str) -> None:
    config, weights, shape = _kept_cases(rng)[case]
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)["BatchNormalization"] == 1
    x = rng.normal(size=(2, *shape)).astype("float32")
    assert_close(run_onnx(export(after), x)[0], run_onnx(export(before), x)[0])


def test_shared_layer_keeps_its_unfolded_weights_for_other_calls(tmp_path: Path, rng: np.random.Generator) -> None:
    """One Dense called twice, only the first call followed by BN: the second call is unchanged."""
    dense = CASES["Dense"][0]
    config = functional([(input_layer("a", (6,)), []), (input_layer("b", (6,)), []),
                         (layer("Dense", "layer", **dense), ["a"]), (_bn("bn"), ["layer"])],
                        ["a", "b"], ["bn"])
    config["config"]["layers"][2]["inbound_nodes"].append({"args": [
        {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                      "keras_history": ["b", 0, 0]}}], "kwargs": {}})
    config["config"]["output_layers"].append(["layer", 1, 0])
    weights = {"layer": [_normal(rng, 6, 4), _normal(rng, 4)], "bn": _bn_weights(rng, 4)}
    before, after = _graphs(save_keras(tmp_path / "m.keras", config, weights))
    assert _kinds(after)["BatchNormalization"] == 0
    a, b = rng.normal(size=(2, 6)).astype("float32"), rng.normal(size=(2, 6)).astype("float32")
    got, want = run_onnx(export(after), a, b), run_onnx(export(before), a, b)
    assert_close(got[0], want[0])
    assert_close(got[1], b @ weights["layer"][0] + weights["layer"][1])


@pytest.mark.parametrize("case", ["Conv2D", "Conv1D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense"])
def test_folded_kernel_is_laid_out_as_onnx_reads_it(tmp_path: Path, rng: np.random.Generator, case: str) -> None:
    """The scaled kernel keeps Keras' shape but ONNX's memory order: the handler's transpose is then a
    view, and the weights are traversed once. Its values are kernel x s exactly (one rounding)."""
    from converter.layers.batch_normalization import bn_scale_shift
    from converter.layers.conv import depthwise_axes, onnx_kernel_axes

    config, weights, _ = _model(case, rng)
    path = save_legacy_h5(tmp_path / "m.h5", config, weights)
    loaded = converter.load(path, optimize=False)
    bn = next(n for n in loaded.graph.nodes if n.kind == "BatchNormalization")
    scale = bn_scale_shift(bn)[0].astype(np.float32)
    key = {"DepthwiseConv2D": "depthwise_kernel", "SeparableConv2D": "pointwise_kernel"}.get(case, "kernel")
    original = next(n for n in loaded.graph.nodes if n.kind == case).weights[key]
    folded = next(n for n in fold_batch_norm.run(cleanup.run(loaded.graph)).nodes if n.kind == case).weights[key]
    loaded.artifact.close()
    if case == "DepthwiseConv2D":
        expected, axes = original * scale.reshape(original.shape[-2:]), depthwise_axes(4)
    elif case == "Conv2DTranspose":
        expected, axes = original * scale[:, None], onnx_kernel_axes(4)
    else:
        expected, axes = original * scale, tuple(range(2)) if case == "Dense" else onnx_kernel_axes(original.ndim)
    assert folded.shape == original.shape and np.array_equal(folded, expected)
    assert folded.transpose(axes).flags.c_contiguous


def test_foldable_layers_are_named_by_their_trait() -> None:
    """The pass knows no kind: each channel-wise linear handler carries `folds_batch_norm` and does the
    fold itself (FoldsChannelScale); BatchNormalization is not one of them."""
    from converter.layers.registry import LAYERS
    from converter.layers.traits import FoldsChannelScale

    foldable = {name for name in LAYERS.names() if LAYERS.get(name).folds_batch_norm}  # type: ignore[union-attr]
    assert foldable == {"Dense", *(f"Conv{r}D" for r in (1, 2, 3)), *(f"Conv{r}DTranspose" for r in (1, 2, 3)),
                        *(f"{k}Conv{r}D" for k in ("Separable", "Depthwise") for r in (1, 2))}
    assert all(isinstance(LAYERS.get(name), FoldsChannelScale) for name in foldable)
    assert "BatchNormalization" not in foldable and LAYERS.get("BatchNormalization").passes_mask  # type: ignore[union-attr]


@pytest.mark.parametrize(("shape", "axes"), [((3, 3, 40, 1100), (3, 2, 0, 1)), ((2, 3, 1030, 17), (2, 3, 0, 1)),
                                             ((1, 1, 2050, 33), (3, 2, 0, 1)), ((5, 700, 20), (2, 1, 0)),
                                             ((2, 2, 2, 9, 530), (4, 3, 0, 1, 2)), ((600, 18), (0, 1)),
                                             ((0, 7), (0, 1)), ((3, 3, 0, 4), (3, 2, 0, 1))])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_scaled_kernel_is_written_in_tiles_with_the_same_entries(rng: np.random.Generator, shape: tuple[int, ...],
                                                                 axes: tuple[int, ...], dtype: str) -> None:
    """The tiles cover every entry, past the last whole tile too: the result equals the one-pass product
    in value, dtype, Keras shape and ONNX memory order."""
    from converter.layers.channel_linear import scaled_in_order

    kernel = rng.normal(size=shape).astype(dtype)
    factor = rng.normal(size=shape[-1]).astype(np.float32)
    expected = np.multiply(kernel.transpose(axes), np.broadcast_to(factor, shape).transpose(axes), order="C")
    got = scaled_in_order(kernel, factor, axes)
    assert got.shape == shape and got.dtype == expected.dtype
    assert got.transpose(axes).flags.c_contiguous and np.array_equal(got.transpose(axes), expected)
