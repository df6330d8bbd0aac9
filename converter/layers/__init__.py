"""Layer handlers, one module per family; importing this package registers them all, by name."""

from converter.layers import activations, core, transpose  # noqa: F401  (registration)
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, Registry

__all__ = ["LAYERS", "LayerHandler", "OpBuilder", "Registry"]
