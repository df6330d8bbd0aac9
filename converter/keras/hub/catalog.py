"""Every recipe module, imported once so that each registers its classes (recipes.BACKBONES / TASKS)."""
from converter.keras.hub import (
    resnet,  # noqa: F401
    vit,  # noqa: F401
)
