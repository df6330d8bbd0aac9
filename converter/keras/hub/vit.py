"""ViTBackbone and ViTImageClassifier (keras_hub/src/models/vit/vit_backbone.py, vit_image_classifier.py).

The backbone is `images` -> ViTPatchingAndEmbedding -> ViTEncoder (handlers in converter/layers/hub_vit.py);
its height and width are fixed (the position table's size). The classifier pools the first token
("token") or the mean of all tokens ("gap"), optionally a tanh Dense `pre_logits` (intermediate_dim), then
dropout and the `predictions` Dense, as Keras Hub's ViTImageClassifier builds it.
"""

from __future__ import annotations

from typing import Any

from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.image_classifier import predictions
from converter.keras.hub.recipes import BackboneGraph, HubModel, backbone, call_backbone, task

MAX_IMAGE_SIDE = 1 << 16
MAX_LAYERS = 1024  # as the ViTEncoder handler bounds it
POOLINGS = ("token", "gap")


def _image_shape(model: HubModel) -> tuple[int, int, int]:
    value = model.items("image_shape")
    if len(value) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMAGE_SIDE
                                  for v in value):
        raise model.refuse("image_shape", "expected (height, width, channels) as positive integers: ViT fixes "
                                          "its image size")
    return value[0], value[1], value[2]


def _patch_size(model: HubModel, image: tuple[int, int, int]) -> tuple[int, int]:
    value = model.args.value("patch_size")
    pair = model.integers("patch_size", maximum=MAX_IMAGE_SIDE) if isinstance(value, list) else \
        (model.integer("patch_size", maximum=MAX_IMAGE_SIDE),) * 2
    if len(pair) != 2:
        raise model.refuse("patch_size", "expected one size or a (height, width) pair")
    if image[0] % pair[0] or image[1] % pair[1]:
        raise model.refuse("patch_size", f"does not divide the image's height and width {image[:2]}")
    return pair[0], pair[1]


def _encoder_config(model: HubModel) -> dict[str, Any]:
    hidden = model.integer("hidden_dim")
    heads = model.integer("num_heads", maximum=hidden)
    return {"num_layers": model.integer("num_layers", maximum=MAX_LAYERS), "num_heads": heads,
            "hidden_dim": hidden, "mlp_dim": model.integer("mlp_dim"),
            "use_mha_bias": model.flag("use_mha_bias", True), "use_mlp_bias": model.flag("use_mlp_bias", True),
            "dropout_rate": model.number("dropout_rate", 0.0),
            "attention_dropout": model.number("attention_dropout", 0.0),
            "layer_norm_epsilon": model.number("layer_norm_epsilon", 1e-6)}


@backbone("ViTBackbone")
def vit_backbone(model: HubModel) -> BackboneGraph:
    if model.text("data_format", "channels_last") != "channels_last":
        raise model.refuse("data_format", "Keras Hub writes no data_format; only channels_last is read")
    image = _image_shape(model)
    encoder = _encoder_config(model)
    b = FunctionalBuilder(model.name)
    images = b.input("images", image)
    x = b.hub_layer("ViTPatchingAndEmbedding", "vit_patching_and_embedding", {
        "image_size": list(image[:2]), "patch_size": list(_patch_size(model, image)),
        "hidden_dim": encoder["hidden_dim"], "num_channels": image[2],
        "use_class_token": model.flag("use_class_token", True), "use_patch_bias": model.flag("use_patch_bias", True),
    }, images)
    return BackboneGraph(b, b.hub_layer("ViTEncoder", "vit_encoder", encoder, x))


def _pool(b: FunctionalBuilder, pooling: str, tokens: Ref) -> Ref:
    if pooling == "token":
        return b.op("GetItem", {}, tokens, [slice(None), 0])
    return b.op("Mean", {"axis": [1], "keepdims": False}, tokens)


@task("ViTImageClassifier")
def vit_image_classifier(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    b = FunctionalBuilder(task_model.name)
    tokens = call_backbone(b, backbone_model, graph)
    assert isinstance(tokens, Ref)  # ViTBackbone returns one sequence
    x = _pool(b, task_model.text("pooling", "token", choices=POOLINGS), tokens)
    intermediate = task_model.optional_integer("intermediate_dim")
    if intermediate is not None:
        x = b.layer("Dense", "pre_logits", {"units": intermediate, "activation": "tanh", "use_bias": True}, x)
    return b.build(predictions(b, task_model, x))
