"""Keras Hub's EfficientNet v2 blocks (keras_hub/src/models/efficientnet/mbconv.py, fusedmbconv.py, cba.py).

MBConvBlock: [1x1 expand conv + BN + act] (expand_ratio != 1) -> depthwise conv ("same") + BN + act ->
[squeeze-excite] -> projection conv (1x1, or kernel_size with symmetric padding when expand_ratio == 1)
+ BN -> + input (stride 1, same filters, not `nores`). FusedMBConvBlock: kernel_size conv (symmetric
padding, stride) + BN + act -> [squeeze-excite] -> projection conv + BN [+ projection activation when
expand_ratio == 1] -> the same residual. CBABlock: kernel_size conv (symmetric padding, stride) + BN + act
-> the same residual. Squeeze-excite (0 < se_ratio <= 1): mean over height and width,
1x1 conv with the block's activation, 1x1 conv with sigmoid, times x. Dropout is an inference identity.
Every Conv + BN pair is one ONNX Conv (hub_conv_blocks.conv_bn); the block computes channels-first.
Keras Hub registers none of these classes: a file names them by bare class name in a keras_hub module,
which layer_configs.hub_layer_kind turns into the `keras_hub>` kinds registered here.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from converter.errors import UnsupportedLayerError
from converter.ir import Dim, Node, Shape
from converter.layers.activations import parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.hub_conv_blocks import Window, activate, bn_names, bn_shapes, conv_bn, conv_names, squeeze_excite
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import CHANNELS_FIRST, channels_first_io, join_spatial, split_spatial


@dataclass(frozen=True, kw_only=True)
class MBConvSpec(LayerSpec):
    input_filters: int
    output_filters: int
    expand_ratio: int = 1
    kernel_size: int = 3
    strides: int = 1
    se_ratio: float = 0.0
    batch_norm_epsilon: float = 1e-3
    activation: str = "swish"
    projection_activation: str = "linear"
    projection_kernel_size: int = 1
    nores: bool = False
    data_format: str = "channels_last"  # what the node computes in: the layout pass switches it

    @property
    def filters(self) -> int:
        return self.input_filters * self.expand_ratio

    @property
    def squeezes(self) -> bool:
        return 0 < self.se_ratio <= 1

    @property
    def filters_se(self) -> int:
        return max(1, int(self.input_filters * self.se_ratio))

    @property
    def residual(self) -> bool:
        return self.strides == 1 and self.input_filters == self.output_filters and not self.nores


def _positive(config: Config, key: str, default: int | None = None) -> int:
    value = config.value(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
        raise config.refuse(key, value, "expected a positive integer")
    return value


def parse_block(config: Config) -> MBConvSpec:
    if config.value("data_format", "channels_last") != "channels_last":
        raise config.refuse("data_format", config.value("data_format"),
                            "Keras Hub's blocks normalise axis 3: only channels_last computes as intended")
    sizes = {key: _positive(config, key, default) for key, default in (
        ("input_filters", None), ("output_filters", None), ("expand_ratio", 1), ("kernel_size", 3),
        ("strides", 1), ("projection_kernel_size", 1))}
    activation = parse_activation(config)
    projection = parse_activation(config, "projection_activation")
    return parse_fields(MBConvSpec, config, **sizes, activation=activation, projection_activation=projection,
                        data_format="channels_last")


class _Block(LayerHandler[MBConvSpec]):
    """What both EfficientNet v2 blocks share: parse, layout, shapes, squeeze-excite, residual."""

    channels_first_only = True
    keras3_args = None  # a Keras Hub class, not a Keras built-in
    keras_availability = "file"

    def parse(self, config: Config) -> MBConvSpec:
        return parse_block(config)

    @abstractmethod
    def windows(self, spec: MBConvSpec) -> list[Window]:
        """The spatial windows, in order (they give the output's height and width)."""

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec = self.spec(node)
        channels, spatial = split_spatial(node, spec.data_format, input_shapes[0], 2)
        if isinstance(channels, int) and channels != spec.input_filters:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has input_filters={spec.input_filters} "
                                        f"but its input has {channels} channels", layer=node.layer_name,
                                        hint="the block's input_filters must match the tensor it is called on")
        for window in self.windows(spec):
            spatial = window.lengths(spatial)
        return [join_spatial(spec.data_format, input_shapes[0][0], spec.output_filters, spatial)]

    def se_names(self, spec: MBConvSpec) -> list[str]:
        return conv_names("se_conv1", True) + conv_names("se_conv2", True) if spec.squeezes else []

    def se_shapes(self, spec: MBConvSpec) -> dict[str, tuple[int | None, ...]]:
        return {"se_conv1/kernel": (1, 1, spec.filters, spec.filters_se), "se_conv1/bias": (spec.filters_se,),
                "se_conv2/kernel": (1, 1, spec.filters_se, spec.filters), "se_conv2/bias": (spec.filters,)}

    def excite(self, node: Node, b: OpBuilder, x: str) -> str:
        spec = self.spec(node)
        if not spec.squeezes:
            return x
        return squeeze_excite(b, node, x, "se_conv1", "se_conv2", spec.activation, "sigmoid")

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)

        def body(x: str, spatial: list[Dim]) -> str:
            y = self.chain(node, b, x, spatial)
            return b.op("Add", y, x) if spec.residual else y
        return [channels_first_io(node, spec.data_format, b, inputs[0], body)]

    @abstractmethod
    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        """The block's computation on channels-first `x`, before the residual."""

    def is_channels_first(self, node: Node) -> bool:
        return self.spec(node).data_format == CHANNELS_FIRST


@LAYERS.register("keras_hub>MBConvBlock")
class MBConvBlock(_Block):
    def windows(self, spec: MBConvSpec) -> list[Window]:
        projection = 1 if spec.expand_ratio != 1 else spec.kernel_size
        return [Window(spec.kernel_size, spec.strides, "same"), Window(projection, pad=projection // 2)]

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        expands = spec.expand_ratio != 1
        names = (bn_names("bn1") if expands else []) + bn_names("bn2") + bn_names("bn3")
        names += (conv_names("conv1") if expands else []) + conv_names("depthwise") + conv_names("output_conv")
        return names + self.se_names(spec)

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        k, projection = spec.kernel_size, self.windows(spec)[1].kernel
        kernels: dict[str, tuple[int | None, ...]] = {
            "conv1/kernel": (1, 1, spec.input_filters, spec.filters), "depthwise/kernel": (k, k, spec.filters, 1),
            "output_conv/kernel": (projection, projection, spec.filters, spec.output_filters)}
        return (kernels | bn_shapes("bn1", spec.filters) | bn_shapes("bn2", spec.filters)
                | bn_shapes("bn3", spec.output_filters) | self.se_shapes(spec))

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        eps = spec.batch_norm_epsilon
        depthwise, projection = self.windows(spec)
        if spec.expand_ratio != 1:
            x = activate(b, conv_bn(b, node, x, spatial, "conv1", "bn1", Window(1), eps), spec.activation)
        x = conv_bn(b, node, x, spatial, "depthwise", "bn2", depthwise, eps, depthwise=True)
        x = self.excite(node, b, activate(b, x, spec.activation))
        return conv_bn(b, node, x, depthwise.lengths(spatial), "output_conv", "bn3", projection, eps)


@LAYERS.register("keras_hub>FusedMBConvBlock")
class FusedMBConvBlock(_Block):
    def windows(self, spec: MBConvSpec) -> list[Window]:
        k, p = spec.kernel_size, spec.projection_kernel_size
        return [Window(k, spec.strides, pad=k // 2), Window(p, pad=p // 2)]

    def weight_names(self, node: Node) -> list[str]:
        names = bn_names("bn1") + bn_names("bn2") + conv_names("conv1") + conv_names("output_conv")
        return names + self.se_names(self.spec(node))

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        k, p = spec.kernel_size, spec.projection_kernel_size
        kernels: dict[str, tuple[int | None, ...]] = {
            "conv1/kernel": (k, k, spec.input_filters, spec.filters),
            "output_conv/kernel": (p, p, spec.filters, spec.output_filters)}
        return kernels | bn_shapes("bn1", spec.filters) | bn_shapes("bn2", spec.output_filters) | self.se_shapes(spec)

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        eps = spec.batch_norm_epsilon
        expand, projection = self.windows(spec)
        x = activate(b, conv_bn(b, node, x, spatial, "conv1", "bn1", expand, eps), spec.activation)
        x = conv_bn(b, node, self.excite(node, b, x), expand.lengths(spatial), "output_conv", "bn2", projection, eps)
        if spec.expand_ratio == 1 and spec.projection_activation != "linear":
            x = activate(b, x, spec.projection_activation)
        return x


@LAYERS.register("keras_hub>CBABlock")
class CBABlock(_Block):
    def windows(self, spec: MBConvSpec) -> list[Window]:
        return [Window(spec.kernel_size, spec.strides, pad=spec.kernel_size // 2)]

    def weight_names(self, node: Node) -> list[str]:
        return bn_names("bn1") + conv_names("conv1")

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        k = spec.kernel_size
        kernel: dict[str, tuple[int | None, ...]] = {"conv1/kernel": (k, k, spec.input_filters, spec.output_filters)}
        return kernel | bn_shapes("bn1", spec.output_filters)

    def chain(self, node: Node, b: OpBuilder, x: str, spatial: list[Dim]) -> str:
        spec = self.spec(node)
        x = conv_bn(b, node, x, spatial, "conv1", "bn1", self.windows(spec)[0], spec.batch_norm_epsilon)
        return activate(b, x, spec.activation)
