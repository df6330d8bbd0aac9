"""Keras 3 `model.quantize("int8")` files (hand-made here) against a numpy copy of Keras' `_int8_call`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import UnsupportedLayerError

ABS_MAX = {"module": "keras.quantizers", "class_name": "AbsMaxQuantizer", "registered_name": None,
           "config": {"value_range": [-127, 127], "epsilon": 1e-07, "output_dtype": "int8"}}


def _int8(mode: str = "int8", activation_quantizer: Any = ABS_MAX) -> dict[str, Any]:
    """The two fields model.quantize() writes into a layer's config (Keras 3.15's spelling)."""
    policy = {"module": "keras.dtype_policies", "class_name": "QuantizedDTypePolicy", "registered_name": None,
              "config": {"mode": mode, "source_name": "float32"}}
    qconfig = {"module": "keras.quantizers", "class_name": "Int8QuantizationConfig", "registered_name": None,
               "config": {"weight_quantizer": None, "activation_quantizer": activation_quantizer}}
    return {"dtype": policy, "quantization_config": qconfig}


def _quantize_kernel(kernel: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Keras' abs_max_quantize of a weight (to_numpy): int8 values and the kept-dims scale."""
    scale = (np.float32(127) / (np.abs(kernel).max(axis=axis, keepdims=True) + np.float32(1e-7))).astype("float32")
    return np.clip(np.round(kernel * scale), -127, 127).astype(np.int8), scale


def _quantize_rows(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The input quantizer of _int8_call, in float32 as TensorFlow computes it."""
    scale = np.float32(127) / (np.abs(x).max(axis=axes, keepdims=True) + np.float32(1e-7))
    return np.clip(np.round(x * scale), -127, 127), scale


def _model(entries: list[tuple[dict[str, Any], list[Any]]], shape: tuple[int, ...], dtype: str = "float32"
           ) -> dict[str, Any]:
    return functional([(input_layer("x", shape, dtype), []), *entries], ["x"], [entries[-1][0]["config"]["name"]])


def _dense_model(tmp_path: Path, rng: np.random.Generator, shape: tuple[int, ...], use_bias: bool = True,
                 activation_quantizer: Any = ABS_MAX) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    kernel, scale = _quantize_kernel(rng.normal(size=(shape[-1], 5)).astype("float32"), (0,))
    bias = rng.normal(size=5).astype("float32")
    dense = layer("Dense", "d", units=5, activation="relu", use_bias=use_bias,
                  **_int8(activation_quantizer=activation_quantizer))
    arrays = [kernel, bias, scale[0]] if use_bias else [kernel, scale[0]]
    path = save_keras(tmp_path / "m.keras", _model([(dense, ["x"])], shape), {"d": arrays})
    return path, kernel, scale[0], bias if use_bias else np.zeros(5, "float32")


@pytest.mark.parametrize("shape", [(6,), (3, 6)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_int8_is_keras_formula(tmp_path: Path, rng: np.random.Generator, shape: tuple[int, ...],
                                     use_bias: bool) -> None:
    path, kernel, scale, bias = _dense_model(tmp_path, rng, shape, use_bias)
    x = rng.normal(size=(4, *shape)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    x_q, x_scale = _quantize_rows(x, (-1,))
    want = np.maximum((x_q @ kernel.astype("float32")) / (scale * x_scale) + bias, 0)
    assert_close(y, want, rtol=1e-6, atol=1e-6)


def test_dense_weight_only_int8(tmp_path: Path, rng: np.random.Generator) -> None:
    """activation_quantizer None: the float input meets the int8 kernel, divided by its scale."""
    path, kernel, scale, bias = _dense_model(tmp_path, rng, (6,), activation_quantizer=None)
    x = rng.normal(size=(3, 6)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.maximum(x @ kernel.astype("float32") / scale + bias, 0), rtol=1e-6, atol=1e-6)


def test_int8_initializers_stay_int8(tmp_path: Path, rng: np.random.Generator) -> None:
    path, kernel, _, _ = _dense_model(tmp_path, rng, (6,))
    stored = {i.name: i for i in converter.convert(path).graph.initializer}
    assert stored["d/kernel"].data_type == onnx.TensorProto.INT8
    assert np.array_equal(onnx.numpy_helper.to_array(stored["d/kernel"]), kernel)


# (equation, input shape, kernel shape, axes of the kernel Keras reduces, bias shape or None)
EINSUMS = [
    ("ab,bc->ac", (6,), (6, 4), (0,), (4,)),
    ("abc,cde->abde", (3, 6), (6, 2, 4), (0,), (2, 4)),  # the MatMul path
    ("abc,cd->adb", (3, 6), (6, 4), (0,), None),  # ONNX Einsum, the output transposed
    ("...b,bc->...c", (2, 3, 6), (6, 4), (0,), (4,)),  # "..." axes kept
    ("abc,bcd->ad", (3, 6), (3, 6, 4), (0, 1), (4,)),  # two contracted axes
]


def _einsum_reference(eq: str, x: np.ndarray, kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """einsum of the integers / (inputs_scale * kernel_scale), the input scale moved onto the output."""
    lhs, out = eq.split("->")
    x_spec = lhs.split(",")[0]
    if x_spec.startswith("..."):  # name the elided axes (the tests' equations never use x, y, w)
        extra = "xyw"[: x.ndim - len(x_spec) + 3]
        x_spec, out = extra + x_spec[3:], extra + out[3:]
        eq = f"{x_spec},{lhs.split(',')[1]}->{out}"
    reduced = tuple(i for i, c in enumerate(x_spec) if c not in out)
    x_q, x_scale = _quantize_rows(x, reduced)
    kept = "".join(c for c in x_spec if c in out)
    aligned = np.einsum(f"{kept}->{''.join(c for c in out if c in kept)}", x_scale.squeeze(reduced))
    aligned = aligned.reshape([x.shape[x_spec.index(c)] if c in kept else 1 for c in out])
    return np.einsum(eq, x_q, kernel.astype("float32")) / (aligned * scale)


@pytest.mark.parametrize(("equation", "shape", "kernel_shape", "reduced", "bias_shape"), EINSUMS)
def test_einsum_dense_int8_is_keras_formula(tmp_path: Path, rng: np.random.Generator, equation: str,
                                            shape: tuple[int, ...], kernel_shape: tuple[int, ...],
                                            reduced: tuple[int, ...], bias_shape: tuple[int, ...] | None) -> None:
    kernel, scale = _quantize_kernel(rng.normal(size=kernel_shape).astype("float32"), reduced)
    out = equation.split("->")[1].replace("...", "")
    kernel_spec = equation.split(",")[1].split("->")[0]
    # Keras saves the kernel scale already broadcastable to the output (its _adjust_scale_for_quant).
    kept = scale.squeeze(reduced)
    kept_labels = "".join(c for c in kernel_spec if c in out)
    out_scale = np.einsum(f"{kept_labels}->{''.join(c for c in out if c in kept_labels)}", kept)
    out_scale = out_scale.reshape([kernel_shape[kernel_spec.index(c)] if c in kept_labels else 1 for c in out])
    bias = None if bias_shape is None else rng.normal(size=bias_shape).astype("float32")
    config = layer("EinsumDense", "e", equation=equation, output_shape=[4], bias_axes="c" if bias is not None else None,
                   **_int8())
    arrays = [kernel, out_scale] if bias is None else [kernel, bias, out_scale]
    path = save_keras(tmp_path / "m.keras", _model([(config, ["x"])], shape), {"e": arrays})
    x = rng.normal(size=(2, *shape)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    want = _einsum_reference(equation, x, kernel, out_scale)
    assert_close(y, want if bias is None else want + bias, rtol=1e-5, atol=1e-6)


def test_embedding_int8_then_dense(tmp_path: Path, rng: np.random.Generator) -> None:
    table, table_scale = _quantize_kernel(rng.normal(size=(10, 6)).astype("float32"), (1,))
    kernel, scale = _quantize_kernel(rng.normal(size=(6, 3)).astype("float32"), (0,))
    entries = [(layer("Embedding", "emb", input_dim=10, output_dim=6, **_int8()), ["x"]),
               (layer("Dense", "d", units=3, use_bias=False, **_int8()), ["emb"])]
    path = save_keras(tmp_path / "m.keras", _model(entries, (5,), "int32"),
                      {"emb": [table, table_scale[:, 0]], "d": [kernel, scale[0]]})
    ids = rng.integers(0, 10, size=(2, 5)).astype("int32")
    model = converter.convert(path)
    (y,) = run_onnx(model, ids)
    rows = table[ids].astype("float32") / table_scale[:, 0][ids][..., None]
    x_q, x_scale = _quantize_rows(rows, (-1,))
    assert_close(y, x_q @ kernel.astype("float32") / (scale[0] * x_scale), rtol=1e-6, atol=1e-6)
    int8 = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sorted(int8) == ["d/kernel", "emb/embeddings"]


@pytest.mark.parametrize("mode", ["int4", "float8", "gptq", "awq"])
def test_other_modes_are_refused_by_mode(tmp_path: Path, rng: np.random.Generator, mode: str) -> None:
    dense = layer("Dense", "d", units=5, **_int8(mode=mode))
    path = save_keras(tmp_path / "m.keras", _model([(dense, ["x"])], (6,)), {"d": []})
    with pytest.raises(UnsupportedLayerError, match=f"'d'.*mode '{mode}'"):
        converter.convert(path)


def test_string_policy_and_unknown_input_quantizer(tmp_path: Path) -> None:
    """Older files write the policy as "int4_from_float32"; an input quantizer other than AbsMax is refused."""
    old = layer("Embedding", "emb", input_dim=10, output_dim=6, dtype="int4_from_float32")
    path = save_keras(tmp_path / "a.keras", _model([(old, ["x"])], (5,), "int32"), {"emb": []})
    with pytest.raises(UnsupportedLayerError, match="mode 'int4'"):
        converter.convert(path)
    other = {**ABS_MAX, "class_name": "Float8Quantizer"}
    dense = layer("Dense", "d", units=5, **_int8(activation_quantizer=other))
    path = save_keras(tmp_path / "b.keras", _model([(dense, ["x"])], (6,)), {"d": []})
    with pytest.raises(UnsupportedLayerError, match="Float8Quantizer"):
        converter.convert(path)


def test_batch_norm_after_int8_dense_is_not_folded(tmp_path: Path, rng: np.random.Generator) -> None:
    """The fold would scale the int8 kernel by floats: it is left as its own op, the values stay right."""
    kernel, scale = _quantize_kernel(rng.normal(size=(6, 5)).astype("float32"), (0,))
    gamma, beta, mean = (rng.normal(size=5).astype("float32") for _ in range(3))
    var = rng.uniform(0.5, 2, size=5).astype("float32")
    entries = [(layer("Dense", "d", units=5, use_bias=False, **_int8()), ["x"]),
               (layer("BatchNormalization", "bn", epsilon=1e-3), ["d"])]
    weights = {"d": [kernel, scale[0]], "bn": [gamma, beta, mean, var]}
    path = save_keras(tmp_path / "m.keras", _model(entries, (6,)), weights)
    model = converter.convert(path)
    x = rng.normal(size=(3, 6)).astype("float32")
    (y,) = run_onnx(model, x)
    x_q, x_scale = _quantize_rows(x, (-1,))
    dense = x_q @ kernel.astype("float32") / (scale[0] * x_scale)
    assert_close(y, (dense - mean) / np.sqrt(var + 1e-3) * gamma + beta, rtol=1e-5, atol=1e-5)
    assert [i.data_type for i in model.graph.initializer if i.name == "d/kernel"] == [onnx.TensorProto.INT8]


def test_keras_writer_refuses_a_quantized_layer(tmp_path: Path, rng: np.random.Generator) -> None:
    path, _, _, _ = _dense_model(tmp_path, rng, (6,))
    with pytest.raises(UnsupportedLayerError, match="'d'.*quantized"):
        converter.save_keras(path, tmp_path / "out.keras")


def test_keras_3_0_policy_name_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    """Keras 3.0-3.3 wrote the policy as {"name": "int8_from_float32"}, without quantization_config."""
    kernel, scale = _quantize_kernel(rng.normal(size=(6, 5)).astype("float32"), (0,))
    policy = {"module": "keras", "class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_float32"}}
    dense = layer("Dense", "d", units=5, use_bias=False, dtype=policy)
    path = save_keras(tmp_path / "m.keras", _model([(dense, ["x"])], (6,)), {"d": [kernel, scale[0]]})
    x = rng.normal(size=(2, 6)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    x_q, x_scale = _quantize_rows(x, (-1,))
    assert_close(y, x_q @ kernel.astype("float32") / (scale[0] * x_scale), rtol=1e-6, atol=1e-6)


def test_keras_3_legacy_h5_lists_the_bias_first(tmp_path: Path, rng: np.random.Generator) -> None:
    """model.save("x.h5") writes trainable weights first: bias, then the int8 kernel and its scale."""
    kernel, scale = _quantize_kernel(rng.normal(size=(6, 5)).astype("float32"), (0,))
    bias = rng.normal(size=5).astype("float32")
    dense = layer("Dense", "d", units=5, **_int8())
    path = save_legacy_h5(tmp_path / "m.h5", _model([(dense, ["x"])], (6,)), {"d": [bias, kernel, scale[0]]},
                          keras_version="3.15.1")
    x = rng.normal(size=(2, 6)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    x_q, x_scale = _quantize_rows(x, (-1,))
    assert_close(y, x_q @ kernel.astype("float32") / (scale[0] * x_scale) + bias, rtol=1e-6, atol=1e-6)
