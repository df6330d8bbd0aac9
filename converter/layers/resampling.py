"""TensorFlow's resampling weights, computed in numpy so Resizing matches tf.image.resize exactly."""

from __future__ import annotations

import numpy as np


def tf_nearest_indices(in_size: int, out_size: int) -> list[int]:
    """Source index per output pixel of TF's half-pixel nearest neighbour: floor((o + 0.5) * in/out) in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    return [min(int(np.floor((np.float32(o) + np.float32(0.5)) * scale)), in_size - 1) for o in range(out_size)]


def _keys_table(a: float = -0.5, size: int = 1024) -> np.ndarray:
    """TF's coefficient table: entry i holds the Keys kernel at i/size (near tap) and 1 + i/size (far tap)."""
    t = np.arange(size + 1, dtype=np.float32) / np.float32(size)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far_t = t + 1
    far = ((a * far_t - 5 * a) * far_t + 8 * a) * far_t - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


def tf_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of tf.image.resize bicubic (half-pixel centres, taps outside dropped, renormalised)."""
    table, size = _keys_table(), 1024
    scale = np.float32(in_size) / np.float32(out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    for out in range(out_size):
        loc = (np.float32(out) + np.float32(0.5)) * scale - np.float32(0.5)
        base = int(np.floor(loc))
        offset = int(np.rint(np.float32(loc - base) * size))
        taps = {base - 1: table[offset, 1], base: table[offset, 0],
                base + 1: table[size - offset, 0], base + 2: table[size - offset, 1]}
        kept = {i: w for i, w in taps.items() if 0 <= i < in_size}
        total = np.float32(sum(kept.values()))
        for i, w in kept.items():
            matrix[out, i] += w / total if abs(total) >= 1000 * np.finfo(np.float32).tiny else w
    return matrix
