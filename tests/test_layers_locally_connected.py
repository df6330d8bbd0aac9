"""LocallyConnected1D/2D (Keras 2) in its three stored kernel layouts, against a numpy loop reference."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from kmodels import layer, run_onnx, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError

# (input spatial dims, channels, kernel, strides, filters)
CASES = {"1D": ((9,), 3, (3,), (2,), 4), "2D": ((6, 5), 2, (3, 2), (2, 1), 3)}


def _patch_kernel(rng: np.random.Generator, case: str) -> tuple[np.ndarray, tuple[int, ...]]:
    dims, cin, kernel, strides, filters = CASES[case]
    out = tuple((d - k) // s + 1 for d, k, s in zip(dims, kernel, strides))
    return rng.normal(size=(int(np.prod(out)), int(np.prod(kernel)) * cin, filters)).astype("float32"), out


def _reference(x: np.ndarray, w: np.ndarray, case: str, out: tuple[int, ...]) -> np.ndarray:
    """channels_last loop: each output position has its own (patch, filters) kernel, patch in (k..., c) order."""
    _, _, kernel, strides, filters = CASES[case]
    y = np.zeros((x.shape[0], *out, filters), np.float32)
    for p, pos in enumerate(itertools.product(*(range(o) for o in out))):
        window = tuple(slice(o * s, o * s + k) for o, s, k in zip(pos, strides, kernel))
        y[(slice(None), *pos)] = x[(slice(None), *window)].reshape(x.shape[0], -1) @ w[p]
    return y


def _dense(w: np.ndarray, case: str, out: tuple[int, ...]) -> np.ndarray:
    """The same map as a dense (dims..., c, out..., filters) kernel (implementation 2, channels_last)."""
    dims, cin, kernel, strides, filters = CASES[case]
    dense = np.zeros((*dims, cin, *out, filters), np.float32)
    for p, pos in enumerate(itertools.product(*(range(o) for o in out))):
        offsets = itertools.product(*(range(k) for k in kernel))
        for j, (off, c) in enumerate(itertools.product(offsets, range(cin))):
            dense[(*(o * s + d for o, s, d in zip(pos, strides, off)), c, *pos)] = w[p, j]
    return dense


def _stored(w: np.ndarray, case: str, out: tuple[int, ...], mode: int) -> np.ndarray:
    if mode == 1:
        return w
    dense = _dense(w, case, out)
    if mode == 2:
        return dense
    matrix = dense.reshape(int(np.prod(dense.shape[: dense.ndim // 2])), -1)  # (in, out)
    outs, ins = np.nonzero(matrix.T != 0)  # row-major over (out, in): the sorted kernel_idxs order
    return matrix[ins, outs]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_locally_connected(tmp_path: Path, rng: np.random.Generator, case: str, mode: int, batch: int) -> None:
    dims, cin, kernel, strides, filters = CASES[case]
    w, out = _patch_kernel(rng, case)
    bias = rng.normal(size=(*out, filters)).astype("float32")
    cfg = layer(f"LocallyConnected{case}", "lc", filters=filters, kernel_size=list(kernel), strides=list(strides),
                padding="valid", data_format="channels_last", activation="relu", use_bias=True, implementation=mode)
    path = save_legacy_h5(tmp_path / "m.h5", sequential([cfg], (*dims, cin)), {"lc": [_stored(w, case, out, mode),
                                                                                      bias]})
    x = rng.normal(size=(batch, *dims, cin)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.maximum(_reference(x, w, case, out) + bias, 0))


@pytest.mark.parametrize("batch", [1, 3])
def test_locally_connected_channels_first(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    dims, cin, kernel, strides, filters = CASES["1D"]
    w, out = _patch_kernel(rng, "1D")
    # channels_first patches are flattened (c, k): reorder the same weights into that order
    w_first = w.reshape(w.shape[0], kernel[0], cin, filters).transpose(0, 2, 1, 3).reshape(w.shape)
    bias = rng.normal(size=(*out, filters)).astype("float32")
    cfg = layer("LocallyConnected1D", "lc", filters=filters, kernel_size=list(kernel), strides=list(strides),
                data_format="channels_first", use_bias=True, implementation=1)
    path = save_legacy_h5(tmp_path / "m.h5", sequential([cfg], (cin, *dims)), {"lc": [w_first, bias]})
    x = rng.normal(size=(batch, *dims, cin)).astype("float32")
    (y,) = run_onnx(converter.convert(path), np.ascontiguousarray(x.transpose(0, 2, 1)))
    # tf_keras adds a (length, filters) bias to channels_first outputs by reshaping it to (filters, length)
    expected = _reference(x, w, "1D", out).transpose(0, 2, 1) + bias.reshape(filters, *out)
    assert_close(y, expected)


def test_locally_connected_mode_1_refuses_same_padding(tmp_path: Path) -> None:
    cfg = layer("LocallyConnected1D", "lc", filters=2, kernel_size=[3], padding="same", implementation=1)
    with pytest.raises(UnsupportedLayerError, match="padding='same'"):
        converter.convert(save_legacy_h5(tmp_path / "m.h5", sequential([cfg], (6, 2)), {"lc": []}))
