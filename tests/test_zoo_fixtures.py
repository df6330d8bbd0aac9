"""The TF-free slice of the Keras Applications zoo: shrunken applications committed in `fixtures/zoo/`
(written by `fixtures/make_zoo.py` with calibrated random weights) convert and match Keras 3's
`predict` at the zoo tolerance, rtol 1e-4 / atol 1e-4, at batch 1 and 3. No TensorFlow is needed.

What each case exercises beyond conv + BN + ReLU:
- mobilenet_v2_a010: ReLU(max_value=6), ZeroPadding2D, strided DepthwiseConv2D, residual Add;
- mobilenet_v3_small_a025: Rescaling, hard_swish, squeeze-excite, and hard_sigmoid written as Keras 3
  op nodes `ReLU(6)(x + 3.0) * (1 / 6)` (scalar constants as operands of Add/Multiply);
- efficientnet_mini / efficientnet_v2_mini: Rescaling + Normalization preprocessing, swish, SE blocks
  with Reshape and Multiply, fused MBConv (V2);
- convnext_mini: LayerNormalization, gelu, Dense on rank-4 tensors, LayerScale, StochasticDepth, nested
  Sequential stems.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, keras_tensor, layer, run_onnx, save_keras, save_legacy_h5

import converter

ZOO = Path(__file__).resolve().parent.parent / "fixtures" / "zoo"
RTOL = ATOL = 1e-4
CASES = ["convnext_mini", "efficientnet_mini", "efficientnet_v2_mini", "mobilenet_v2_a010",
         "mobilenet_v3_small_a025"]


def test_every_committed_case_is_tested() -> None:
    assert sorted(p.name for p in ZOO.iterdir() if (p / "expected.npz").exists()) == CASES


@pytest.fixture(scope="module")
def converted() -> dict[str, object]:
    """Convert each case once for both batch sizes."""
    return {}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", CASES)
def test_zoo_fixture_matches_keras(case: str, batch: int, converted: dict[str, object]) -> None:
    folder = ZOO / case
    if case not in converted:
        converted[case] = converter.convert(folder / "model.keras")
    x = np.load(folder / "inputs.npz")["x0"][:batch]
    expected = np.load(folder / "expected.npz")["k3_0"][:batch]
    (actual,) = run_onnx(converted[case], x)  # type: ignore[arg-type]
    assert_close(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CASES)
def test_outputs_tell_inputs_apart(case: str) -> None:
    """Calibration worked: outputs differ between the inputs far beyond the tolerance, so a conversion
    that lost the input's influence could not pass."""
    expected = np.load(ZOO / case / "expected.npz")["k3_0"]
    assert np.abs(expected - expected[:1]).max() > 100 * ATOL


def test_op_node_constants_are_converted() -> None:
    """MobileNetV3's hard_sigmoid `x + 3.0` is an Add op node with a constant operand: the constant must
    reach the ONNX graph (it was once dropped silently, shifting every SE gate by 3)."""
    graph = converter.convert(ZOO / "mobilenet_v3_small_a025" / "model.keras").graph  # type: ignore[attr-defined]
    values = {float(np.asarray(_array(t)).ravel()[0]) for t in graph.initializer if _size(t) == 1}
    assert 3.0 in values
    assert any(abs(v - 1 / 6) < 1e-7 for v in values)


def _size(tensor: object) -> int:
    return int(np.prod(tensor.dims))  # type: ignore[attr-defined]


def _array(tensor: object) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)  # type: ignore[arg-type]


# Keras 3 op nodes with a scalar operand, as `x + 3.0` in a functional model is saved (MobileNetV3's
# hard_sigmoid): class name -> (constant, numpy reference).
OP_NODES = {
    "Add": (3.0, lambda x: x + 3.0),
    "Multiply": (1 / 6, lambda x: x * np.float32(1 / 6)),
    "Maximum": (0.25, lambda x: np.maximum(x, 0.25)),
    "Minimum": (-0.5, lambda x: np.minimum(x, -0.5)),
}


def _op_node_model(tmp_path: Path, class_name: str, constant: float, constant_first: bool = False) -> Path:
    op = {"module": "keras.src.ops.numpy", "class_name": class_name, "config": {"name": "op"},
          "registered_name": class_name, "name": "op"}
    config = functional([(input_layer("x", (4, 5)), []), (op, ["x"])], ["x"], ["op"])
    args = [constant, keras_tensor("x")] if constant_first else [keras_tensor("x"), constant]
    config["config"]["layers"][1]["inbound_nodes"] = [{"args": args, "kwargs": {}}]
    return save_keras(tmp_path / "op.keras", config, {})


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("class_name", list(OP_NODES))
def test_op_node_with_scalar_constant(tmp_path: Path, class_name: str, batch: int,
                                      rng: np.random.Generator) -> None:
    constant, reference = OP_NODES[class_name]
    x = rng.normal(size=(batch, 4, 5)).astype("float32")
    (actual,) = run_onnx(converter.convert(_op_node_model(tmp_path, class_name, constant)), x)
    assert_close(actual, reference(x))


@pytest.mark.parametrize("constant_first", [False, True])
def test_op_node_constant_of_non_commutative_op_keeps_its_position(tmp_path: Path, constant_first: bool,
                                                                   rng: np.random.Generator) -> None:
    """The file keeps `2.0 - x` and `x - 2.0` apart only by argument position, which the call keeps."""
    path = _op_node_model(tmp_path, "Subtract", 2.0, constant_first)
    x = rng.normal(size=(2, 4, 5)).astype("float32")
    (actual,) = run_onnx(converter.convert(path), x)
    assert_close(actual, 2.0 - x if constant_first else x - 2.0)


def test_tf_op_layer_with_bare_inbound_entry_converts(tmp_path: Path, rng: np.random.Generator) -> None:
    """tf_keras' MobileNetV3 / ConvNeXt hold `x + 3.0` as TFOpLambda layers whose call tf.keras writes as
    one bare `[name, node, tensor, kwargs]` entry instead of a list of entries; it converts (it once failed
    with a ValueError while parsing the call, then was refused by name)."""
    op = layer("TFOpLambda", "tf.__operators__.add", function="__operators__.add")
    op["inbound_nodes"] = [["x", 0, 0, {"y": 3.0, "name": None}]]
    x = input_layer("x", (4,))
    x["inbound_nodes"] = []
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [x, op],
                                                     "input_layers": [["x", 0, 0]],
                                                     "output_layers": [["tf.__operators__.add", 0, 0]]}}
    path = save_legacy_h5(tmp_path / "op.h5", config, {})
    value = rng.normal(size=(2, 4)).astype("float32")
    (actual,) = run_onnx(converter.convert(path), value)
    assert_close(actual, value + 3.0)
