"""ResNetBackbone and ResNetImageClassifier (keras_hub/src/models/resnet/resnet_backbone.py).

The backbone is a Functional graph of core layers only: a stem of one or more input convolutions, a max
pool, stacks of residual blocks of one of four types ("basic_block", "bottleneck_block" and their "_vd"
variants, whose strided shortcut average-pools before a stride-1 convolution), ResNetV2's pre-activation
(`use_pre_activation`: BN + ReLU before each block, none after the stem, a -inf `ops.pad` before the
max pool, a final `post_bn`/`post_relu`). Layer names are Keras Hub's; weights bind by Keras' layer order,
which FunctionalBuilder reproduces. The image input is named `images`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.image_classifier import image_classifier
from converter.keras.hub.recipes import BackboneGraph, HubModel, backbone, task

BLOCK_TYPES = ("basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd")
MAX_KERNEL = 64  # far above any ResNet preset (7); bounds the stem's padding
MAX_STRIDE = 64
MAX_BLOCKS = 4096  # residual blocks in all (ResNet-152: 50); bounds the graph a hostile file can ask for
BN_EPSILON = 1e-5  # every BatchNormalization of Keras Hub's ResNet
BLOCK_KERNEL = 3  # apply_*_block's kernel_size default, which apply_stack never overrides


@dataclass(frozen=True)
class ResNetArgs:
    """ResNetBackbone's constructor arguments, checked as its constructor checks them."""

    input_conv_filters: tuple[int, ...]
    input_conv_kernel_sizes: tuple[int, ...]
    stack_filters: tuple[int, ...]
    stack_blocks: tuple[int, ...]
    stack_strides: tuple[int, ...]
    block_type: str
    pre_activation: bool
    image_shape: tuple[int | None, ...]

    @property
    def bottleneck(self) -> bool:
        return self.block_type.startswith("bottleneck")

    @property
    def vd(self) -> bool:
        return self.block_type.endswith("_vd")


def read_args(model: HubModel) -> ResNetArgs:
    conv_filters = model.integers("input_conv_filters")
    kernels = model.integers("input_conv_kernel_sizes", maximum=MAX_KERNEL)
    if not conv_filters or len(conv_filters) != len(kernels):
        raise model.refuse("input_conv_kernel_sizes", "needs one kernel size per input convolution (at least one)")
    filters = model.integers("stackwise_num_filters")
    blocks = model.integers("stackwise_num_blocks")
    strides = model.integers("stackwise_num_strides", maximum=MAX_STRIDE)
    if not filters or not len(filters) == len(blocks) == len(strides):
        raise model.refuse("stackwise_num_blocks", "stackwise_num_filters, _blocks and _strides must be as long "
                                                   "as each other (at least one stack)")
    if sum(blocks) > MAX_BLOCKS:
        raise model.refuse("stackwise_num_blocks", f"more than {MAX_BLOCKS} residual blocks in all")
    if filters[0] != 64:
        raise model.refuse("stackwise_num_filters", "Keras Hub's ResNetBackbone requires 64 filters first")
    data_format = model.text("data_format", "channels_last")
    if data_format != "channels_last":
        raise model.refuse("data_format", "Keras Hub writes no data_format; only channels_last is read")
    args = ResNetArgs(conv_filters, kernels, filters, blocks, strides,
                      model.text("block_type", choices=BLOCK_TYPES), model.flag("use_pre_activation", False),
                      image_shape(model, "image_shape", (None, None, 3)))
    if args.vd and args.pre_activation and any(s > 1 for s in strides):
        # The vd shortcut of a pre-activated block skips its pooling: Keras Hub cannot build this model.
        raise model.refuse("stackwise_num_strides", f"{args.block_type} with use_pre_activation=true has "
                                                    "mismatched shortcut shapes at a stride > 1")
    return args


def image_shape(model: HubModel, key: str, default: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """(height, width, channels) channels_last; height and width may be None, channels may not."""
    value = model.items(key, list(default))
    ok = len(value) == 3 and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16)
                                 for v in value)
    if not ok or value[2] is None:
        raise model.refuse(key, "expected (height, width, channels): positive integers, height and width may "
                                "be null")
    return tuple(value)


# -- layer configs (the arguments kconvert's handlers read, as Keras writes them) ---------------------
def conv(b: FunctionalBuilder, name: str, x: Ref, filters: int, kernel: int, stride: int = 1,
         padding: str = "valid") -> Ref:
    return b.layer("Conv2D", name, {
        "filters": filters, "kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": padding,
        "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "linear",
        "use_bias": False}, x)


def batch_norm(b: FunctionalBuilder, name: str, x: Ref) -> Ref:
    return b.layer("BatchNormalization", name, {"axis": -1, "momentum": 0.9, "epsilon": BN_EPSILON,
                                                 "center": True, "scale": True}, x)


def relu(b: FunctionalBuilder, name: str, x: Ref) -> Ref:
    return b.layer("Activation", name, {"activation": "relu"}, x)


def bn_relu(b: FunctionalBuilder, prefix: str, x: Ref) -> Ref:
    return relu(b, f"{prefix}_relu", batch_norm(b, f"{prefix}_bn", x))


def zero_pad(b: FunctionalBuilder, name: str, x: Ref, amount: int) -> Ref:
    return b.layer("ZeroPadding2D", name, {"padding": [[amount, amount], [amount, amount]],
                                            "data_format": "channels_last"}, x)


# -- the graph ------------------------------------------------------------------------------------
def stem(b: FunctionalBuilder, args: ResNetArgs, x: Ref) -> Ref:
    """conv1 (stride 2 after explicit padding), further stride-1 "same" input convs, then the max pool."""
    x = zero_pad(b, "conv1_pad", x, (args.input_conv_kernel_sizes[0] - 1) // 2)
    x = conv(b, "conv1_conv", x, args.input_conv_filters[0], args.input_conv_kernel_sizes[0], stride=2)
    for index in range(1, len(args.input_conv_filters)):
        x = bn_relu(b, f"conv{index}", x)
        x = conv(b, f"conv{index + 1}_conv", x, args.input_conv_filters[index],
                 args.input_conv_kernel_sizes[index], padding="same")
    if args.pre_activation:
        # Keras Hub pads with -inf (an ops.pad node) so that padding never wins the max pool.
        x = b.op("Pad", {"pad_width": [[0, 0], [1, 1], [1, 1], [0, 0]], "mode": "constant"}, x,
                 constant_values=float("-inf"))
    else:
        x = bn_relu(b, f"conv{len(args.input_conv_filters)}", x)
        x = zero_pad(b, "pool1_pad", x, 1)
    return b.layer("MaxPooling2D", "pool1_pool", {"pool_size": [3, 3], "padding": "valid", "strides": [2, 2],
                                                  "data_format": "channels_last"}, x)


class _Pools:
    """The vd shortcut's AveragePooling2D layers, unnamed in Keras Hub: Keras names them by a session-wide
    counter; they hold no weights, so any unique name does."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, b: FunctionalBuilder, x: Ref, stride: int) -> Ref:
        name = "average_pooling2d" if self.count == 0 else f"average_pooling2d_{self.count}"
        self.count += 1
        return b.layer("AveragePooling2D", name, {"pool_size": [2, 2], "padding": "same",
                                                  "strides": [stride, stride], "data_format": "channels_last"}, x)


def shortcut(b: FunctionalBuilder, args: ResNetArgs, name: str, x: Ref, preact: Ref | None, filters: int,
             stride: int, pools: _Pools) -> Ref:
    """The block's convolution shortcut (projection), from the pre-activated input in ResNetV2."""
    source = preact if preact is not None else x
    conv_stride = stride
    if args.vd:
        conv_stride = 1
        if preact is None and stride > 1:
            source = pools(b, x, stride)
    out = conv(b, f"{name}_0_conv", source, filters * 4 if args.bottleneck else filters, 1, stride=conv_stride)
    return out if args.pre_activation else batch_norm(b, f"{name}_0_bn", out)


def strided_conv(b: FunctionalBuilder, name: str, x: Ref, filters: int, stride: int, pad_name: str) -> Ref:
    """A 3x3 conv: "same" at stride 1, explicit zero padding then "valid" when strided (as in Torch)."""
    if stride > 1:
        x = zero_pad(b, pad_name, x, (BLOCK_KERNEL - 1) // 2)
    return conv(b, name, x, filters, BLOCK_KERNEL, stride=stride, padding="valid" if stride > 1 else "same")


def residual_path(b: FunctionalBuilder, args: ResNetArgs, name: str, x: Ref, filters: int, stride: int) -> Ref:
    """The block's main path up to its last convolution (not normalised)."""
    if args.bottleneck:
        x = bn_relu(b, f"{name}_1", conv(b, f"{name}_1_conv", x, filters, 1))
        x = bn_relu(b, f"{name}_2", strided_conv(b, f"{name}_2_conv", x, filters, stride, f"{name}_2_pad"))
        return conv(b, f"{name}_3_conv", x, filters * 4, 1)
    x = bn_relu(b, f"{name}_1", strided_conv(b, f"{name}_1_conv", x, filters, stride, f"{name}_1_pad"))
    return conv(b, f"{name}_2_conv", x, filters, BLOCK_KERNEL, padding="same")


def block(b: FunctionalBuilder, args: ResNetArgs, name: str, x: Ref, filters: int, stride: int,
          conv_shortcut: bool, pools: _Pools) -> Ref:
    preact = bn_relu(b, f"{name}_pre_activation", x) if args.pre_activation else None
    short = shortcut(b, args, name, x, preact, filters, stride, pools) if conv_shortcut else x
    out = residual_path(b, args, name, preact if preact is not None else x, filters, stride)
    if args.pre_activation:
        return b.layer("Add", f"{name}_out", {}, [short, out])
    out = batch_norm(b, f"{name}_{3 if args.bottleneck else 2}_bn", out)
    return relu(b, f"{name}_out", b.layer("Add", f"{name}_add", {}, [short, out]))


@backbone("ResNetBackbone")
def resnet_backbone(model: HubModel) -> BackboneGraph:
    args = read_args(model)
    b = FunctionalBuilder(model.name)
    x = stem(b, args, b.input("images", args.image_shape))
    pools = _Pools()
    for stack, (filters, blocks, stride) in enumerate(zip(args.stack_filters, args.stack_blocks,
                                                          args.stack_strides)):
        first_shortcut = args.block_type != "basic_block" or stack > 0
        for index in range(blocks):
            x = block(b, args, f"stack{stack}_block{index}", x, filters, stride if index == 0 else 1,
                      first_shortcut and index == 0, pools)
    if args.pre_activation:
        x = bn_relu(b, "post", x)
    return BackboneGraph(b, x)


@task("ResNetImageClassifier")
def resnet_image_classifier(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    return image_classifier(task_model, backbone_model, graph)
