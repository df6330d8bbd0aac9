"""The public extension API: handlers for custom classes and for single Lambda layers by name."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError, UsageError
from converter.extensions import (
    register_lambda,
    register_layer,
    unregister_lambda,
    unregister_layer,
)
from converter.ir import Node
from converter.layers import LAYERS, LayerHandler, OpBuilder

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
# Stored Lambda code that no decoder accepts: converting must never look at it.
GARBAGE = "\x00\xff not base64, not marshal \x01"


# Each test starts and ends without user registrations (conftest.clean_extension_registrations).
pytestmark = pytest.mark.usefixtures("clean_extension_registrations")


def _lambda(name: str, fmt: str) -> dict[str, Any]:
    if fmt == "keras":  # Keras 3 spelling
        return layer("Lambda", name, function={"class_name": "__lambda__", "config": {"code": GARBAGE}},
                     arguments={})
    return layer("Lambda", name, function=[GARBAGE, None, None], function_type="lambda", module="__main__",
                 output_shape=None, output_shape_type="raw", arguments={})


def _normalize(b: OpBuilder, inputs: list[str], node: Node) -> str:
    return b.op("Sub", b.op("Div", inputs[0], b.scalar(127.5)), b.scalar(1.0))


@pytest.fixture
def no_code_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding the stored code would go through base64 first (marshal cannot be patched: imports use it)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("kconvert tried to decode a Lambda's code")

    for name in ("b64decode", "decodebytes", "standard_b64decode", "urlsafe_b64decode"):
        monkeypatch.setattr(base64, name, refuse)


def test_converter_has_no_code_loading_calls() -> None:
    """Nothing under converter/ can turn stored bytes into code: no marshal, pickle, eval or exec."""
    root = Path(converter.__file__).parent
    banned = re.compile(r"^\s*(import|from)\s+(marshal|pickle|dill|cloudpickle)\b|\b(marshal|pickle)\.|"
                        r"(?<![.\w])(eval|exec|compile)\(")
    offenders = [f"{path.relative_to(root)}:{i}" for path in sorted(root.rglob("*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if banned.search(line.split("#")[0])]
    assert offenders == []


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_registered_lambda_converts_without_touching_its_code(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                              batch: int, no_code_decoding: None) -> None:
    register_lambda("normalize")(_normalize)
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([_lambda("normalize", fmt)], (4, 2)), {})
    x = rng.uniform(0, 255, size=(batch, 4, 2)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x / 127.5 - 1)
    (node,) = converter.load(path).graph.nodes
    function = node.attrs["function"]
    assert (function["config"]["code"] if fmt == "keras" else function[0]) == GARBAGE


def test_unregistered_lambdas_and_custom_layers_fail_together(tmp_path: Path) -> None:
    register_lambda("normalize", _normalize)
    config = sequential([_lambda("normalize", "keras"), _lambda("other", "keras"), layer("MyScale", "scale")], (3,))
    with pytest.raises(UnsupportedLayerError) as err:
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))
    assert "2 layer(s) cannot be converted" in err.value.message
    assert "'other' (Lambda)" in err.value.message and "'scale' (MyScale)" in err.value.message
    assert "'normalize'" not in err.value.message


@pytest.mark.parametrize("fmt", SAVERS)
def test_custom_class_with_weights(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    @register_layer("MyScale", weights=("gamma", "beta"))
    def scale(b: OpBuilder, inputs: list[str], node: Node) -> str:
        return b.op("Add", b.op("Mul", inputs[0], b.weight("gamma")), b.weight("beta"))

    gamma, beta = rng.normal(size=3).astype("float32"), rng.normal(size=3).astype("float32")
    custom = {**layer("MyScale", "scale"), "registered_name": "Custom>MyScale"}
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([custom], (3,)), {"scale": [gamma, beta]})
    x = rng.normal(size=(2, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x * gamma + beta)


def test_output_shape_callable_feeds_shape_inference(tmp_path: Path, rng: np.random.Generator) -> None:
    register_lambda("pool", lambda b, xs, node: b.reduce("ReduceMean", xs[0], [1], keepdims=False),
                    output_shape=lambda shapes, node: (shapes[0][0], shapes[0][2]))
    kernel = rng.normal(size=(4, 2)).astype("float32")
    config = sequential([_lambda("pool", "keras"), layer("Dense", "dense", units=2, use_bias=False)], (5, 4))
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {"dense": [kernel]})), x)
    assert_close(y, x.mean(axis=1) @ kernel)


def test_lambda_name_wins_over_a_lambda_class_handler(tmp_path: Path, rng: np.random.Generator) -> None:
    register_layer("Lambda", lambda b, xs, node: b.op("Neg", xs[0]))
    register_lambda("double", lambda b, xs, node: b.op("Add", xs[0], xs[0]))
    config = sequential([_lambda("double", "keras"), _lambda("negate", "keras")], (3,))
    x = rng.normal(size=(2, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x)
    assert_close(y, -2 * x)


def test_lambda_in_a_nested_model_matches_its_own_name(tmp_path: Path, rng: np.random.Generator) -> None:
    register_lambda("normalize", _normalize)
    inner = sequential([_lambda("normalize", "keras")], (3,), name="inner")
    outer = functional([(input_layer("x", (3,)), []), (inner, ["x"])], ["x"], ["inner"])
    x = rng.uniform(0, 255, size=(2, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", outer, {})), x)
    assert_close(y, x / 127.5 - 1)


def _conv_lambda_conv(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, Any]]:
    k1, k2 = rng.normal(size=(1, 1, 2, 3)).astype("float32"), rng.normal(size=(1, 1, 3, 2)).astype("float32")
    config = sequential([layer("Conv2D", "c1", filters=3, kernel_size=[1, 1], use_bias=False),
                         _lambda("normalize", "keras"),
                         layer("Conv2D", "c2", filters=2, kernel_size=[1, 1], use_bias=False)], (4, 4, 2))
    return save_keras(tmp_path / "m.keras", config, {"c1": [k1], "c2": [k2]}), {"k1": k1, "k2": k2}


@pytest.mark.parametrize("agnostic, transposes", [(True, 2), (False, 4)])
def test_layout_agnostic_lambda_lets_transposes_cancel(tmp_path: Path, rng: np.random.Generator, agnostic: bool,
                                                       transposes: int) -> None:
    register_lambda("normalize", _normalize, layout_agnostic=agnostic)
    path, w = _conv_lambda_conv(tmp_path, rng)
    model = converter.convert(path)
    assert [n.op_type for n in model.graph.node].count("Transpose") == transposes
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    (y,) = run_onnx(model, x)
    assert_close(y, (x @ w["k1"][0, 0] / 127.5 - 1) @ w["k2"][0, 0])


def test_handler_class_and_replacing_a_built_in(tmp_path: Path, rng: np.random.Generator) -> None:
    builtin = LAYERS.get("Dense")

    class DoubleDense(LayerHandler):
        def weight_names(self, node: Node) -> list[str]:
            return ["kernel"]

        def output_shapes(self, node: Node, input_shapes: list[Any]) -> list[Any]:
            return [(input_shapes[0][0], int(node.attrs["units"]))]

        def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
            return [b.op("Mul", b.op("MatMul", inputs[0], b.weight("kernel")), b.scalar(2.0))]

    with pytest.raises(UsageError, match="built-in handler"):
        register_layer("Dense", DoubleDense)
    register_layer("Dense", DoubleDense, replace=True)
    kernel = rng.normal(size=(3, 2)).astype("float32")
    path = save_keras(tmp_path / "m.keras", sequential([layer("Dense", "d", units=2, use_bias=False)], (3,)),
                      {"d": [kernel]})
    x = rng.normal(size=(2, 3)).astype("float32")
    assert_close(run_onnx(converter.convert(path), x)[0], 2 * x @ kernel)
    unregister_layer("Dense")
    assert LAYERS.get("Dense") is builtin
    assert_close(run_onnx(converter.convert(path), x)[0], x @ kernel)


def test_registration_mistakes_are_usage_errors(tmp_path: Path) -> None:
    register_lambda("normalize", _normalize)
    with pytest.raises(UsageError, match="already has a registered handler"):
        register_lambda("normalize", _normalize)
    register_lambda("normalize", _normalize, replace=True)
    with pytest.raises(UsageError, match="no handler registered"):
        unregister_lambda("never_registered")
    with pytest.raises(UsageError, match="sequence of names"):
        register_layer("MyScale", _normalize, weights="gamma")
    register_lambda("pair", lambda b, xs, node: [xs[0], xs[0]])
    with pytest.raises(UsageError, match="gave 2 result"):
        converter.convert(save_keras(tmp_path / "m.keras", sequential([_lambda("pair", "keras")], (3,)), {}))
