"""Preprocessing layers that live inside models: Rescaling, Normalization, Resizing, CenterCrop."""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_rank

FLOAT_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
# Keras' backend.epsilon(), the floor on Normalization's standard deviation (Keras 2 and 3).
KERAS_EPSILON = 1e-7


def as_float(node: Node, b: OpBuilder, x: str) -> str:
    """Preprocessing layers cast integer images (uint8 pixels) to float before computing."""
    return x if node.inputs[0].dtype in FLOAT_DTYPES else b.op("Cast", x, to=1)


@LAYERS.register("Rescaling")
class Rescaling(LayerHandler):
    """x * scale + offset; scale and offset are scalars or per-channel lists (last axis)."""

    def is_layout_agnostic(self, node: Node) -> bool:
        return all(np.size(node.attr(k, 0.0)) == 1 for k in ("scale", "offset"))

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Per-channel constants broadcast on Keras' last axis, which then sits at perm.index(rank - 1)."""
        if not all(len(t.shape or ()) == len(perm) for t in (*node.inputs, *node.outputs)):
            return False
        if not self.is_layout_agnostic(node):
            node.attrs["constants_axis"] = perm.index(len(perm) - 1)
        return True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = as_float(node, b, inputs[0])
        scale = _along(node, np.asarray(node.attr("scale", 1.0), np.float32))
        offset = _along(node, np.asarray(node.attr("offset", 0.0), np.float32))
        # x * 1 and x + 0 are x: the common Rescaling(1/255) needs no Add (each is a pass over the image)
        y = x if np.all(scale == 1) else b.op("Mul", x, b.const(scale, "scale"))
        return [y if np.all(offset == 0) else b.op("Add", y, b.const(offset, "offset"))]


def _along(node: Node, constant: np.ndarray) -> np.ndarray:
    """A per-channel constant shaped to broadcast where the layout pass put the channels."""
    axis, rank = node.attrs.get("constants_axis"), len(node.inputs[0].shape or ())
    if axis is None or constant.size == 1:
        return constant
    return constant.reshape(constant.size, *([1] * (rank - 1 - int(axis))))


@LAYERS.register("Normalization")
class Normalization(LayerHandler):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse; statistics adapted (weights) or given."""

    def weight_names(self, node: Node) -> list[str]:
        return ["mean", "variance", "count"] if node.attrs.get("mean") is None else []

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """One kept axis (the channels) moves to where the layout pass puts it; statistics over
        several axes would need their arrays permuted too, so those keep Keras' layout."""
        rank = len(perm)
        if not all(len(t.shape or ()) == rank for t in (*node.inputs, *node.outputs)):
            return False
        keep = _keep_axes(node, rank)
        if len(keep) > 1:
            return False
        if keep:
            node.attrs["axis"] = perm.index(keep[0])
        return True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        for a in _keep_axes(node, len(shape)):
            if not isinstance(shape[a], int):
                raise ShapeError(f"Normalization '{node.layer_name}' keeps axis {a}, whose size is unknown "
                                 f"in {shape}", layer=node.layer_name, hint="give the input a static size there")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = as_float(node, b, inputs[0]), node.inputs[0].shape or ()
        mean, variance = _statistics(node, shape)
        std = np.maximum(np.sqrt(variance), np.float32(KERAS_EPSILON)).astype(np.float32)
        if node.attr("invert", False):
            return [b.op("Add", b.op("Mul", x, b.const(std, "std")), b.const(mean, "mean"))]
        return [b.op("Div", b.op("Sub", x, b.const(mean, "mean")), b.const(std, "std"))]


def _keep_axes(node: Node, rank: int) -> list[int]:
    axis = node.attrs.get("axis", -1)
    if axis is None:
        return []
    values = [axis] if isinstance(axis, int) else list(axis)
    return sorted(int(a) % rank for a in values)


def _statistics(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance in the input's rank, reshaped the way Keras broadcasts them."""
    keep = _keep_axes(node, len(shape))
    broadcast = [int(d) if a in keep and isinstance(d, int) else 1 for a, d in enumerate(shape)]
    if node.attrs.get("mean") is None:
        return (np.reshape(node.weights["mean"], broadcast).astype(np.float32),
                np.reshape(node.weights["variance"], broadcast).astype(np.float32))
    return _given(node.attrs["mean"], keep, broadcast), _given(node.attrs.get("variance"), keep, broadcast)


def _given(value: Any, keep: list[int], broadcast: list[int]) -> np.ndarray:
    """A config mean/variance: a scalar broadcasts; an array fills the last kept axes (Keras' rule)."""
    array = np.asarray(value, np.float32)
    if array.ndim == 0:
        return np.broadcast_to(array, broadcast).astype(np.float32)
    expanded = [1] * len(broadcast)
    for i in range(1, array.ndim + 1):
        expanded[keep[-i]] = array.shape[-i]
    return np.broadcast_to(np.reshape(array, expanded), broadcast).astype(np.float32)


# Keras interpolation -> ONNX Resize attributes that reproduce tf.image.resize (half-pixel centres).
RESIZE_MODES: dict[str, dict[str, Any]] = {
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    # TF picks floor((out + 0.5) * in / out): ONNX's tf_half_pixel_for_nn with floor is that formula.
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn",
                "nearest_mode": "floor"},
}
INTERPOLATIONS = (*RESIZE_MODES, "bicubic")


@LAYERS.register("Resizing")
class Resizing(LayerHandler):
    """tf.image.resize to (height, width); runs channels_first (ONNX Resize's home layout)."""

    channels_first_only = True

    def check(self, node: Node) -> None:
        interpolation = str(node.attr("interpolation", "bilinear"))
        if interpolation not in INTERPOLATIONS:
            _refuse(node, f"interpolation={interpolation!r}", "supported: " + ", ".join(INTERPOLATIONS))
        if node.attr("antialias", False):
            _refuse(node, "antialias=True", "ONNX Resize has no antialiasing filter matching TF's")
        if node.attr("pad_to_aspect_ratio", False):
            _refuse(node, "pad_to_aspect_ratio=True", "use crop_to_aspect_ratio or pad before the model")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 4, "(batch, height, width, channels)")
        size = (int(node.attrs["height"]), int(node.attrs["width"]))
        if node.attr("data_format") == "channels_first":
            return [(shape[0], shape[1], *size)]
        return [(shape[0], *size, shape[3])]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = as_float(node, b, inputs[0]), node.inputs[0].shape or ()
        height, width = int(node.attrs["height"]), int(node.attrs["width"])
        in_hw: Shape = (shape[2], shape[3])
        if node.attr("crop_to_aspect_ratio", False):
            x, in_hw = _crop_to_aspect(node, b, x, in_hw, height, width)
        interpolation = str(node.attr("interpolation", "bilinear"))
        if interpolation == "bicubic":
            return [_bicubic(node, b, x, in_hw, height, width)]
        if interpolation == "nearest" and all(isinstance(d, int) for d in in_hw):
            # TF picks its source pixels in float32; Gather with the same indices avoids ONNX's own
            # rounding, which differs where (out + 0.5) * in / out lands on an integer.
            for axis, n_in, n_out in ((2, in_hw[0], height), (3, in_hw[1], width)):
                if isinstance(n_in, int):
                    x = b.op("Gather", x, b.ints(tf_nearest_indices(n_in, n_out), "indices"), axis=axis)
            return [x]
        sizes = b.op("Concat", b.slice(b.op("Shape", x), [0], [2], [0]), b.ints([height, width], "size"), axis=0)
        return [b.op("Resize", x, "", "", sizes, **RESIZE_MODES[interpolation])]


def _bicubic(node: Node, b: OpBuilder, x: str, in_hw: Shape, height: int, width: int) -> str:
    """TF's bicubic quantises its kernel to a 1024-entry table, which ONNX's exact cubic cannot match;
    the same weights as two interpolation matrices do: out = Rh @ x @ Rw^T on the (H, W) axes."""
    in_h, in_w = in_hw
    if not isinstance(in_h, int) or not isinstance(in_w, int):
        _refuse(node, "bicubic interpolation on an input of unknown height or width",
                "give the model input a static image size")
        return x
    across = b.op("MatMul", x, b.const(tf_bicubic_matrix(in_w, width).T.copy(), "columns"))
    return b.op("MatMul", b.const(tf_bicubic_matrix(in_h, height), "rows"), across)


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


def _refuse(node: Node, what: str, hint: str) -> None:
    raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' uses {what}, which kconvert cannot match exactly",
                                layer=node.layer_name, hint=hint)


def _crop_to_aspect(node: Node, b: OpBuilder, x: str, in_hw: Shape, height: int, width: int) -> tuple[str, Shape]:
    """Keras' centred crop to the target aspect ratio (float32 arithmetic, truncation), NCHW."""
    in_h, in_w = in_hw
    if not isinstance(in_h, int) or not isinstance(in_w, int):
        _refuse(node, "crop_to_aspect_ratio=True on an input of unknown height or width",
                "give the model input a static image size")
        return x, in_hw
    crop_h = max(min(in_h, int(np.float32(in_w * height) / np.float32(width))), 1)
    crop_w = max(min(in_w, int(np.float32(in_h * width) / np.float32(height))), 1)
    top, left = int(np.float32(in_h - crop_h) / 2), int(np.float32(in_w - crop_w) / 2)
    return b.slice(x, [top, left], [top + crop_h, left + crop_w], [2, 3]), (crop_h, crop_w)


@LAYERS.register("CenterCrop")
class CenterCrop(LayerHandler):
    """The centred (height, width) window; smaller inputs (which Keras resizes instead) are refused."""

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 4, "(batch, height, width, channels)")
        h_axis, w_axis = _spatial_axes(node)
        size = (int(node.attrs["height"]), int(node.attrs["width"]))
        for axis, want in zip((h_axis, w_axis), size):
            have = shape[axis]
            if not isinstance(have, int) or have < want:
                _refuse(node, f"an input of size {have} on axis {axis} (target {want})",
                        "CenterCrop only crops statically larger inputs; smaller ones Keras resizes")
        out = list(shape)
        out[h_axis], out[w_axis] = size
        return [tuple(out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        shape = node.inputs[0].shape or ()
        h_axis, w_axis = _spatial_axes(node)
        height, width = int(node.attrs["height"]), int(node.attrs["width"])
        top, left = (int(shape[h_axis]) - height) // 2, (int(shape[w_axis]) - width) // 2  # type: ignore[arg-type]
        x = as_float(node, b, inputs[0])
        return [b.slice(x, [top, left], [top + height, left + width], [h_axis, w_axis])]


def _spatial_axes(node: Node) -> tuple[int, int]:
    return (2, 3) if node.attr("data_format") == "channels_first" else (1, 2)
