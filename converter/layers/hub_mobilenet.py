"""Keras Hub's MobileNet (v3) blocks (keras_hub/src/models/mobilenet/mobilenet_backbone.py, 0.32.0).

Keras Hub does not register these classes: a file names them by class (`registered_name`
"DepthwiseConvBlock") in module keras_hub.src.models.mobilenet.mobilenet_backbone, and
layer_configs.hub_layer_kind gives such entries the kind `keras_hub>DepthwiseConvBlock`.
- DepthwiseConvBlock: zero padding 1 (whatever the kernel size) -> depthwise conv (stride) + BN -> relu
  -> [squeeze-excite] -> 1x1 conv + BN [+ input when `residual`].
- InvertedResidualBlock: 1x1 conv to adjust_channels(expansion) + BN + act -> zero padding `padding` ->
  depthwise conv (stride) + BN + act -> [squeeze-excite] -> 1x1 conv + BN [+ input at stride 1 with
  infilters == filters].
- ConvBnActBlock: 1x1 conv + BN + act.
Squeeze-excite (SqueezeAndExcite2D, a ratio that is not 0/None): mean over height and width -> 1x1 conv
(bias) -> relu -> 1x1 conv (bias) -> hard_sigmoid, times x; bottleneck adjust_channels(filters * ratio).
Every BN has epsilon 1e-5. The depthwise convs are Conv2D with groups = channels.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Dim, Node, Shape
from converter.layers.activations import HARD_SIGMOID, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.hub_conv_blocks import Window, activate, bn_names, bn_shapes, conv_bn, conv_names, squeeze_excite
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec
from converter.layers.windows import CHANNELS_FIRST, channels_first_io, join_spatial, split_spatial

BN_EPSILON = 1e-5
MAX_CHANNELS = 1 << 16


def adjust_channels(x: float, divisor: int = 8, min_value: int | None = None) -> int:
    """keras_hub/src/models/mobilenet/util.py: a multiple of `divisor`, never 10% below x."""
    min_value = divisor if min_value is None else min_value
    new_x = max(min_value, int(x + divisor / 2) // divisor * divisor)
    if new_x < 0.9 * x:
        new_x += divisor
    return int(new_x)


@dataclass(frozen=True, kw_only=True)
class MobileBlockSpec(LayerSpec):
    """One spec for the three blocks; each reads the fields its class has."""

    infilters: int = 0
    filters: int
    expanded: int = 0  # InvertedResidualBlock: adjust_channels(expansion)
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    se_ratio: float = 0.0
    activation: str = "relu"
    residual: bool = False
    data_format: str = "channels_last"  # what the node computes in: the layout pass switches it

    def bottleneck(self, channels: int) -> int:
        return adjust_channels(channels * self.se_ratio)


def _size(config: Config, key: str, default: int | None = None, minimum: int = 1) -> int:
    value = config.value(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_CHANNELS:
        raise config.refuse(key, value, f"expected an integer from {minimum} to {MAX_CHANNELS}")
    return value


def _se_ratio(config: Config) -> float:
    """`if squeeze_excite_ratio:` in Keras Hub: None or 0 builds no squeeze-excite."""
    value = config.value("squeeze_excite_ratio")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 64:
        raise config.refuse("squeeze_excite_ratio", value, "expected null or a number from 0 to 64")
    return float(value)


def _residual_flag(config: Config) -> bool:
    value = config.value("residual", False)
    if not isinstance(value, bool):
        raise config.refuse("residual", value, "expected true or false")
    return value


class _MobileBlock(LayerHandler[MobileBlockSpec]):
    """Layout, shapes and the residual, shared by the three blocks (each computes channels-first)."""

    channels_first_only = True
    keras3_args = None  # a Keras Hub class, not a Keras built-in
    keras_availability = "file"

    def windows(self, spec: MobileBlockSpec) -> list[Window]:
        return []

    def adds_input(self, spec: MobileBlockSpec) -> bool:
        return False

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        channels, spatial = split_spatial(node, spec.data_format, input_shapes[0], 2)
        if spec.infilters and isinstance(channels, int) and channels != spec.infilters:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has infilters={spec.infilters} but its "
                                        f"input has {channels} channels", layer=node.layer_name,
                                        hint="the block's infilters must match the tensor it is called on")
        out = list(spatial)
        for window in self.windows(spec):
            out = window.lengths(out)
        if self.adds_input(spec) and (out != list(spatial) or spec.infilters != spec.filters):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' adds its input to an output of another "
                                        "shape", layer=node.layer_name,
                                        hint="a residual block keeps the input's size and channels")
        return [join_spatial(spec.data_format, input_shapes[0][0], spec.filters, out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)

        def body(x: str, spatial: list[Dim]) -> str:
            y = self.chain(node, b, x, spatial)
            return b.op("Add", y, x) if self.adds_input(spec) else y
        return [channels_first_io(node, spec.data_format, b, inputs[0], body)]

    @abstractmethod
    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        """The block's computation on channels-first `x`, before the residual."""

    def is_channels_first(self, node: Node) -> bool:
        return self.spec(node).data_format == CHANNELS_FIRST


def _se_weights(child: str, channels: int, bottleneck: int) -> dict[str, tuple[int | None, ...]]:
    """SqueezeAndExcite2D's arrays; its children sort conv_expand before conv_reduce."""
    return {f"{child}/conv_expand/kernel": (1, 1, bottleneck, channels), f"{child}/conv_expand/bias": (channels,),
            f"{child}/conv_reduce/kernel": (1, 1, channels, bottleneck), f"{child}/conv_reduce/bias": (bottleneck,)}


def _excite(b: OpBuilder, node: Node, x: str, child: str, spec: MobileBlockSpec) -> str:
    if not spec.se_ratio:
        return x
    return squeeze_excite(b, node, x, f"{child}/conv_reduce", f"{child}/conv_expand", "relu", HARD_SIGMOID)


@LAYERS.register("keras_hub>DepthwiseConvBlock")
class DepthwiseConvBlock(_MobileBlock):
    def parse(self, config: Config) -> MobileBlockSpec:
        return MobileBlockSpec(infilters=_size(config, "infilters"), filters=_size(config, "filters"),
                               kernel_size=_size(config, "kernel_size", 3), stride=_size(config, "stride", 2),
                               se_ratio=_se_ratio(config), residual=_residual_flag(config))

    def windows(self, spec: MobileBlockSpec) -> list[Window]:
        return [Window(spec.kernel_size, spec.stride, pad=1)]  # Keras Hub pads 1 pixel for every kernel size

    def adds_input(self, spec: MobileBlockSpec) -> bool:
        return spec.residual

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = bn_names("batch_normalization1") + bn_names("batch_normalization2")
        names += conv_names("conv1") + conv_names("conv2")
        return names + (list(_se_weights("se_layer", 1, 1)) if spec.se_ratio else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        c, k = spec.infilters, spec.kernel_size
        kernels: dict[str, tuple[int | None, ...]] = {"conv1/kernel": (k, k, 1, c),
                                                      "conv2/kernel": (1, 1, c, spec.filters)}
        return (kernels | bn_shapes("batch_normalization1", c) | bn_shapes("batch_normalization2", spec.filters)
                | _se_weights("se_layer", c, spec.bottleneck(c)))

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        window = self.windows(spec)[0]
        x = conv_bn(b, node, x, spatial, "conv1", "batch_normalization1", window, BN_EPSILON, group=spec.infilters)
        x = _excite(b, node, activate(b, x, "relu"), "se_layer", spec)
        return conv_bn(b, node, x, window.lengths(spatial), "conv2", "batch_normalization2", Window(1), BN_EPSILON)


@LAYERS.register("keras_hub>InvertedResidualBlock")
class InvertedResidualBlock(_MobileBlock):
    argument_kinds = {"padding": "int"}  # ZeroPadding2D pixels, where most layers take "valid"/"same"

    def parse(self, config: Config) -> MobileBlockSpec:
        return MobileBlockSpec(infilters=_size(config, "infilters"), filters=_size(config, "filters"),
                               expanded=adjust_channels(_size(config, "expansion")),
                               kernel_size=_size(config, "kernel_size"), stride=_size(config, "stride"),
                               padding=_size(config, "padding", minimum=0), se_ratio=_se_ratio(config),
                               activation=parse_activation(config))

    def windows(self, spec: MobileBlockSpec) -> list[Window]:
        return [Window(spec.kernel_size, spec.stride, pad=spec.padding)]

    def adds_input(self, spec: MobileBlockSpec) -> bool:
        return spec.stride == 1 and spec.infilters == spec.filters

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = [n for i in (1, 2, 3) for n in bn_names(f"batch_normalization{i}")]
        names += [n for i in (1, 2, 3) for n in conv_names(f"conv{i}")]
        return names + (list(_se_weights("squeeze_excite", 1, 1)) if spec.se_ratio else [])

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        e, k = spec.expanded, spec.kernel_size
        kernels: dict[str, tuple[int | None, ...]] = {
            "conv1/kernel": (1, 1, spec.infilters, e), "conv2/kernel": (k, k, 1, e),
            "conv3/kernel": (1, 1, e, spec.filters)}
        return (kernels | bn_shapes("batch_normalization1", e) | bn_shapes("batch_normalization2", e)
                | bn_shapes("batch_normalization3", spec.filters)
                | _se_weights("squeeze_excite", e, spec.bottleneck(e)))

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        window = self.windows(spec)[0]
        x = conv_bn(b, node, x, spatial, "conv1", "batch_normalization1", Window(1), BN_EPSILON)
        x = activate(b, x, spec.activation)
        x = conv_bn(b, node, x, spatial, "conv2", "batch_normalization2", window, BN_EPSILON, group=spec.expanded)
        x = _excite(b, node, activate(b, x, spec.activation), "squeeze_excite", spec)
        return conv_bn(b, node, x, window.lengths(spatial), "conv3", "batch_normalization3", Window(1), BN_EPSILON)


@LAYERS.register("keras_hub>ConvBnActBlock")
class ConvBnActBlock(_MobileBlock):
    def parse(self, config: Config) -> MobileBlockSpec:
        return MobileBlockSpec(filters=_size(config, "filter"), activation=parse_activation(config))

    def weight_names(self, node: Node) -> list[str]:
        return bn_names("batch_normalization") + conv_names("conv")

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        channels, _ = split_spatial(node, spec.data_format, input_shapes[0], 2)
        kernel: dict[str, tuple[int | None, ...]] = {
            "conv/kernel": (1, 1, channels if isinstance(channels, int) else None, spec.filters)}
        return kernel | bn_shapes("batch_normalization", spec.filters)

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        x = conv_bn(b, node, x, spatial, "conv", "batch_normalization", Window(1), BN_EPSILON)
        return activate(b, x, spec.activation)
