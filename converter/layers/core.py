"""Dense and the inference-time identities (Dropout family)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.ir import Node, Shape
from converter.ir.spec import NoArgs
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.channel_linear import ChannelLinear
from converter.layers.quantized import Int8, int8_weight, parse_int8, quantize_input, rescale
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class DenseSpec(LayerSpec):
    units: int
    activation: str = "linear"
    use_bias: bool = True
    int8: Int8 | None = None  # Keras 3 model.quantize("int8"): int8 kernel + kernel_scale (layers/quantized.py)


@LAYERS.register("Dense")
class Dense(ChannelLinear, LayerHandler[DenseSpec]):
    """y = activation(x @ kernel + bias) over the last axis; kernel is stored (in, units), which a
    per-channel fold scales on its last axis, in the order MatMul reads it (ChannelLinear's default)."""

    keras3_args = ("units activation use_bias kernel_initializer bias_initializer kernel_regularizer "
                   "bias_regularizer kernel_constraint bias_constraint lora_rank lora_alpha "
                   "quantization_config")
    affine_activations = ("activation",)

    passes_mask = True
    folds_batch_norm = True

    required_arguments = ("units",)

    def permute_input_features(self, node: Node, dims: tuple[int, ...], perm: tuple[int, ...]) -> bool:
        """layers/traits.PermutesInputFeatures: the kernel's rows, read as a (dims...) block, transposed by
        `perm`. A new dict: a shared Dense layer's other calls keep their own kernel."""
        kernel = node.weights.get("kernel")
        if kernel is None or kernel.ndim != 2 or int(np.prod(dims)) != kernel.shape[0]:
            return False
        rows = kernel.reshape(*dims, kernel.shape[1]).transpose(*perm, len(dims))
        node.weights = {**node.weights, "kernel": np.ascontiguousarray(rows.reshape(kernel.shape))}
        return True

    def parse(self, config: Config) -> DenseSpec:
        return parse_fields(DenseSpec, config, activation=parse_activation(config), int8=parse_int8(config))

    def channel_axis(self, node: Node, rank: int) -> int | None:
        # An int8 kernel cannot absorb a float channel scale: no fold into a quantized Dense.
        spec = self.spec(node)
        return rank - 1 if spec.activation == "linear" and spec.int8 is None else None

    def weight_names(self, node: Node) -> list[str]:
        # Keras' variable_serialization_spec: int8 saves kernel, bias (when used), kernel_scale.
        names = ["kernel", "bias"] if self.spec(node).use_bias else ["kernel"]
        return names + ["kernel_scale"] if self.spec(node).int8 else names

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_min_rank(node, input_shapes[0], 2)  # before indexing: the rank error says more
        units = self.spec(node).units
        features = input_shapes[0][-1]
        shapes = {"kernel": (features if isinstance(features, int) else None, units), "bias": (units,)}
        return {**shapes, "kernel_scale": (units,)} if self.spec(node).int8 else shapes

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        (shape,) = input_shapes[:1]
        expect_min_rank(node, shape, 2)
        return [(*shape[:-1], self.spec(node).units)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        int8 = self.spec(node).int8
        if int8 is not None:
            return [apply_activation(b, self._int8_product(node, b, x, int8), self.spec(node).activation)]
        if "bias" in node.weights and len(node.outputs[0].shape or ()) == 2:
            y = b.op("Gemm", x, b.weight("kernel"), b.weight("bias"))
        else:
            y = b.op("MatMul", x, b.weight("kernel"))
            if "bias" in node.weights:
                y = b.op("Add", y, b.weight("bias"))
        return [apply_activation(b, y, self.spec(node).activation)]

    def _int8_product(self, node: Node, b: OpBuilder, x: str, int8: Int8) -> str:
        """Dense._int8_call: x quantized per row over the features, int8 @ int8, rescaled, plus bias."""
        input_scale = None
        if int8.inputs is not None:
            x, input_scale = quantize_input(b, x, [len(node.inputs[0].shape or ()) - 1], int8.inputs)
        product = b.op("MatMul", x, int8_weight(b, "kernel", node.weights["kernel"]))
        y = rescale(b, product, b.weight("kernel_scale"), input_scale)
        return b.op("Add", y, b.weight("bias")) if "bias" in node.weights else y


# Random augmentation layers transform images only when called with training=True (Keras 3's
# BaseImagePreprocessingLayer.transform_images and tf_keras' image_preprocessing both return the
# input unchanged otherwise). RandomCrop is not here: at inference it center-crops and resizes.
RANDOM_AUGMENTATION = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomHeight", "RandomWidth", "RandomShear", "RandomPerspective", "RandomElasticTransform", "RandomHue",
    "RandomSaturation", "RandomSharpness", "RandomGrayscale", "RandomInvert", "RandomPosterization",
    "RandomColorDegeneration", "RandomColorJitter", "RandomErasing", "RandomGaussianBlur", "AugMix", "CutMix",
    "MixUp", "RandAugment",
    # Equalization and Solarization transform only when training=True; MaxNumBoundingBoxes pads/truncates
    # bounding-box targets and returns the images unchanged.
    "Equalization", "Solarization", "MaxNumBoundingBoxes",
)


class InferenceIdentity(LayerHandler[NoArgs]):
    """Layers that only act while training; at inference they pass their input through. One configured
    instance per kind, as their masking traits differ."""

    keras3_args = {
        "ActivityRegularization": "l1 l2",
        "AlphaDropout": "rate noise_shape seed",
        "AugMix": ("value_range num_chains chain_depth factor alpha all_ops interpolation seed "
                   "data_format"),
        "CutMix": "factor seed data_format",
        "Dropout": "rate noise_shape seed",
        "GaussianDropout": "rate seed",
        "GaussianNoise": "stddev seed",
        "Identity": "",
        "MixUp": "alpha data_format seed",
        "RandAugment": "value_range num_ops factor interpolation seed data_format",
        "RandomBrightness": "factor value_range seed",
        "RandomColorDegeneration": "factor value_range data_format seed",
        "RandomColorJitter": ("value_range brightness_factor contrast_factor saturation_factor "
                              "hue_factor seed data_format"),
        "RandomContrast": "factor value_range seed",
        "RandomElasticTransform": ("factor scale interpolation fill_mode fill_value value_range seed "
                                   "data_format"),
        "RandomErasing": "factor scale fill_value value_range seed data_format",
        "RandomFlip": "mode seed data_format",
        "RandomGaussianBlur": "factor kernel_size sigma value_range data_format seed",
        "RandomGrayscale": "factor data_format seed",
        "RandomHue": "factor value_range data_format seed",
        "RandomInvert": "factor value_range seed data_format",
        "RandomPerspective": "factor scale interpolation fill_value seed data_format",
        "RandomPosterization": "factor value_range data_format seed",
        "RandomRotation": "factor fill_mode interpolation seed fill_value data_format",
        "RandomSaturation": "factor value_range data_format seed",
        "RandomSharpness": "factor value_range data_format seed",
        "RandomShear": "x_factor y_factor interpolation fill_mode fill_value data_format seed",
        "RandomTranslation": ("height_factor width_factor fill_mode interpolation seed fill_value "
                              "data_format"),
        "RandomZoom": "height_factor width_factor fill_mode interpolation seed fill_value data_format",
        "SpatialDropout1D": "rate seed name dtype",
        "SpatialDropout2D": "rate data_format seed name dtype",
        "SpatialDropout3D": "rate data_format seed name dtype",
    }
    keras_availability = {
        "AugMix": "keras3",
        "CutMix": "keras3",
        "Equalization": "keras3",
        "MaxNumBoundingBoxes": "keras3",
        "MixUp": "keras3",
        "RandAugment": "keras3",
        "RandomColorDegeneration": "keras3",
        "RandomColorJitter": "keras3",
        "RandomElasticTransform": "keras3",
        "RandomErasing": "keras3",
        "RandomGaussianBlur": "keras3",
        "RandomGrayscale": "keras3",
        "RandomHeight": "keras2",
        "RandomHue": "keras3",
        "RandomInvert": "keras3",
        "RandomPerspective": "keras3",
        "RandomPosterization": "keras3",
        "RandomSaturation": "keras3",
        "RandomSharpness": "keras3",
        "RandomShear": "keras3",
        "RandomWidth": "keras2",
        "Solarization": "keras3",
    }

    inference_identity = True
    layout_agnostic = True

    def __init__(self, passes_mask: bool = False, passes_mask_before_keras3: bool = False,
                 keras3_closed: bool = False) -> None:
        self.passes_mask = passes_mask
        self.passes_mask_before_keras3 = passes_mask_before_keras3
        self.keras3_closed = keras3_closed

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [inputs[0]]


# Keras' supports_masking: these hand the incoming mask on; Keras 3 drops it at SpatialDropout (Keras
# 1/2 kept it); the random augmentations (image layers) have no mask to pass.
for _kind in ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"):
    LAYERS.add(_kind, InferenceIdentity(passes_mask=True))
for _kind in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"):
    LAYERS.add(_kind, InferenceIdentity(passes_mask_before_keras3=True, keras3_closed=True))
for _kind in RANDOM_AUGMENTATION:
    LAYERS.add(_kind, InferenceIdentity())
