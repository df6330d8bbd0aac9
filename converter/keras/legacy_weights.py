"""Weights as older Keras wrote them -> the canonical Keras 2/3 arrays a handler expects.

The rules follow Keras 2's `preprocess_weights_for_loading` (which is how Keras itself loaded Keras 1
files) plus what it did for Theano files:
- Keras 1 recurrent layers store one W/U/b per gate: LSTM as i, c, f, o (12 arrays), GRU as z, r, h
  (9 arrays); Keras 2 concatenates them as kernel/recurrent_kernel/bias in i, f, c, o and z, r, h order.
- Keras 1 `dim_ordering='th'` convolution kernels are (filters, in, rows, cols); Conv1D kernels are 4-D.
- Keras 1.0.0-1.0.5 BatchNormalization kept a real standard deviation in `running_std` and divided
  by (std + epsilon); later 1.x kept the variance there under the same name (Keras issue #3484).
- The Theano backend computes a true convolution, so its kernels are flipped along every spatial
  axis relative to TensorFlow's cross-correlation (Keras 2.0-2.2 flipped them on load).
- Bidirectional stores forward_* then backward_*; TimeDistributed stores its inner layer's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import WeightsError
from converter.ir import Node
from converter.keras.cudnn import cudnn_to_canonical, is_cudnn_weights
from converter.layers.registry import LAYERS


def kernel_rank(kind: str) -> int | None:
    """The rank of the class's kernel where Keras 1 / Theano files lay its axes out differently (the
    handler's `legacy_kernel_rank`; Conv1D: 4 in Keras 1 files, handled before the check); else None."""
    handler = LAYERS.get(kind)
    return None if handler is None else handler.legacy_kernel_rank.get(kind)


class _LegacyKernelKinds:
    """`kind in CONV_KINDS`: the classes whose kernels the rules below move (asked of the handlers)."""

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and kernel_rank(kind) is not None


CONV_KINDS = _LegacyKernelKinds()


@dataclass(frozen=True)
class WeightOrigin:
    """What the file says about who wrote the weights (the backend may be a user override)."""

    keras_version: str | None = None
    backend: str | None = None
    # Keras 1 by version or, where no version is recorded, by the config's Keras-1-only spellings.
    keras1: bool = False

    @property
    def theano(self) -> bool:
        return (self.backend or "").lower() == "theano"


def upgrade_weights(node: Node, arrays: list[np.ndarray], origin: WeightOrigin) -> list[np.ndarray]:
    """The arrays of one layer, in the order and shapes the canonical handler expects."""
    arrays = [np.asarray(a) for a in arrays]
    if node.kind == "Bidirectional" and node.children:
        half = len(arrays) // 2
        forward = node.children[0]
        backward = node.children[1] if len(node.children) > 1 else forward
        return upgrade_weights(forward, arrays[:half], origin) + upgrade_weights(backward, arrays[half:], origin)
    if node.kind == "TimeDistributed" and node.children:
        return upgrade_weights(node.children[0], arrays, origin)
    if node.kind == "SpectralNormalization":
        return spectral_norm_order(arrays)
    if is_cudnn_weights(node.kind, arrays):
        arrays = cudnn_to_canonical(node.kind, arrays)  # CuDNNLSTM / CuDNNGRU, recognised as tf_keras does
    elif node.kind in ("LSTM", "ConvLSTM2D") and len(arrays) == 12:
        arrays = merge_gates(_same_gate_shapes(node, arrays), (0, 2, 1, 3))  # stored i, c, f, o -> i, f, c, o
    elif node.kind == "GRU" and len(arrays) == 9:
        arrays = merge_gates(_same_gate_shapes(node, arrays), (0, 1, 2))  # stored z, r, h, the canonical order
    if node.kind == "BatchNormalization" and origin.keras1 and len(arrays) == 4 and _std_era(origin.keras_version):
        arrays = std_to_variance(arrays, float(node.attr("epsilon", 1e-3)))
    if kernel_rank(node.kind) is not None and arrays:
        arrays = _upgrade_conv(node, arrays, origin)
    return _int8_bias_first(arrays)


def _int8_bias_first(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Keras 3's legacy .h5 lists a model.quantize("int8") Dense/EinsumDense's weights trainable first:
    bias, then the int8 kernel and its scale; the canonical order (a .keras archive's) is kernel, bias,
    kernel_scale. Told by the dtypes, which no float layer's arrays have."""
    if len(arrays) == 3 and arrays[0].dtype != np.int8 and arrays[1].dtype == np.int8:
        return [arrays[1], arrays[0], arrays[2]]
    return arrays


def merge_gates(arrays: list[np.ndarray], order: tuple[int, ...]) -> list[np.ndarray]:
    """Per-gate (W, U, b) triples -> [kernel, recurrent_kernel, bias], gates concatenated in `order`."""
    gates = [arrays[3 * g: 3 * g + 3] for g in order]
    return [np.concatenate([gate[part] for gate in gates], axis=-1) for part in range(3)]


def _same_gate_shapes(node: Node, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Keras 1 per-gate arrays (W, U, b per gate) are concatenated gate by gate: each part's arrays must
    have one shape in every gate."""
    for part, label in enumerate(("W", "U", "b")):
        shapes = {arrays[3 * gate + part].shape for gate in range(len(arrays) // 3)}
        if len(shapes) > 1:
            raise WeightsError(f"{node.kind} '{node.layer_name}': the per-gate {label} arrays of the file differ in "
                               f"shape ({', '.join(str(s) for s in sorted(shapes))})", layer=node.layer_name,
                               hint="is this the weights file saved from this model?")
    return arrays


def _std_era(version: str | None) -> bool:
    parts = str(version).split(".")
    try:
        return parts[0] == "1" and parts[1] == "0" and int(parts[2].split("-")[0]) < 6
    except (IndexError, ValueError):
        return False


def std_to_variance(arrays: list[np.ndarray], epsilon: float) -> list[np.ndarray]:
    """Keras 1.0.x: y = gamma (x - mean) / (std + eps) + beta. With var = (std + eps)^2 - eps the
    canonical y = gamma (x - mean) / sqrt(var + eps) + beta is the same function."""
    gamma, beta, mean, std = arrays
    return [gamma, beta, mean, (np.square(std.astype(np.float64) + epsilon) - epsilon).astype(std.dtype)]


def _upgrade_conv(node: Node, arrays: list[np.ndarray], origin: WeightOrigin) -> list[np.ndarray]:
    arrays = list(arrays)
    channels_first = node.attr("data_format") == "channels_first"
    if node.kind == "Conv1D" and arrays[0].ndim == 4:
        arrays[0] = conv1d_kernel(arrays[0], _int(_kernel_size(node)), _int(node.attrs.get("filters")))
    if origin.keras1 or origin.theano:  # the rules below move the kernel's axes
        _check_kernel_ranks(node, arrays)
    if node.kind in ("Conv2D", "ConvLSTM2D") and origin.keras1 and channels_first:
        arrays[0] = np.transpose(arrays[0], (2, 3, 1, 0))
        if node.kind == "ConvLSTM2D":
            arrays[1] = np.transpose(arrays[1], (2, 3, 1, 0))
    elif node.kind == "Conv2DTranspose" and origin.keras1:
        arrays[0] = np.transpose(arrays[0], (2, 3, 0, 1) if channels_first else (0, 1, 3, 2))
    elif node.kind == "Conv3D" and origin.keras1 and channels_first:
        arrays[0] = np.transpose(arrays[0], (2, 3, 4, 1, 0))
    if origin.theano:
        arrays[0] = flip_spatial(arrays[0])
        if node.kind == "ConvLSTM2D":
            arrays[1] = flip_spatial(arrays[1])
    return arrays


def _check_kernel_ranks(node: Node, arrays: list[np.ndarray]) -> None:
    """The transposes and flips below index the kernel's axes: a kernel of another rank is refused here."""
    kernels = arrays[:2] if node.kind == "ConvLSTM2D" else arrays[:1]
    want = kernel_rank(node.kind)
    for name, kernel in zip(("kernel", "recurrent_kernel"), kernels):
        if kernel.ndim != want:
            raise WeightsError(f"{node.kind} '{node.layer_name}': the file's {name} has shape {kernel.shape}, "
                               f"not the {want} dimensions of a {node.kind} kernel", layer=node.layer_name,
                               hint="is this the weights file saved from this model?")
    if node.kind == "ConvLSTM2D" and len(arrays) < 2:
        raise WeightsError(f"ConvLSTM2D '{node.layer_name}': the file holds no recurrent kernel",
                           layer=node.layer_name, hint="is this the weights file saved from this model?")


def _kernel_size(node: Node) -> Any:
    value = node.attrs.get("kernel_size", 1)
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _int(value: Any) -> int:
    """A config number used only to recognise a stored layout (-1 where the config gives none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def conv1d_kernel(kernel: np.ndarray, length: int, filters: int) -> np.ndarray:
    """Keras 1.2 stored (length, 1, in, filters); Keras 1.1 stored (filters, in, length, 1)."""
    if kernel.shape[:2] != (length, 1) or kernel.shape[3] != filters:
        kernel = np.transpose(kernel, (2, 3, 1, 0))
    return kernel[:, 0, :, :]


def flip_spatial(kernel: np.ndarray) -> np.ndarray:
    """Reverse every spatial axis (all but the last two, which are in/out channels)."""
    index = tuple([slice(None, None, -1)] * (kernel.ndim - 2) + [slice(None)] * 2)
    return np.ascontiguousarray(kernel[index])


def spectral_norm_order(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """SpectralNormalization -> [wrapped layer's arrays..., vector_u]. Legacy h5 stores that order; a
    Keras 3 zip stores the wrapper's own vars first, `[kernel, vector_u]` (its `kernel` attribute
    aliases the wrapped layer's kernel, so it is saved twice), then the wrapped layer's vars."""
    first = arrays[0] if arrays else None
    if (first is not None and len(arrays) >= 3 and arrays[2].shape == first.shape
            and np.array_equal(arrays[2], first) and arrays[1].ndim == 2 and arrays[1].shape[0] == 1):
        return [*arrays[2:], arrays[1]]
    return arrays
