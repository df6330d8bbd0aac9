"""Live cross-checks of convolution, pooling and spatial resampling layers against Keras 3 and
tf_keras (Keras 2), both layouts, batch 1 and 3. Keras' answers come through runtime/reference.py, as for
`kconvert --check`: plain `model.predict` has no channels_first kernels on CPUs without AVX-512."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, keras_outputs
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf

CF = {"data_format": "channels_first"}
Build = Callable[[Any], list[Any]]

# id -> (layers built from the `keras.layers` module, sample input shape). Shapes avoid a Keras 3
# bug: channels_first Depthwise/SeparableConv adds its bias along the wrong axis when the output
# width equals the output channels (tf_keras is right there; kconvert follows the layer's definition).
CASES: dict[str, tuple[Build, tuple[int | None, ...]]] = {
    "conv1d_same_strided": (lambda L: [L.Conv1D(4, 3, strides=2, padding="same", activation="relu")], (9, 3)),
    "conv1d_causal_dilated": (lambda L: [L.Conv1D(4, 3, dilation_rate=2, padding="causal")], (9, 3)),
    "conv1d_cf": (lambda L: [L.Conv1D(4, 4, strides=2, padding="same", **CF)], (3, 10)),
    "conv2d_same_strided": (lambda L: [L.Conv2D(5, 3, strides=2, padding="same")], (7, 8, 3)),
    "conv2d_dilated_groups": (lambda L: [L.Conv2D(6, (3, 2), dilation_rate=(2, 1), groups=3, padding="same")],
                              (7, 8, 6)),
    "conv2d_cf_softmax": (lambda L: [L.Conv2D(5, 3, strides=(2, 1), activation="softmax", **CF)], (3, 7, 8)),
    "conv2d_softmax": (lambda L: [L.Conv2D(4, 1, activation="softmax")], (4, 5, 3)),
    "conv3d": (lambda L: [L.Conv3D(3, (3, 2, 2), strides=2, padding="same", activation="tanh")], (5, 6, 4, 2)),
    "conv3d_cf": (lambda L: [L.Conv3D(3, 2, **CF)], (2, 4, 5, 3)),
    "conv1d_transpose": (lambda L: [L.Conv1DTranspose(3, 3, strides=2, padding="same")], (5, 2)),
    "conv2d_transpose_valid": (lambda L: [L.Conv2DTranspose(3, (2, 3), strides=(3, 2))], (4, 5, 2)),
    "conv2d_transpose_output_padding": (lambda L: [L.Conv2DTranspose(3, 3, strides=2, padding="same",
                                                                     output_padding=(1, 0))], (4, 5, 2)),
    "conv2d_transpose_dilated_cf": (lambda L: [L.Conv2DTranspose(3, 3, dilation_rate=2, padding="same", **CF)],
                                    (2, 4, 5)),
    "conv3d_transpose": (lambda L: [L.Conv3DTranspose(2, 3, strides=2, padding="same", activation="relu")],
                         (3, 4, 2, 2)),
    "depthwise1d": (lambda L: [L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", dilation_rate=2)], (9, 3)),
    "depthwise2d": (lambda L: [L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")], (7, 8, 3)),
    "depthwise2d_cf": (lambda L: [L.DepthwiseConv2D(3, depth_multiplier=2, **CF)], (3, 7, 9)),
    "separable1d": (lambda L: [L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same")], (9, 3)),
    "separable2d_cf": (lambda L: [L.SeparableConv2D(4, 3, dilation_rate=2, activation="relu", **CF)], (3, 7, 9)),
    "pool2d_same": (lambda L: [L.MaxPooling2D(3, strides=2, padding="same"),
                               L.AveragePooling2D(3, strides=2, padding="same")], (9, 8, 3)),
    "pool1d_cf": (lambda L: [L.MaxPooling1D(3, strides=2, padding="same", **CF),
                             L.AveragePooling1D(2, **CF)], (3, 11)),
    "pool3d": (lambda L: [L.MaxPooling3D(2, padding="same"), L.AveragePooling3D(2, strides=1, padding="same")],
               (5, 4, 3, 2)),
    "global_pools_keepdims_cf": (lambda L: [L.GlobalAveragePooling2D(keepdims=True, **CF)], (3, 5, 4)),
    "conv_global_max": (lambda L: [L.Conv2D(4, 3), L.GlobalMaxPooling2D()], (6, 7, 3)),
    "global_pool3d": (lambda L: [L.GlobalAveragePooling3D()], (3, 4, 2, 2)),
    "upsampling_nearest": (lambda L: [L.UpSampling2D((2, 3)), L.UpSampling2D(2, **CF)], (3, 4, 2)),
    "upsampling_bilinear": (lambda L: [L.UpSampling2D((2, 3), interpolation="bilinear")], (4, 3, 2)),
    "upsampling_bicubic_cf": (lambda L: [L.UpSampling2D(3, interpolation="bicubic", **CF)], (2, 4, 5)),
    "upsampling_1d_3d": (lambda L: [L.UpSampling3D((2, 1, 3))], (2, 3, 2, 2)),
    "padding_cropping": (lambda L: [L.ZeroPadding2D(((1, 2), (0, 3))), L.Cropping2D(((2, 0), (1, 1)))],
                         (4, 3, 2)),
    "padding_cropping_cf": (lambda L: [L.ZeroPadding3D(1, **CF), L.Cropping3D(((1, 0), (0, 1), (1, 1)), **CF)],
                            (2, 3, 2, 2)),
    "sequence_stack": (lambda L: [L.ZeroPadding1D((1, 2)), L.Conv1D(4, 3), L.UpSampling1D(2), L.Cropping1D((1, 2)),
                                  L.GlobalMaxPooling1D()], (6, 3)),
    "dynamic_image_stack": (lambda L: [L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
                                       L.MaxPooling2D(3, strides=2, padding="same"),
                                       L.Conv2DTranspose(3, 3, strides=2, padding="same"),
                                       L.UpSampling2D(interpolation="bilinear"), L.Conv2D(2, 1)], (None, None, 3)),
}
DYNAMIC_RUN_SHAPE = (19, 23, 3)


def _build(module: str, case: str) -> Any:
    keras = pytest.importorskip(module)
    build, shape = CASES[case]
    inputs = keras.Input(shape=shape)
    x = inputs
    for lay in build(keras.layers):
        x = lay(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5 for w in model.get_weights()])
    return model


@pytest.mark.parametrize("module, suffix", [("keras", "keras"), ("tf_keras", "h5")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_keras(tmp_path: Path, module: str, suffix: str, case: str) -> None:
    model = _build(module, case)
    path = tmp_path / f"model.{suffix}"
    model.save(path)
    onnx_model = converter.convert(path)
    shape = CASES[case][1]
    sample = DYNAMIC_RUN_SHAPE if None in shape else shape
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, *sample)).astype("float32")
        (y,) = run_onnx(onnx_model, x)
        assert_close(y, keras_outputs(model, [x])[0])


def test_keras3_legacy_h5_writer(tmp_path: Path) -> None:
    """Keras 3 can still write the legacy .h5 format; the same conv stack converts from it."""
    model = _build("keras", "dynamic_image_stack")
    model.save(tmp_path / "model.h5")
    x = np.random.default_rng(0).normal(size=(2, *DYNAMIC_RUN_SHAPE)).astype("float32")
    (y,) = run_onnx(converter.convert(tmp_path / "model.h5"), x)
    assert_close(y, keras_outputs(model, [x])[0])


@pytest.mark.parametrize("module, suffix", [("keras", "keras"), ("tf_keras", "h5")])
def test_embedding_mask_reaches_global_average_pooling(tmp_path: Path, module: str, suffix: str) -> None:
    """Embedding(mask_zero) -> Dense -> GlobalAveragePooling1D averages over the non-padding steps only."""
    keras = pytest.importorskip(module)
    ids = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(3)(embedded))
    model = keras.Model(ids, pooled)
    model.save(tmp_path / f"model.{suffix}")
    x = np.array([[1, 2, 0, 0, 3, 0, 0], [4, 4, 4, 4, 4, 4, 4], [0, 0, 5, 0, 0, 0, 0]], dtype="int32")
    (y,) = run_onnx(converter.convert(tmp_path / f"model.{suffix}"), x)
    assert_close(y, keras_outputs(model, [x])[0])
