"""Keras Hub's ViT layers (keras_hub/src/models/vit/vit_layers.py): ViTPatchingAndEmbedding and ViTEncoder.

ViTPatchingAndEmbedding: a patch-sized, patch-strided Conv2D, flattened to (batch, patches, hidden), the
class token prepended, the whole position table added. ViTEncoder: pre-LN blocks
`x += MHA(LN1(x)); x += Dense(gelu exact) -> Dense (LN2(x))`, then a final LayerNormalization; no mask,
so the attention is one softmax per head (transformer_ops). Dropouts are identities at inference.

Weights come in the order collect_vars reads them (keras/weights.py): own variables, then child groups
alphabetically, so the encoder's blocks (`vi_t_encoder_block`, `_1`, ... `_10`) are listed by their
saved names' sort order (block 10 before block 2), each block's layer norms before `mha` before `mlp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError
from converter.ir import Node, Shape
from converter.layers import transformer_ops
from converter.layers.activations import apply_activation
from converter.layers.builder import OpBuilder
from converter.layers.hub_args import damaged
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec
from converter.layers.transformer_ops import attend, inverse_sqrt, linear, merge_heads, split_heads

# Far above ViT-Huge (32 layers, 1280 wide): a hostile config cannot make weight lists of a billion names.
MAX_LAYERS = 1024
BLOCK_SAVED_NAME = "vi_t_encoder_block"  # Keras' saved name of ViTEncoderBlock (a list's items: _1, _2 ...)
DEFAULT_EPSILON = 1e-6  # ViTEncoder's layer_norm_epsilon default




def _pair(config: Config, key: str) -> tuple[int, int]:
    value = config.ints(key, 2)
    if min(value) < 1:
        raise damaged(config, key, "expected positive sizes")
    return value[0], value[1]


def layer_norm(b: OpBuilder, x: str, gamma: np.ndarray, beta: np.ndarray, epsilon: float, key: str) -> str:
    """keras.layers.LayerNormalization over the last axis, its arrays stored under `key`."""
    return transformer_ops.layer_norm(b, x, b.weight(f"{key}/gamma", gamma), b.weight(f"{key}/beta", beta), epsilon)


# -- ViTPatchingAndEmbedding ------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchingSpec(LayerSpec):
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    hidden_dim: int
    num_channels: int = 3
    use_class_token: bool = True
    use_patch_bias: bool = True  # not in the layer's get_config: a ViTBackbone passes it, a saved layer cannot

    @property
    def num_patches(self) -> int:
        return (self.image_size[0] // self.patch_size[0]) * (self.image_size[1] // self.patch_size[1])

    @property
    def num_positions(self) -> int:
        return self.num_patches + (1 if self.use_class_token else 0)


@LAYERS.register("keras_hub>ViTPatchingAndEmbedding")
class ViTPatchingAndEmbedding(LayerHandler[PatchingSpec]):
    """Keras Hub does not export the class: a user's own model saves it under its bare class name, in its
    keras_hub module (layer_configs.hub_layer_kind gives it this kind)."""

    keras_availability = "file"  # a Keras Hub class, found in saved files
    required_arguments = ("image_size", "patch_size", "hidden_dim")
    argument_kinds = {"image_size": "window", "patch_size": "window", "hidden_dim": "positive",
                      "num_channels": "positive"}

    def parse(self, config: Config) -> PatchingSpec:
        data_format = config.value("data_format", "channels_last")
        if data_format != "channels_last":
            raise damaged(config, "data_format", "kconvert reads ViT images channels_last")
        return PatchingSpec(image_size=_pair(config, "image_size"), patch_size=_pair(config, "patch_size"),
                            hidden_dim=config.integer("hidden_dim"), num_channels=config.integer("num_channels", 3),
                            use_class_token=config.flag("use_class_token", True),
                            use_patch_bias=config.flag("use_patch_bias", True))

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        return (["class_token"] if spec.use_class_token else []) + ["patch_kernel"] + \
            (["patch_bias"] if spec.use_patch_bias else []) + ["position_embeddings"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        return {"class_token": (1, 1, spec.hidden_dim),
                "patch_kernel": (*spec.patch_size, spec.num_channels, spec.hidden_dim),
                "patch_bias": (spec.hidden_dim,), "position_embeddings": (spec.num_positions, spec.hidden_dim)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape, spec = input_shapes[0], self.spec(node)
        expect_rank(node, shape, 4, "(batch, height, width, channels)")
        if tuple(shape[1:]) != (*spec.image_size, spec.num_channels):
            raise ShapeError(f"{node.kind} '{node.layer_name}' embeds {spec.image_size} images of "
                             f"{spec.num_channels} channels, but its input is {tuple(shape)}",
                             layer=node.layer_name, hint="its position table fixes the image size: give the "
                                                         "model input that height, width and channels")
        return [(shape[0], spec.num_positions, spec.hidden_dim)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        kernel = np.transpose(node.weights["patch_kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
        conv_inputs = [b.transpose(inputs[0], [0, 3, 1, 2]), b.weight("patch_kernel", kernel)]
        if spec.use_patch_bias:
            conv_inputs.append(b.weight("patch_bias"))
        patches = b.op("Conv", *conv_inputs, kernel_shape=list(spec.patch_size), strides=list(spec.patch_size))
        # (B, hidden, gh, gw) -> (B, gh * gw, hidden): Keras' row-major reshape of the NHWC feature map.
        tokens = b.transpose(b.reshape(patches, [0, spec.hidden_dim, -1]), [0, 2, 1])
        if spec.use_class_token:
            batch = b.slice(b.op("Shape", inputs[0]), [0], [1], [0])
            shape = b.op("Concat", batch, b.ints([1, spec.hidden_dim], "token_shape"), axis=0)
            token = b.op("Expand", b.weight("class_token"), shape)
            tokens = b.op("Concat", token, tokens, axis=1)
        table = node.weights["position_embeddings"].reshape(1, spec.num_positions, spec.hidden_dim)
        return [b.op("Add", tokens, b.weight("position_embeddings", table))]


# -- ViTEncoder ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec(LayerSpec):
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    use_mha_bias: bool = True
    use_mlp_bias: bool = True
    layer_norm_epsilon: float = DEFAULT_EPSILON

    @property
    def key_dim(self) -> int:
        return self.hidden_dim // self.num_heads  # ViTEncoderBlock's (it need not divide evenly)


# The arrays of one block, in stored order: layer_norm_1, layer_norm_2, mha (q, k, v, output), mlp.
_PROJECTIONS = ("query", "key", "value", "output")


def block_weight_names(prefix: str, spec: EncoderSpec) -> list[str]:
    names = [f"{prefix}/ln1_gamma", f"{prefix}/ln1_beta", f"{prefix}/ln2_gamma", f"{prefix}/ln2_beta"]
    for projection in _PROJECTIONS:
        names += [f"{prefix}/{projection}_kernel"] + ([f"{prefix}/{projection}_bias"] if spec.use_mha_bias else [])
    for dense in ("mlp1", "mlp2"):
        names += [f"{prefix}/{dense}_kernel"] + ([f"{prefix}/{dense}_bias"] if spec.use_mlp_bias else [])
    return names


def stored_block_order(num_layers: int) -> list[int]:
    """Block indices in the order their saved groups sort (vi_t_encoder_block, _1, _10, _11, _2, ...)."""
    saved = {BLOCK_SAVED_NAME if i == 0 else f"{BLOCK_SAVED_NAME}_{i}": i for i in range(num_layers)}
    return [saved[name] for name in sorted(saved)]


@LAYERS.register("keras_hub>ViTEncoder")
class ViTEncoder(LayerHandler[EncoderSpec]):
    """Not exported by Keras Hub either: found by its module, as ViTPatchingAndEmbedding."""

    keras_availability = "file"  # a Keras Hub class, found in saved files
    required_arguments = ("num_layers", "num_heads", "hidden_dim", "mlp_dim")
    argument_kinds = {"num_layers": "positive", "hidden_dim": "positive", "mlp_dim": "positive"}

    def parse(self, config: Config) -> EncoderSpec:
        spec = EncoderSpec(num_layers=config.integer("num_layers"), num_heads=config.integer("num_heads"),
                           hidden_dim=config.integer("hidden_dim"), mlp_dim=config.integer("mlp_dim"),
                           use_mha_bias=config.flag("use_mha_bias", True),
                           use_mlp_bias=config.flag("use_mlp_bias", True),
                           layer_norm_epsilon=config.number("layer_norm_epsilon", DEFAULT_EPSILON))
        if spec.num_layers > MAX_LAYERS:
            raise damaged(config, "num_layers", f"expected at most {MAX_LAYERS} blocks")
        if spec.num_heads > spec.hidden_dim:
            raise damaged(config, "num_heads", f"more heads than hidden_dim={spec.hidden_dim} leaves no key_dim")
        return spec

    def weight_names(self, node: Node) -> list[str]:
        spec = self.spec(node)
        names = [n for i in stored_block_order(spec.num_layers) for n in block_weight_names(f"block{i}", spec)]
        return names + ["ln_gamma", "ln_beta"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        hidden, heads, key_dim, mlp = spec.hidden_dim, spec.num_heads, spec.key_dim, spec.mlp_dim
        block = {"ln1_gamma": (hidden,), "ln1_beta": (hidden,), "ln2_gamma": (hidden,), "ln2_beta": (hidden,),
                 "query_kernel": (hidden, heads, key_dim), "query_bias": (heads, key_dim),
                 "key_kernel": (hidden, heads, key_dim), "key_bias": (heads, key_dim),
                 "value_kernel": (hidden, heads, key_dim), "value_bias": (heads, key_dim),
                 "output_kernel": (heads, key_dim, hidden), "output_bias": (hidden,),
                 "mlp1_kernel": (hidden, mlp), "mlp1_bias": (mlp,), "mlp2_kernel": (mlp, hidden),
                 "mlp2_bias": (hidden,)}
        shapes = {f"block{i}/{k}": v for i in range(spec.num_layers) for k, v in block.items()}
        return {**shapes, "ln_gamma": (hidden,), "ln_beta": (hidden,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        expect_rank(node, shape, 3, "(batch, tokens, hidden_dim)")
        if shape[-1] != self.spec(node).hidden_dim:
            raise ShapeError(f"{node.kind} '{node.layer_name}' has hidden_dim={self.spec(node).hidden_dim}, but its "
                             f"input is {tuple(shape)}", layer=node.layer_name,
                             hint="the tokens' last axis must be hidden_dim")
        return [shape]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec, w = self.spec(node), node.weights
        x = inputs[0]
        for index in range(spec.num_layers):
            x = self._block(b, spec, w, f"block{index}", x)
        return [layer_norm(b, x, w["ln_gamma"], w["ln_beta"], spec.layer_norm_epsilon, "ln")]

    def _block(self, b: OpBuilder, spec: EncoderSpec, w: dict[str, np.ndarray], p: str, x: str) -> str:
        eps = spec.layer_norm_epsilon
        h = layer_norm(b, x, w[f"{p}/ln1_gamma"], w[f"{p}/ln1_beta"], eps, f"{p}/ln1")
        x = b.op("Add", x, self._attention(b, spec, w, p, h))
        h = layer_norm(b, x, w[f"{p}/ln2_gamma"], w[f"{p}/ln2_beta"], eps, f"{p}/ln2")
        h = apply_activation(b, linear(b, h, w[f"{p}/mlp1_kernel"], w.get(f"{p}/mlp1_bias"), f"{p}/mlp1"), "gelu")
        return b.op("Add", x, linear(b, h, w[f"{p}/mlp2_kernel"], w.get(f"{p}/mlp2_bias"), f"{p}/mlp2"))

    def _attention(self, b: OpBuilder, spec: EncoderSpec, w: dict[str, np.ndarray], p: str, h: str) -> str:
        heads, key_dim = spec.num_heads, spec.key_dim
        q, k, v = (split_heads(b, linear(b, h, w[f"{p}/{n}_kernel"], w.get(f"{p}/{n}_bias"), f"{p}/{n}"),
                               heads, key_dim) for n in ("query", "key", "value"))
        context = merge_heads(b, attend(b, q, k, v, inverse_sqrt(key_dim)), heads, key_dim)
        kernel = w[f"{p}/output_kernel"].reshape(heads * key_dim, spec.hidden_dim)
        return linear(b, context, kernel, w.get(f"{p}/output_bias"), f"{p}/output")
