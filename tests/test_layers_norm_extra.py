"""LayerNormalization, GroupNormalization and UnitNormalization from both writers, against numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import ShapeError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("axis, axes", [(-1, (3,)), ([2, 3], (2, 3)), (1, (1,)), ([1, -1], (1, 3))])
@pytest.mark.parametrize("opset", [13, 17])  # 17 uses ONNX LayerNormalization where the axes trail
@pytest.mark.parametrize("batch", [1, 3])
def test_layer_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str, axis: Any, axes: tuple[int, ...],
                             opset: int, batch: int) -> None:
    x = (rng.normal(size=(batch, 3, 4, 5)) * 2 + 1).astype("float32")
    param_shape = tuple(x.shape[a] for a in axes)
    gamma, beta = rng.normal(size=param_shape).astype("float32"), rng.normal(size=param_shape).astype("float32")
    config = sequential([layer("LayerNormalization", "ln", axis=axis, epsilon=1e-3)], (3, 4, 5))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"ln": [gamma, beta]})
    (y,) = run_onnx(converter.convert(path, opset=opset), x)
    bshape = [x.shape[a] if a in axes else 1 for a in range(4)]
    assert_close(y, _normalise(x, axes, 1e-3) * gamma.reshape(bshape) + beta.reshape(bshape))


@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("opset", [13, 17])
def test_layer_normalization_without_center_or_scale(tmp_path: Path, rng: np.random.Generator, center: bool,
                                                     scale: bool, opset: int) -> None:
    gamma, beta = rng.normal(size=6).astype("float32"), rng.normal(size=6).astype("float32")
    weights = ([gamma] if scale else []) + ([beta] if center else [])
    config = sequential([layer("LayerNormalization", "ln", center=center, scale=scale, epsilon=1e-5)], (4, 6))
    path = save_keras(tmp_path / "m.keras", config, {"ln": weights})
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    (y,) = run_onnx(converter.convert(path, opset=opset), x)
    expected = _normalise(x, (2,), 1e-5) * (gamma if scale else 1) + (beta if center else 0)
    assert_close(y, expected.astype("float32"))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("groups, axis", [(4, -1), (-1, -1), (3, 1), (1, -1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_group_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str, groups: int, axis: int,
                             batch: int) -> None:
    x = (rng.normal(size=(batch, 6, 5, 8)) + 2).astype("float32")
    channels = x.shape[axis]
    gamma, beta = rng.normal(size=channels).astype("float32"), rng.normal(size=channels).astype("float32")
    config = sequential([layer("GroupNormalization", "gn", groups=groups, axis=axis, epsilon=1e-3)], (6, 5, 8))
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"gn": [gamma, beta]})
    (y,) = run_onnx(converter.convert(path), x)
    g = channels if groups == -1 else groups
    moved = np.moveaxis(x, axis, 1)  # (batch, C, ...) -> groups on axis 1
    grouped = moved.reshape(batch, g, channels // g, -1)
    normed = _normalise(grouped, (2, 3), 1e-3).reshape(moved.shape)
    bshape = (1, channels) + (1,) * (x.ndim - 2)
    expected = np.moveaxis(normed * gamma.reshape(bshape) + beta.reshape(bshape), 1, axis)
    assert_close(y, expected.astype("float32"))


def test_group_normalization_groups_must_divide_channels(tmp_path: Path) -> None:
    config = sequential([layer("GroupNormalization", "gn", groups=3, center=False, scale=False)], (4, 8))
    with pytest.raises(ShapeError, match="3 groups do not divide 8"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("axis, axes", [(-1, (2,)), ([1, 2], (1, 2))])
@pytest.mark.parametrize("batch", [1, 3])
def test_unit_normalization(tmp_path: Path, rng: np.random.Generator, fmt: str, axis: Any, axes: tuple[int, ...],
                            batch: int) -> None:
    path = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer("UnitNormalization", "un", axis=axis)], (4, 6)), {})
    x = rng.normal(size=(batch, 4, 6)).astype("float32")
    x[0, 0] = 0.0  # a zero vector stays zero (the norm's floor keeps it finite)
    (y,) = run_onnx(converter.convert(path), x)
    norm = np.sqrt((x**2).sum(axis=axes, keepdims=True))
    assert_close(y, np.where(norm > 0, x / np.maximum(norm, 1e-12), 0).astype("float32"))


def _parse(kind: str, config: dict[str, Any], keras_major: int = 3) -> Any:
    from converter.layers.registry import LAYERS
    from converter.layers.spec import Config, ParseContext
    handler = LAYERS.get(kind)
    assert handler is not None
    return handler.parse(Config(config, ParseContext(kind, "l", keras_major)))


def test_norm_specs_and_traits() -> None:
    from converter.errors import UnsupportedLayerError
    from converter.layers.registry import LAYERS
    assert _parse("LayerNormalization", {"axis": [1, 3], "center": False}).axis == (1, 3)
    assert _parse("LayerNormalization", {"axis": None}).axis == -1
    assert _parse("UnitNormalization", {}, keras_major=2).cap_inverse_norm is False
    assert _parse("GroupNormalization", {"groups": -1}).groups == -1
    with pytest.raises(UnsupportedLayerError, match="groups=0"):
        _parse("GroupNormalization", {"groups": 0})
    for kind in ("LayerNormalization", "UnitNormalization", "GroupNormalization"):
        assert LAYERS.get(kind).passes_mask, kind  # type: ignore[union-attr]
