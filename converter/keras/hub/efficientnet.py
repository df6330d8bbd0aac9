"""EfficientNet (keras_hub/src/models/efficientnet/efficientnet_backbone.py, Keras Hub 0.32.0).

Version 1 blocks ("v1") are expanded inline into core layers (`block1a_dwconv`, `block1a_se_reduce`, ...),
as Keras Hub's constructor does; version 2 blocks ("fused", "unfused", "cba") are the custom layers
FusedMBConvBlock, MBConvBlock and CBABlock (converter/layers/hub_efficientnet.py). Filter and repeat counts are
rounded exactly as the constructor rounds them. `num_features` (the top conv's width) is not written to
the config by Keras Hub, so it is read from the stored top conv kernel where the file has weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.image_classifier import image_classifier
from converter.keras.hub.recipes import BackboneGraph, HubModel, backbone, task
from converter.keras.weights import saved_object_name

BLOCK_TYPES = ("v1", "fused", "unfused", "cba")
DEFAULT_NUM_FEATURES = 1280
DEFAULT_STACKS = 7  # Keras Hub's defaults for the per-stack options are lists of 7


@dataclass(frozen=True)
class Rounding:
    """round_filters' settings (efficientnet_backbone.py `round_filters`)."""

    min_depth: int | None
    divisor: int
    divisor_as_min_depth: bool
    cap_decrease: bool

    def filters(self, filters: int, width: float) -> int:
        scaled = filters * width
        min_depth = self.divisor if self.divisor_as_min_depth else self.min_depth
        rounded = int(scaled + self.divisor / 2) // self.divisor * self.divisor
        new = rounded if min_depth is None else max(min_depth, rounded)
        if self.cap_decrease and new < 0.9 * scaled:
            new += self.divisor  # round_filters: never round down by more than 10%
        return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class Stack:
    """One stack's options, as given (before rounding)."""

    kernel_size: int
    repeats: int
    input_filters: int
    output_filters: int
    expansion: int
    se_ratio: float
    strides: int
    block_type: str
    force_input_filters: int
    nores: bool
    width: float
    depth: float


@dataclass
class Net:
    """What every layer of the backbone shares while the recipe builds it."""

    b: FunctionalBuilder
    activation: str
    projection_activation: str | None
    momentum: float
    epsilon: float
    dropout: float
    total_blocks: float
    conv2d_count: int = 0  # Conv2D layers so far: the next one's saved name is conv2d_<count>


def _numbers(model: HubModel, key: str, count: int, minimum: float, maximum: float) -> list[float]:
    values = model.items(key)
    if len(values) < count or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) and minimum <= v <= maximum for v in values):
        raise model.refuse(key, f"expected {count} numbers from {minimum} to {maximum}, one per stack")
    return [float(v) for v in values]


def _per_stack(model: HubModel, key: str, count: int, default: tuple[int, ...] | None = None,
               minimum: int = 1, maximum: int = 1 << 16) -> tuple[int, ...]:
    values = model.integers(key, default, minimum=minimum, maximum=maximum)
    if len(values) < count:
        raise model.refuse(key, f"expected one value per stack ({count} stacks)")
    return values


def _block_types(model: HubModel, count: int) -> list[str]:
    values = model.items("stackwise_block_types")
    if len(values) < count:
        raise model.refuse("stackwise_block_types", f"expected one value per stack ({count} stacks)")
    for value in values[:count]:
        if value not in BLOCK_TYPES:
            raise model.refuse("stackwise_block_types", f"expected each of {list(BLOCK_TYPES)}")
    return list(values[:count])


def _nores(model: HubModel, count: int) -> list[bool]:
    """Not written by Keras Hub 0.32.0 (so False); a hand-written config may still give it."""
    values = model.items("stackwise_nores_option", [False] * max(count, DEFAULT_STACKS))
    if len(values) < count or not all(isinstance(v, bool) for v in values[:count]):
        raise model.refuse("stackwise_nores_option", f"expected {count} booleans, one per stack")
    return list(values[:count])


def stacks(model: HubModel) -> list[Stack]:
    count = len(model.integers("stackwise_kernel_sizes", maximum=63))
    if count == 0:
        raise model.refuse("stackwise_kernel_sizes", "expected at least one stack")
    ints = {key: _per_stack(model, key, count) for key in (
        "stackwise_kernel_sizes", "stackwise_num_repeats", "stackwise_input_filters", "stackwise_output_filters",
        "stackwise_expansion_ratios", "stackwise_strides")}
    force = _per_stack(model, "stackwise_force_input_filters", count, (0,) * DEFAULT_STACKS, minimum=0)
    se = _numbers(model, "stackwise_squeeze_and_excite_ratios", count, 0.0, 64.0)  # SE only for 0 < ratio <= 1
    width = _numbers(model, "stackwise_width_coefficients", count, 1e-3, 64.0)
    depth = _numbers(model, "stackwise_depth_coefficients", count, 1e-3, 64.0)
    types, nores = _block_types(model, count), _nores(model, count)
    return [Stack(ints["stackwise_kernel_sizes"][i], ints["stackwise_num_repeats"][i],
                  ints["stackwise_input_filters"][i], ints["stackwise_output_filters"][i],
                  ints["stackwise_expansion_ratios"][i], se[i], ints["stackwise_strides"][i], types[i],
                  force[i], nores[i], width[i], depth[i]) for i in range(count)]


# -- core layers, configured as Keras Hub configures them ---------------------------------------------
def conv(net: Net, name: str, x: Ref, filters: int, kernel: int, strides: int = 1, padding: str = "same",
         activation: str = "linear", use_bias: bool = False) -> Ref:
    net.conv2d_count += 1
    return net.b.layer("Conv2D", name, {
        "filters": filters, "kernel_size": [kernel, kernel], "strides": [strides, strides], "padding": padding,
        "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": activation,
        "use_bias": use_bias}, x)


def batch_norm(net: Net, name: str, x: Ref, axis: int = 3, momentum: float = 0.99) -> Ref:
    return net.b.layer("BatchNormalization", name, {"axis": axis, "momentum": momentum, "epsilon": net.epsilon,
                                                    "center": True, "scale": True}, x)


def activate(net: Net, name: str, x: Ref, activation: str | None = None) -> Ref:
    return net.b.layer("Activation", name, {"activation": activation or net.activation}, x)


def zero_pad(net: Net, name: str, x: Ref, pixels: int) -> Ref:
    return net.b.layer("ZeroPadding2D", name, {"padding": [[pixels, pixels], [pixels, pixels]],
                                               "data_format": "channels_last"}, x)


def residual(net: Net, name: str, x: Ref, inputs: Ref, rate: float) -> Ref:
    """`{name}drop` (only for a rate above 0, as Keras Hub builds it) then `{name}add`."""
    if rate > 0:
        x = net.b.layer("Dropout", name + "drop", {"rate": rate, "seed": None, "noise_shape": [None, 1, 1, 1]}, x)
    return net.b.layer("Add", name + "add", {}, [x, inputs])


# -- version 1 blocks (EfficientNetBackbone._apply_efficientnet_block) ---------------------------------
def squeeze_excite(net: Net, name: str, x: Ref, filters: int, filters_in: int, ratio: float) -> Ref:
    se = net.b.layer("GlobalAveragePooling2D", name + "se_squeeze", {"data_format": "channels_last",
                                                                     "keepdims": False}, x)
    se = net.b.layer("Reshape", name + "se_reshape", {"target_shape": [1, 1, filters]}, se)
    se = conv(net, name + "se_reduce", se, max(1, int(filters_in * ratio)), 1, activation=net.activation,
              use_bias=True)
    se = conv(net, name + "se_expand", se, filters, 1, activation="sigmoid", use_bias=True)
    return net.b.layer("Multiply", name + "se_excite", {}, [x, se])


def v1_block(net: Net, name: str, inputs: Ref, stack: Stack, filters_in: int, filters_out: int,
             strides: int, rate: float) -> Ref:
    filters = filters_in * stack.expansion
    x = inputs
    if stack.expansion != 1:
        x = conv(net, name + "expand_conv", x, filters, 1)
        x = activate(net, name + "expand_activation", batch_norm(net, name + "expand_bn", x))
    x = zero_pad(net, name + "dwconv_pad", x, stack.kernel_size // 2)
    x = net.b.layer("DepthwiseConv2D", name + "dwconv", {
        "depth_multiplier": 1, "kernel_size": [stack.kernel_size] * 2, "strides": [strides, strides],
        "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "linear",
        "use_bias": False}, x)
    x = activate(net, name + "dwconv_activation", batch_norm(net, name + "dwconv_bn", x))
    if 0 < stack.se_ratio <= 1:
        x = squeeze_excite(net, name, x, filters, filters_in, stack.se_ratio)
    x = batch_norm(net, name + "project_bn", conv(net, name + "project", x, filters_out, 1))
    if net.projection_activation:
        x = activate(net, name + "projection_activation", x, net.projection_activation)
    if strides == 1 and filters_in == filters_out:
        x = residual(net, name, x, inputs, rate)
    return x


# -- version 2 blocks: Keras Hub layers --------------------------------------------------------------
# Keras Hub registers none of these classes: Keras writes each under its bare class name and module.
V2_BLOCKS = {"fused": ("FusedMBConvBlock", "fusedmbconv"), "unfused": ("MBConvBlock", "mbconv"),
             "cba": ("CBABlock", "cba")}


def v2_block(net: Net, name: str, x: Ref, stack: Stack, filters_in: int, filters_out: int,
             strides: int, rate: float) -> Ref:
    config = {"input_filters": filters_in, "output_filters": filters_out, "kernel_size": stack.kernel_size,
              "strides": strides, "data_format": "channels_last", "batch_norm_momentum": net.momentum,
              "batch_norm_epsilon": net.epsilon, "activation": net.activation, "dropout": rate, "nores": stack.nores}
    if stack.block_type != "cba":
        config |= {"expand_ratio": stack.expansion, "se_ratio": stack.se_ratio}
    if stack.block_type == "fused":
        config |= {"projection_activation": net.projection_activation, "projection_kernel_size": 1}
    class_name, module = V2_BLOCKS[stack.block_type]
    return net.b.layer(class_name, name, config, x, registered_name=class_name,
                       module=f"keras_hub.src.models.efficientnet.{module}")


# -- the backbone -------------------------------------------------------------------------------------
def image_shape(model: HubModel, key: str) -> tuple[int | None, ...]:
    """(height, width, channels); height and width may be None (any image size)."""
    value = model.items(key, [None, None, 3])
    if len(value) != 3 or not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 16)
                                  for v in value) or value[2] is None:
        raise model.refuse(key, "expected (height, width, channels): sizes or null, channels a size")
    return tuple(value)


def rounding(model: HubModel) -> Rounding:
    return Rounding(model.optional_integer("min_depth"), model.integer("depth_divisor", 8, maximum=1 << 16),
                    model.flag("use_depth_divisor_as_min_depth", False), model.flag("cap_round_filter_decrease", False))


def _check_layout(model: HubModel, stack_list: list[Stack], rounding_: Rounding) -> None:
    model.text("data_format", "channels_last", choices=("channels_last",))  # Keras Hub saves channels_last only
    if rounding_.min_depth is None and not rounding_.divisor_as_min_depth:
        raise model.refuse("min_depth", "Keras Hub needs a min_depth unless use_depth_divisor_as_min_depth is set")
    blocks = sum(round_repeats(s.repeats, s.depth) for s in stack_list)
    if blocks > 4096:
        raise model.refuse("stackwise_num_repeats", f"{blocks} blocks in all; expected at most 4096")


def stem(net: Net, model: HubModel, x: Ref, filters: int) -> Ref:
    if model.flag("include_stem_padding", True):
        x = zero_pad(net, "stem_conv_pad", x, 1)
    padding = model.text("stem_conv_padding", "valid", choices=("valid", "same"))
    x = conv(net, "stem_conv", x, filters, 3, strides=2, padding=padding)
    x = batch_norm(net, "stem_bn", x, axis=-1, momentum=net.momentum)
    return activate(net, "stem_activation", x)


def blocks(net: Net, x: Ref, stack_list: list[Stack], round_: Rounding) -> Ref:
    """The stacks' blocks, named block{stack}{letter}_ as Keras Hub names them."""
    block_id = 0
    for i, stack in enumerate(stack_list):
        filters_in = round_.filters(stack.input_filters, stack.width)
        filters_out = round_.filters(stack.output_filters, stack.width)
        strides = stack.strides
        for j in range(round_repeats(stack.repeats, stack.depth)):
            if j > 0:
                strides, filters_in = 1, filters_out
            if stack.force_input_filters > 0:
                filters_in = round_.filters(stack.force_input_filters, stack.width)
            name = f"block{i + 1}{chr(j + 97)}_"
            rate = net.dropout * block_id / net.total_blocks
            build = v1_block if stack.block_type == "v1" else v2_block
            x = build(net, name, x, stack, filters_in, filters_out, strides, rate)
            block_id += 1
    return x


def top_width(net: Net, model: HubModel, round_: Rounding, width: float) -> int:
    """The top conv's filters: Keras Hub does not save `num_features`, so the stored kernel says; without
    weights, the constructor's default rounded as it rounds it. The top conv is the backbone's last
    Conv2D in Keras' layer order (nearest the output), so its saved name counts all the others."""
    index = net.conv2d_count
    arrays = model.weights.arrays(saved_object_name("Conv2D") + (f"_{index}" if index else ""))
    if arrays and arrays[0].ndim == 4:
        return int(arrays[0].shape[-1])
    num_features = model.integer("num_features", DEFAULT_NUM_FEATURES)
    return round_.filters(num_features, width)


@backbone("EfficientNetBackbone")
def efficientnet_backbone(model: HubModel) -> BackboneGraph:
    stack_list, round_ = stacks(model), rounding(model)
    _check_layout(model, stack_list, round_)
    b = FunctionalBuilder(model.name)
    projection = None if model.args.value("projection_activation") is None else model.text("projection_activation")
    net = Net(b, model.text("activation", "swish"), projection, model.number("batch_norm_momentum", 0.9),
              model.number("batch_norm_epsilon", 1e-5), model.number("dropout", 0.2),
              float(sum(stack.repeats for stack in stack_list)))
    x = b.input("images", image_shape(model, "input_shape"))
    x = stem(net, model, x, round_.filters(stack_list[0].input_filters, stack_list[0].width))
    x = blocks(net, x, stack_list, round_)
    filters = top_width(net, model, round_, stack_list[-1].width)
    x = conv(net, "top_conv", x, filters, 1)
    x = batch_norm(net, "top_bn", x, axis=-1, momentum=net.momentum)
    return BackboneGraph(b, activate(net, "top_activation", x))


task("EfficientNetImageClassifier")(image_classifier)
