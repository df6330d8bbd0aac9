"""Layer handlers, one module per family; importing this package registers them all, by name."""

from converter.layers import (  # noqa: F401  (imported for registration)
    activation_layers,
    activations,
    applications,
    attention,
    bidirectional,
    conv,
    conv_lstm,
    conv_transpose,
    core,
    einsum_dense,
    embedding,
    mask_layers,
    merge,
    multi_head_attention,
    normalization,
    normalization_extra,
    pooling,
    preprocessing,
    recurrent,
    reshape,
    rnn_wrapper,
    spatial,
    transpose,
    wrappers,
)
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, Registry

__all__ = ["LAYERS", "LayerHandler", "OpBuilder", "Registry"]
