"""Every recipe module, imported once so that each registers its classes (recipes.BACKBONES / TASKS)."""

from converter.keras.hub import (  # noqa: F401
    efficientnet,
    gemma,
    llama,
    mobilenet,
    resnet,
    text,
    vit,
)
