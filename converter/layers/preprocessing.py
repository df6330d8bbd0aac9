"""Preprocessing layers that live inside models: Rescaling, Normalization, Resizing, CenterCrop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import FormatError, ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.axes import resolve_axes
from converter.layers.builder import OpBuilder
from converter.layers.limits import MAX_TABLE_ENTRIES, check_elements, check_output
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.resampling import tf_bicubic_matrix, tf_nearest_indices
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import CHANNELS_FIRST, CHANNELS_LAST, parse_data_format

FLOAT_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
# Keras' backend.epsilon(), the floor on Normalization's standard deviation (Keras 2 and 3).
KERAS_EPSILON = 1e-7


# A number, or a (nested) list of numbers kept as tuples: Rescaling's constants, Normalization's statistics.
Numbers = float | tuple[Any, ...]


def as_float(node: Node, b: OpBuilder, x: str) -> str:
    """Preprocessing layers cast integer images (uint8 pixels) to float before computing."""
    return x if node.inputs[0].dtype in FLOAT_DTYPES else b.op("Cast", x, to=1)


def frozen(value: Any) -> Any:
    """A config list as nested tuples (specs are frozen); numbers stay as they are."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def shown(value: Any) -> Any:
    """A frozen value as the config wrote it (lists), for messages that quote it."""
    return [shown(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class RescalingSpec(LayerSpec):
    scale: Numbers = 1.0
    offset: Numbers = 0.0
    # Where the per-channel constants broadcast once the layout pass moved the channels (None: last axis).
    constants_axis: int | None = None


@LAYERS.register("Rescaling")
class Rescaling(LayerHandler[RescalingSpec]):
    """x * scale + offset; scale and offset are scalars or per-channel lists (last axis)."""

    keras3_args = "scale offset"

    passes_mask = True

    argument_kinds = {"scale": "numbers", "offset": "numbers"}

    def parse(self, config: Config) -> RescalingSpec:
        return RescalingSpec(scale=frozen(config.value("scale", 1.0)), offset=frozen(config.value("offset", 0.0)))

    def is_layout_agnostic(self, node: Node) -> bool:
        spec = self.spec(node)
        return all(_size(value) == 1 for value in (spec.scale, spec.offset))

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Per-channel constants broadcast on Keras' last axis, which then sits at perm.index(rank - 1)."""
        if not all(len(t.shape or ()) == len(perm) for t in (*node.inputs, *node.outputs)):
            return False
        if not self.is_layout_agnostic(node):
            node.spec = self.spec(node).replace(constants_axis=perm.index(len(perm) - 1))
        return True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        for key, value in (("scale", spec.scale), ("offset", spec.offset)):
            _channel_constant(node, key, value, input_shapes[0])
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, spec = as_float(node, b, inputs[0]), self.spec(node)
        scale = _along(node, spec.constants_axis, np.asarray(spec.scale, np.float32))
        offset = _along(node, spec.constants_axis, np.asarray(spec.offset, np.float32))
        # x * 1 and x + 0 are x: the common Rescaling(1/255) needs no Add (each is a pass over the image)
        y = x if np.all(scale == 1) else b.op("Mul", x, b.const(scale, "scale"))
        return [y if np.all(offset == 0) else b.op("Add", y, b.const(offset, "offset"))]


def _size(value: Numbers) -> int:
    try:
        return int(np.size(value))
    except ValueError:  # a ragged nested list: not one number (output_shapes says why)
        return 2


def _channel_constant(node: Node, key: str, value: Numbers, shape: Shape) -> np.ndarray:
    """Rescaling's scale / offset: a number, or one value per channel (the last axis, as Keras broadcasts)."""
    try:
        array: np.ndarray | None = np.asarray(value, np.float32)
    except ValueError:  # a ragged nested list
        array = None
    last = shape[-1] if shape else None
    per_channel = array is not None and 1 <= array.ndim <= len(shape) and array.size == array.shape[-1] and \
        (not isinstance(last, int) or array.size == last)
    if array is None or not (array.size == 1 or per_channel):
        raise ShapeError(f"Rescaling '{node.layer_name}' has {key}={shown(value)!r:.60}, which does not broadcast "
                         f"over the last axis of its input {tuple(shape)}", layer=node.layer_name,
                         hint=f"{key} is a number or one value per channel (the input's last axis)")
    return array


def _along(node: Node, axis: int | None, constant: np.ndarray) -> np.ndarray:
    """A per-channel constant shaped to broadcast where the layout pass put the channels."""
    rank = len(node.inputs[0].shape or ())
    if axis is None or constant.size == 1:
        return constant
    return constant.reshape(constant.size, *([1] * (rank - 1 - axis)))


@dataclass(frozen=True)
class NormalizationSpec(LayerSpec):
    # The kept axes as the config gave them (an int or a list; () when null: no axis kept).
    axis: int | tuple[int, ...] = -1
    # Statistics given in the config; None: adapted, stored as weights.
    mean: Numbers | None = None
    variance: Numbers | None = None
    invert: bool = False


@LAYERS.register("Normalization")
class Normalization(LayerHandler[NormalizationSpec]):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse; statistics adapted (weights) or given."""

    keras3_args = "axis mean variance invert"

    passes_mask = True

    argument_kinds = {"mean": "numbers", "variance": "numbers"}

    def parse(self, config: Config) -> NormalizationSpec:
        raw_axis = config.raw.get("axis", -1)  # an explicit null keeps no axis; a missing one is Keras' -1
        axis = raw_axis if isinstance(raw_axis, int) else tuple(int(a) for a in raw_axis or ())
        return parse_fields(NormalizationSpec, config, axis=axis, mean=frozen(config.value("mean")),
                            variance=frozen(config.value("variance")))

    def weight_names(self, node: Node) -> list[str]:
        return ["mean", "variance", "count"] if self.spec(node).mean is None else []

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
            node.spec = self.spec(node).replace(axis=perm.index(keep[0]))
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
        if self.spec(node).mean is not None:
            _statistics(node, input_shapes[0])  # statistics given in the config must fit the kept axes
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = as_float(node, b, inputs[0]), node.inputs[0].shape or ()
        mean, variance = _statistics(node, shape)
        std = np.maximum(np.sqrt(variance), np.float32(KERAS_EPSILON)).astype(np.float32)
        if self.spec(node).invert:
            return [b.op("Add", b.op("Mul", x, b.const(std, "std")), b.const(mean, "mean"))]
        return [b.op("Div", b.op("Sub", x, b.const(mean, "mean")), b.const(std, "std"))]


def _normalization(node: Node) -> NormalizationSpec:
    spec = node.spec
    assert isinstance(spec, NormalizationSpec)  # parsed at the boundary
    return spec


def _keep_axes(node: Node, rank: int) -> list[int]:
    axis = _normalization(node).axis
    if axis == ():
        return []
    return resolve_axes(node, "axis", axis if isinstance(axis, int) else list(axis), rank)


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
    keep, spec = _keep_axes(node, len(shape)), _normalization(node)
    broadcast = [int(d) if a in keep and isinstance(d, int) else 1 for a, d in enumerate(shape)]
    if spec.mean is None:
        return (np.reshape(node.weights["mean"], broadcast).astype(np.float32),
                np.reshape(node.weights["variance"], broadcast).astype(np.float32))
    return (_given(node, "mean", spec.mean, keep, broadcast),
            _given(node, "variance", spec.variance, keep, broadcast))


def _given(node: Node, key: str, value: Numbers | None, keep: list[int], broadcast: list[int]) -> np.ndarray:
    """A config mean/variance: a scalar broadcasts; an array fills the last kept axes (Keras' rule)."""
    try:
        array = np.asarray(value, np.float32) if value is not None else None
    except ValueError:  # a ragged nested list
        array = None
    fits = array is not None and (array.ndim == 0 or (array.ndim <= len(keep) and all(
        array.shape[-i] in (1, broadcast[keep[-i]]) for i in range(1, array.ndim + 1))))
    if array is None or not fits:
        raise FormatError(f"Normalization '{node.layer_name}' has {key}={shown(value)!r:.60}, which does not fit "
                          f"the kept axes {keep} of sizes {[broadcast[a] for a in keep]}", layer=node.layer_name,
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


@dataclass(frozen=True)
class CenterCropSpec(LayerSpec):
    height: int
    width: int
    data_format: str = CHANNELS_LAST


@dataclass(frozen=True)
class ResizingSpec(CenterCropSpec):
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    antialias: bool = False


@LAYERS.register("Resizing")
class Resizing(LayerHandler[ResizingSpec]):
    """tf.image.resize to (height, width); runs channels_first (ONNX Resize's home layout)."""

    keras3_args = ("height width interpolation crop_to_aspect_ratio pad_to_aspect_ratio fill_mode "
                   "fill_value antialias data_format")

    channels_first_only = True

    required_arguments = ("height", "width")

    def parse(self, config: Config) -> ResizingSpec:
        return parse_fields(ResizingSpec, config, data_format=parse_data_format(config))

    def check(self, node: Node) -> None:
        spec = self.spec(node)
        if spec.interpolation not in INTERPOLATIONS:
            _refuse(node, f"interpolation={spec.interpolation!r}", "supported: " + ", ".join(INTERPOLATIONS))
        if spec.antialias:
            _refuse(node, "antialias=True", "ONNX Resize has no antialiasing filter matching TF's")
        if spec.pad_to_aspect_ratio:
            _refuse(node, "pad_to_aspect_ratio=True", "use crop_to_aspect_ratio or pad before the model")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, spec = input_shapes[0], self.spec(node)
        expect_rank(node, shape, 4, "(batch, height, width, channels)")
        size = (spec.height, spec.width)
        first = spec.data_format == CHANNELS_FIRST
        _check_tables(node, size, (shape[2], shape[3]) if first else shape[1:3])
        if first:
            return [check_output(node, (shape[0], shape[1], *size), "height and width")]
        return [check_output(node, (shape[0], *size, shape[3]), "height and width")]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x, shape = as_float(node, b, inputs[0]), node.inputs[0].shape or ()
        spec = self.spec(node)
        height, width = spec.height, spec.width
        in_hw: Shape = (shape[2], shape[3])
        if spec.crop_to_aspect_ratio:
            x, in_hw = _crop_to_aspect(node, b, x, in_hw, height, width)
        interpolation = spec.interpolation
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
class CenterCrop(LayerHandler[CenterCropSpec]):
    """The centred (height, width) window; smaller inputs (which Keras resizes instead) are refused."""

    keras3_args = "height width data_format"

    required_arguments = ("height", "width")

    def parse(self, config: Config) -> CenterCropSpec:
        return parse_fields(CenterCropSpec, config, data_format=parse_data_format(config))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 4, "(batch, height, width, channels)")
        h_axis, w_axis = _spatial_axes(self.spec(node))
        size = (self.spec(node).height, self.spec(node).width)
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
        h_axis, w_axis = _spatial_axes(self.spec(node))
        height, width = self.spec(node).height, self.spec(node).width
        top, left = (int(shape[h_axis]) - height) // 2, (int(shape[w_axis]) - width) // 2  # type: ignore[arg-type]
        x = as_float(node, b, inputs[0])
        return [b.slice(x, [top, left], [top + height, left + width], [h_axis, w_axis])]


def _spatial_axes(spec: CenterCropSpec) -> tuple[int, int]:
    return (2, 3) if spec.data_format == CHANNELS_FIRST else (1, 2)
