"""Layer handlers, one module per family; importing this package registers them all, by name."""

from converter.layers import (  # noqa: F401  (imported for registration)
    activation_layers,
    activations,
    adaptive_pooling,
    applications,
    attention,
    auto_contrast,
    batch_normalization,
    bidirectional,
    categorical,
    clahe,
    conv,
    conv_lstm,
    conv_transpose,
    core,
    einsum_dense,
    embedding,
    feature_normalization,
    grouped_attention,
    hub_efficientnet,
    hub_gemma,
    hub_llama,
    hub_mobilenet,
    hub_text,
    hub_vit,
    locally_connected,
    mask_layers,
    mel_spectrogram,
    merge,
    multi_head_attention,
    pipeline,
    pooling,
    preprocessing,
    recurrent,
    reshape,
    reversible_embedding,
    rnn_wrapper,
    spatial,
    spectral_normalization,
    spectrogram,
    string_lookup,
    transpose,
    wrappers,
)

# The tensor-function front ends and the function modules filling their tables (after the layers:
# the tables are theirs alone).
from converter.layers import (  # noqa: F401,E402  isort: skip
    keras_op_nodes,
    op_activations,
    op_join,
    op_math,
    op_products,
    op_reductions,
    op_reshape,
    op_shape,
    op_special,
    tf_op_layers,
)
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler, Registry

__all__ = ["LAYERS", "LayerHandler", "OpBuilder", "Registry"]
