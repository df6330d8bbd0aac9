"""Preprocessing layers that live inside models: Rescaling, Normalization, Resizing, CenterCrop."""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import FormatError, ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import resolve_axes
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.resampling import tf_bicubic_matrix, tf_nearest_indices
from converter.layers.windows import data_format

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

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        for key, default in (("scale", 1.0), ("offset", 0.0)):
            _channel_constant(node, key, default, input_shapes[0])
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = as_float(node, b, inputs[0])
        scale = _along(node, np.asarray(node.attr("scale", 1.0), np.float32))
        offset = _along(node, np.asarray(node.attr("offset", 0.0), np.float32))
        # x * 1 and x + 0 are x: the common Rescaling(1/255) needs no Add (each is a pass over the image)
        y = x if np.all(scale == 1) else b.op("Mul", x, b.const(scale, "scale"))
        return [y if np.all(offset == 0) else b.op("Add", y, b.const(offset, "offset"))]


def _channel_constant(node: Node, key: str, default: float, shape: Shape) -> np.ndarray:
    """Rescaling's scale / offset: a number, or one value per channel (the last axis, as Keras broadcasts)."""
    value = node.attr(key, default)
    try:
        array: np.ndarray | None = np.asarray(value, np.float32)
    except ValueError:  # a ragged nested list
        array = None
    last = shape[-1] if shape else None
    per_channel = array is not None and 1 <= array.ndim <= len(shape) and array.size == array.shape[-1] and \
        (not isinstance(last, int) or array.size == last)
    if array is None or not (array.size == 1 or per_channel):
        raise ShapeError(f"Rescaling '{node.layer_name}' has {key}={value!r:.60}, which does not broadcast over the "
                         f"last axis of its input {tuple(shape)}", layer=node.layer_name,
                         hint=f"{key} is a number or one value per channel (the input's last axis)")
    return array


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

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        """Adapted statistics hold one value per kept position (Keras stores them with the kept dims;
        any array of that many values is read, reshaped the way Keras broadcasts it)."""
        kept = tuple(_kept_dims(node, input_shapes[0]))
        count = int(np.prod(kept))
        return {key: tuple(w.shape) if w.size == count else kept
                for key, w in node.weights.items() if key in ("mean", "variance")}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        _kept_dims(node, input_shapes[0])
        if node.attrs.get("mean") is not None:
            _statistics(node, input_shapes[0])  # statistics given in the config must fit the kept axes
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = as_float(node, b, inputs[0]), node.inputs[0].shape or ()
        mean, variance = _statistics(node, shape)
        std = np.maximum(np.sqrt(variance), np.float32(KERAS_EPSILON)).astype(np.float32)
        if node.attr("invert", False):
            return [b.op("Add", b.op("Mul", x, b.const(std, "std")), b.const(mean, "mean"))]
        return [b.op("Div", b.op("Sub", x, b.const(mean, "mean")), b.const(std, "std"))]


def _keep_axes(node: Node, rank: int) -> list[int]:
    axis = node.attrs.get("axis", -1)
    return [] if axis is None or axis == [] else resolve_axes(node, "axis", axis, rank)


def _kept_dims(node: Node, shape: Shape) -> list[int]:
    """The sizes of the kept axes, which must be static (the statistics have one value per position)."""
    dims: list[int] = []
    for a in _keep_axes(node, len(shape)):
        size = shape[a]
        if not isinstance(size, int):
            raise ShapeError(f"Normalization '{node.layer_name}' keeps axis {a}, whose size is unknown "
                             f"in {shape}", layer=node.layer_name, hint="give the input a static size there")
        dims.append(size)
    check_elements(node, dims, "mean and variance arrays", "axis (the kept input dims)")
    return dims


def _statistics(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance in the input's rank, reshaped the way Keras broadcasts them."""
    keep = _keep_axes(node, len(shape))
    broadcast = [int(d) if a in keep and isinstance(d, int) else 1 for a, d in enumerate(shape)]
    if node.attrs.get("mean") is None:
        return (np.reshape(node.weights["mean"], broadcast).astype(np.float32),
                np.reshape(node.weights["variance"], broadcast).astype(np.float32))
    return _given(node, "mean", keep, broadcast), _given(node, "variance", keep, broadcast)


def _given(node: Node, key: str, keep: list[int], broadcast: list[int]) -> np.ndarray:
    """A config mean/variance: a scalar broadcasts; an array fills the last kept axes (Keras' rule)."""
    value = node.attrs.get(key)
    try:
        array = np.asarray(value, np.float32) if value is not None else None
    except ValueError:  # a ragged nested list
        array = None
    fits = array is not None and (array.ndim == 0 or (array.ndim <= len(keep) and all(
        array.shape[-i] in (1, broadcast[keep[-i]]) for i in range(1, array.ndim + 1))))
    if array is None or not fits:
        raise FormatError(f"Normalization '{node.layer_name}' has {key}={value!r:.60}, which does not fit the kept "
                          f"axes {keep} of sizes {[broadcast[a] for a in keep]}", layer=node.layer_name,
                          hint="give mean and variance both, as scalars or with one value per kept position")
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
        data_format(node)
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
        _check_tables(node, size, (shape[2], shape[3]) if node.attr("data_format") == "channels_first" else shape[1:3])
        if node.attr("data_format") == "channels_first":
            return [check_output(node, (shape[0], shape[1], *size), "height and width")]
        return [check_output(node, (shape[0], *size, shape[3]), "height and width")]

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


def _check_tables(node: Node, size: tuple[int, int], in_hw: Shape) -> None:
    """nearest and bicubic resizing build per-pixel index tables and (out, in) weight matrices here."""
    check_elements(node, sum(size), "resampling index tables", "height and width", MAX_TABLE_ENTRIES)
    largest = max(o * (i if isinstance(i, int) else 1) for o, i in zip(size, in_hw))
    check_elements(node, largest, "a resampling matrix", "height and width")


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

    def check(self, node: Node) -> None:
        data_format(node)

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
