"""RMSNormalization and SpectralNormalization from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError, UsageError
from converter.export.onnx import export
from converter.keras.legacy_weights import spectral_norm_order

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("axis, axes", [(-1, (2,)), ([1, 2], (1, 2)), (2, (2,))])
@pytest.mark.parametrize("batch", [1, 3])
def test_rms_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str, axis: Any, axes: tuple[int, ...],
                           batch: int) -> None:
    x = (rng.normal(size=(batch, 4, 6)) * 3).astype("float32")
    scale = rng.normal(size=tuple(x.shape[a] for a in axes)).astype("float32")
    config = sequential([layer("RMSNormalization", "rms", axis=axis, epsilon=1e-3)], (4, 6))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"rms": [scale]})
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + 1e-3) * scale)


def _dense(name: str, units: int) -> dict[str, Any]:
    return {"class_name": "Dense", "config": {"name": name, "units": units, "activation": "tanh", "use_bias": True}}


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_spectral_normalization_runs_the_stored_kernel(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                       batch: int) -> None:
    kernel, bias = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    vector_u = rng.normal(size=(1, 3)).astype("float32")
    config = sequential([layer("SpectralNormalization", "sn", layer=_dense("dense", 3), power_iterations=1)], (4, 5))
    # Keras 3 zips store the wrapper's [kernel alias, vector_u] first, then its layer's vars; legacy h5
    # stores the layer's arrays then vector_u.
    stored = {"": [kernel, vector_u], "layer": [kernel, bias]} if fmt == "keras" else [kernel, bias, vector_u]
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"sn": stored})
    x = rng.normal(size=(batch, 4, 5)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.tanh(x @ kernel + bias))


def test_spectral_weight_order_leaves_legacy_order_alone(rng: np.random.Generator) -> None:
    kernel, bias, u = rng.normal(size=(1, 3)), rng.normal(size=3), rng.normal(size=(1, 3))
    assert [a.shape for a in spectral_norm_order([kernel, bias, u])] == [(1, 3), (3,), (1, 3)]
    reordered = spectral_norm_order([kernel, u, kernel, bias])
    assert np.array_equal(reordered[0], kernel) and np.array_equal(reordered[2], u)


def test_spectral_normalization_of_unknown_layer_is_refused(tmp_path: Path) -> None:
    inner = {"class_name": "Lambda", "config": {"name": "fn", "function": "x"}}
    config = sequential([layer("SpectralNormalization", "sn", layer=inner)], (4, 5))
    with pytest.raises(UnsupportedLayerError, match="wraps Lambda"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {"sn": [np.zeros((1, 5), "float32")]}))


def test_spectral_normalization_unwraps_into_its_layer(tmp_path: Path, rng: np.random.Generator) -> None:
    """The unwrap pass replaces the wrapper by its layer on the stored kernel; the layout pass places that
    Conv2D like any other (a wrapper left whole is not lowered)."""
    kernel = rng.normal(size=(1, 1, 2, 3)).astype("float32")
    conv = {"class_name": "Conv2D", "config": {"name": "conv", "filters": 3, "kernel_size": [1, 1], "use_bias": False}}
    config = sequential([layer("SpectralNormalization", "sn", layer=conv)], (4, 4, 2))
    path = save_keras(tmp_path / "m.keras", config, {"sn": {"": [kernel, np.ones((1, 3), "float32")],
                                                              "layer": [kernel]}})
    loaded = converter.load(path)
    loaded.artifact.close()
    (inner,) = [n for n in loaded.graph.nodes if n.kind == "Conv2D"]
    assert "SpectralNormalization" not in {n.kind for n in loaded.graph.nodes}
    assert inner.spec.data_format == "channels_first" and set(inner.weights) == {"kernel"}
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x @ kernel[0, 0])
    unoptimized = converter.load(path, optimize=False)
    unoptimized.artifact.close()
    with pytest.raises(UsageError, match="still wrapped"):
        export(unoptimized.graph)
