"""Keras 2's CuDNNLSTM / CuDNNGRU -> the LSTM / GRU they compute, config and weights.

The CuDNN layers (tf_keras `layers/rnn/cudnn_lstm.py`, `cudnn_gru.py`) have fixed activations (tanh,
sigmoid), always a bias, and CuDNNGRU applies the reset gate after the recurrent matmul with a
recurrent bias: GRU(reset_after=True). Their configs omit all of that; `upgrade_cudnn_config` states it.

Their weights feed cuDNN's flat parameter buffer unchanged, and cuDNN reads each gate's block of the
kernel as a row-major (units, features) matrix W of `W @ x`: the stored (features, units) block is the
same numbers in another shape. tf_keras' `_convert_rnn_weights` (saving/legacy/hdf5_format.py), which
loads CuDNN weights into an LSTM / GRU, recognises them by the bias length and converts them this way:
- kernel, per gate: `k.T.reshape(k.shape, order="F")` (= `k.reshape(units, features).T`);
- recurrent kernel, per gate: transposed;
- LSTM bias (8 * units: input then recurrent biases, i, f, c, o each): the two halves summed;
- GRU bias (6 * units: input then recurrent, z, r, h each): reshaped to the (2, 3 * units) of
  GRU(reset_after=True). (cuDNN's own buffer is in r, z, h order; the Keras layer permutes into it, so
  the stored arrays are in Keras' z, r, h order already.)
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

CUDNN_DEFAULTS: dict[str, dict[str, Any]] = {
    "CuDNNLSTM": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True},
    "CuDNNGRU": {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "reset_after": True},
}
GATES = {"LSTM": 4, "GRU": 3}


def upgrade_cudnn_config(raw: Any) -> Any:
    """The config with each CuDNN layer entry given the arguments its LSTM / GRU equivalent needs
    (a copy when there is one; the config itself otherwise)."""
    if not _has_cudnn(raw):
        return raw
    upgraded = copy.deepcopy(raw)
    _fill(upgraded)
    return upgraded


def _has_cudnn(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("class_name") in CUDNN_DEFAULTS or any(_has_cudnn(v) for v in value.values())
    return isinstance(value, list) and any(_has_cudnn(v) for v in value)


def _fill(value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _fill(item)
    elif isinstance(value, dict):
        defaults = CUDNN_DEFAULTS.get(str(value.get("class_name")))
        if defaults is not None and isinstance(value.get("config"), dict):
            value["config"].update(defaults)
        for item in value.values():
            _fill(item)


def is_cudnn_weights(kind: str, arrays: list[np.ndarray]) -> bool:
    """tf_keras' test: three arrays whose bias holds input and recurrent biases, 2 * gates * units long."""
    if kind not in GATES or len(arrays) != 3 or arrays[0].ndim != 2 or arrays[1].ndim != 2:
        return False
    width = GATES[kind] * arrays[1].shape[0]  # gates * units
    # The per-gate split below needs both kernels `gates * units` wide; other shapes are left to the
    # handler's shape check, which names the layer and the expected shape.
    return (tuple(arrays[2].shape) == (2 * width,) and arrays[0].shape[1] == width
            and arrays[1].shape[1] == width)


def _per_gate(matrix: np.ndarray, gates: int, convert: Any) -> np.ndarray:
    return np.hstack([convert(block) for block in np.hsplit(matrix, gates)])


def cudnn_to_canonical(kind: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """CuDNNLSTM / CuDNNGRU kernel, recurrent_kernel, bias -> LSTM / GRU(reset_after=True) arrays."""
    gates = GATES[kind]
    kernel = _per_gate(arrays[0], gates, lambda k: k.T.reshape(k.shape, order="F"))
    recurrent = _per_gate(arrays[1], gates, lambda k: k.T)
    halves = np.split(np.asarray(arrays[2]), 2)
    bias = halves[0] + halves[1] if kind == "LSTM" else np.stack(halves)
    return [kernel, recurrent, bias]
