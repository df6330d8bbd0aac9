"""Dense and the inference-time identities (Dropout family)."""

from __future__ import annotations

from converter.ir import Node, Shape
from converter.layers.activations import apply_activation, check_activation
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank


@LAYERS.register("Dense")
class Dense(LayerHandler):
    """y = activation(x @ kernel + bias) over the last axis; kernel is stored (in, units)."""

    def check(self, node: Node) -> None:
        check_activation(node)

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if node.attr("use_bias", True) else ["kernel"]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        expect_min_rank(node, input_shapes[0], 2)  # before indexing: the rank error says more
        units = int(node.attrs["units"])
        features = input_shapes[0][-1]
        return {"kernel": (features if isinstance(features, int) else None, units), "bias": (units,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        (shape,) = input_shapes[:1]
        expect_min_rank(node, shape, 2)
        return [(*shape[:-1], int(node.attrs["units"]))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        x = inputs[0]
        if "bias" in node.weights and len(node.outputs[0].shape or ()) == 2:
            y = b.op("Gemm", x, b.weight("kernel"), b.weight("bias"))
        else:
            y = b.op("MatMul", x, b.weight("kernel"))
            if "bias" in node.weights:
                y = b.op("Add", y, b.weight("bias"))
        return [apply_activation(b, y, node.attrs.get("activation"))]


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


@LAYERS.register(
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", *RANDOM_AUGMENTATION,
)
class InferenceIdentity(LayerHandler):
    """Layers that only act while training; at inference they pass their input through."""

    inference_identity = True
    layout_agnostic = True

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [inputs[0]]
