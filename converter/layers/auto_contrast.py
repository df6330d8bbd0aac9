"""AutoContrast (Keras 3): stretches each image's values to the full value range; it acts at inference too.

As `AutoContrast.transform_images` computes it: map `value_range` to [0, 255], take the min and max over
axes (1, 2) of the batch (height and width for channels_last images), y = clip(x * 255 / (max - min) -
min * 255 / (max - min), 0, 255), map back to `value_range`, and keep the input where the result is NaN
(a constant image, whose max equals its min).
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.preprocessing import as_float
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec


@dataclass(frozen=True)
class AutoContrastSpec(LayerSpec):
    value_range: tuple[float, float] = (0.0, 255.0)  # sorted: (min, max)


def _range(config: Config) -> tuple[float, float]:
    value = config.value("value_range", [0, 255])
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UnsupportedLayerError(f"AutoContrast '{config.ctx.layer_name}' has value_range={value!r}",
                                    layer=config.ctx.layer_name, hint="value_range must be (min, max)")
    low, high = sorted(float(v) for v in value)
    return low, high


def _rescale(b: OpBuilder, x: str, source: tuple[float, float], target: tuple[float, float]) -> str:
    """Keras' _transform_value_range: (x - lo) / (hi - lo) * (t_hi - t_lo) + t_lo, skipped when equal."""
    if source == target:
        return x
    unit = b.op("Div", b.op("Sub", x, b.scalar(source[0], "source_min")), b.scalar(source[1] - source[0], "span"))
    return b.op("Add", b.op("Mul", unit, b.scalar(target[1] - target[0], "target_span")), b.scalar(target[0], "t_min"))


@LAYERS.register("AutoContrast")
class AutoContrast(LayerHandler[AutoContrastSpec]):
    keras_availability = "keras3"

    def parse(self, config: Config) -> AutoContrastSpec:
        return AutoContrastSpec(value_range=_range(config))

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        expect_rank(node, input_shapes[0], 4, "(batch, height, width, channels)")
        return [input_shapes[0]]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        original = as_float(node, b, inputs[0])
        value_range = self.spec(node).value_range
        images = _rescale(b, original, value_range, (0.0, 255.0))
        low = b.reduce("ReduceMin", images, [1, 2], keepdims=True)
        high = b.reduce("ReduceMax", images, [1, 2], keepdims=True)
        scale = b.op("Div", b.scalar(255.0, "full"), b.op("Sub", high, low))
        offset = b.op("Mul", b.op("Neg", low), scale)
        stretched = b.op("Add", b.op("Mul", images, scale), offset)
        clipped = b.op("Clip", stretched, b.scalar(0.0, "zero"), b.scalar(255.0, "full"))
        results = _rescale(b, clipped, (0.0, 255.0), value_range)
        return [b.op("Where", b.op("IsNaN", results), original, results)]
