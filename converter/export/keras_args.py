"""The constructor arguments Keras 3 layers accept, by class: what the .keras writer may put in a config.

Keras 3's `Layer.__init__` raises on any keyword it does not know, so a Keras 1/2 argument such as
`input_dim`, `input_length`, `implementation`, `time_major` or `fused` must not reach it. The table
lists each class's own `__init__` parameters (Keras 3.15, read with `inspect.signature`), without the
base `Layer` ones in BASE_ARGS. A class missing here has no Keras 3 built-in equivalent.
"""

from __future__ import annotations

BASE_ARGS = frozenset({"name", "trainable", "dtype", "activity_regularizer"})

_CONV_LSTM = ("filters kernel_size strides padding data_format dilation_rate activation recurrent_activation use_bias "
        "kernel_initializer recurrent_initializer bias_initializer unit_forget_bias kernel_regularizer "
        "recurrent_regularizer bias_regularizer kernel_constraint recurrent_constraint bias_constraint dropout "
        "recurrent_dropout seed return_sequences return_state go_backwards stateful unroll zero_output_for_mask")

_ARGS: dict[str, str] = {
    "InputLayer": "shape batch_size dtype sparse batch_shape input_tensor optional ragged",
    "Activation": "activation",
    "ActivityRegularization": "l1 l2",
    "Add": "",
    "AdditiveAttention": "use_scale dropout seed",
    "AlphaDropout": "rate noise_shape seed",
    "Attention": "use_scale score_mode dropout seed",
    "AugMix": "value_range num_chains chain_depth factor alpha all_ops interpolation seed data_format",
    "Average": "",
    "AveragePooling1D": "pool_size strides padding data_format",
    "AveragePooling2D": "pool_size strides padding data_format",
    "AveragePooling3D": "pool_size strides padding data_format",
    "BatchNormalization": ("axis momentum epsilon center scale beta_initializer gamma_initializer "
        "moving_mean_initializer moving_variance_initializer beta_regularizer "
        "gamma_regularizer beta_constraint gamma_constraint renorm renorm_clipping "
        "renorm_momentum synchronized"),
    "Bidirectional": "layer merge_mode backward_layer",
    "CenterCrop": "height width data_format",
    "Concatenate": "axis",
    "Conv1D": ("filters kernel_size strides padding data_format dilation_rate groups activation "
        "use_bias kernel_initializer bias_initializer kernel_regularizer bias_regularizer "
        "kernel_constraint bias_constraint"),
    "Conv1DTranspose": ("filters kernel_size strides padding output_padding data_format dilation_rate "
        "activation use_bias kernel_initializer bias_initializer kernel_regularizer "
        "bias_regularizer kernel_constraint bias_constraint"),
    "Conv2D": ("filters kernel_size strides padding data_format dilation_rate groups activation "
        "use_bias kernel_initializer bias_initializer kernel_regularizer bias_regularizer "
        "kernel_constraint bias_constraint"),
    "Conv2DTranspose": ("filters kernel_size strides padding output_padding data_format dilation_rate "
        "activation use_bias kernel_initializer bias_initializer kernel_regularizer "
        "bias_regularizer kernel_constraint bias_constraint"),
    "Conv3D": ("filters kernel_size strides padding data_format dilation_rate groups activation "
        "use_bias kernel_initializer bias_initializer kernel_regularizer bias_regularizer "
        "kernel_constraint bias_constraint"),
    "Conv3DTranspose": ("filters kernel_size strides padding data_format output_padding dilation_rate "
        "activation use_bias kernel_initializer bias_initializer kernel_regularizer "
        "bias_regularizer kernel_constraint bias_constraint"),
    "ConvLSTM1D": _CONV_LSTM,
    "ConvLSTM2D": _CONV_LSTM,
    "ConvLSTM3D": _CONV_LSTM,
    "Cropping1D": "cropping",
    "Cropping2D": "cropping data_format",
    "Cropping3D": "cropping data_format",
    "CutMix": "factor seed data_format",
    "Dense": ("units activation use_bias kernel_initializer bias_initializer kernel_regularizer "
        "bias_regularizer kernel_constraint bias_constraint lora_rank lora_alpha "
        "quantization_config"),
    "DepthwiseConv1D": ("kernel_size strides padding depth_multiplier data_format dilation_rate "
        "activation use_bias depthwise_initializer bias_initializer depthwise_regularizer "
        "bias_regularizer depthwise_constraint bias_constraint"),
    "DepthwiseConv2D": ("kernel_size strides padding depth_multiplier data_format dilation_rate "
        "activation use_bias depthwise_initializer bias_initializer depthwise_regularizer "
        "bias_regularizer depthwise_constraint bias_constraint"),
    "Dot": "axes normalize",
    "Dropout": "rate noise_shape seed",
    "ELU": "alpha",
    "EinsumDense": ("equation output_shape activation bias_axes kernel_initializer bias_initializer "
        "kernel_regularizer bias_regularizer kernel_constraint bias_constraint lora_rank "
        "lora_alpha gptq_unpacked_column_size quantization_config"),
    "Embedding": ("input_dim output_dim embeddings_initializer embeddings_regularizer "
        "embeddings_constraint mask_zero lora_rank lora_alpha quantization_config"),
    "Flatten": "data_format",
    "GRU": ("units activation recurrent_activation use_bias kernel_initializer "
        "recurrent_initializer bias_initializer kernel_regularizer recurrent_regularizer "
        "bias_regularizer kernel_constraint recurrent_constraint bias_constraint dropout "
        "recurrent_dropout seed return_sequences return_state go_backwards stateful "
        "unroll reset_after use_cudnn zero_output_for_mask"),
    "GaussianDropout": "rate seed",
    "GaussianNoise": "stddev seed",
    "GlobalAveragePooling1D": "data_format keepdims",
    "GlobalAveragePooling2D": "data_format keepdims",
    "GlobalAveragePooling3D": "data_format keepdims",
    "GlobalMaxPooling1D": "data_format keepdims",
    "GlobalMaxPooling2D": "data_format keepdims",
    "GlobalMaxPooling3D": "data_format keepdims",
    "GroupNormalization": ("groups axis epsilon center scale beta_initializer gamma_initializer "
        "beta_regularizer gamma_regularizer beta_constraint gamma_constraint"),
    "Identity": "",
    "LSTM": ("units activation recurrent_activation use_bias kernel_initializer "
        "recurrent_initializer bias_initializer unit_forget_bias kernel_regularizer "
        "recurrent_regularizer bias_regularizer kernel_constraint recurrent_constraint "
        "bias_constraint dropout recurrent_dropout seed return_sequences return_state "
        "go_backwards stateful unroll use_cudnn zero_output_for_mask"),
    "LayerNormalization": ("axis epsilon center scale beta_initializer gamma_initializer beta_regularizer "
        "gamma_regularizer beta_constraint gamma_constraint rms_scaling"),
    "LeakyReLU": "negative_slope",
    "Masking": "mask_value",
    "MaxPooling1D": "pool_size strides padding data_format",
    "MaxPooling2D": "pool_size strides padding data_format",
    "MaxPooling3D": "pool_size strides padding data_format",
    "Maximum": "",
    "Minimum": "",
    "MixUp": "alpha data_format seed",
    "MultiHeadAttention": ("num_heads key_dim value_dim dropout use_bias output_shape attention_axes "
        "sliding_window flash_attention kernel_initializer bias_initializer "
        "kernel_regularizer bias_regularizer kernel_constraint bias_constraint use_gate "
        "seed"),
    "Multiply": "",
    "Normalization": "axis mean variance invert",
    "PReLU": "alpha_initializer alpha_regularizer alpha_constraint shared_axes",
    "Permute": "dims",
    "RandAugment": "value_range num_ops factor interpolation seed data_format",
    "RandomBrightness": "factor value_range seed",
    "RandomColorDegeneration": "factor value_range data_format seed",
    "RandomColorJitter": ("value_range brightness_factor contrast_factor saturation_factor hue_factor seed "
        "data_format"),
    "RandomContrast": "factor value_range seed",
    "RandomElasticTransform": "factor scale interpolation fill_mode fill_value value_range seed data_format",
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
    "RandomTranslation": "height_factor width_factor fill_mode interpolation seed fill_value data_format",
    "RandomZoom": "height_factor width_factor fill_mode interpolation seed fill_value data_format",
    "ReLU": "max_value negative_slope threshold",
    "RepeatVector": "n",
    "Rescaling": "scale offset",
    "Reshape": "target_shape",
    "Resizing": ("height width interpolation crop_to_aspect_ratio pad_to_aspect_ratio fill_mode "
        "fill_value antialias data_format"),
    "SeparableConv1D": ("filters kernel_size strides padding data_format dilation_rate depth_multiplier "
        "activation use_bias depthwise_initializer pointwise_initializer bias_initializer "
        "depthwise_regularizer pointwise_regularizer bias_regularizer "
        "depthwise_constraint pointwise_constraint bias_constraint"),
    "SeparableConv2D": ("filters kernel_size strides padding data_format dilation_rate depth_multiplier "
        "activation use_bias depthwise_initializer pointwise_initializer bias_initializer "
        "depthwise_regularizer pointwise_regularizer bias_regularizer "
        "depthwise_constraint pointwise_constraint bias_constraint"),
    "SimpleRNN": ("units activation use_bias kernel_initializer recurrent_initializer "
        "bias_initializer kernel_regularizer recurrent_regularizer bias_regularizer "
        "kernel_constraint recurrent_constraint bias_constraint dropout recurrent_dropout "
        "return_sequences return_state go_backwards stateful unroll seed zero_output_for_mask"),
    "Softmax": "axis",
    "SpatialDropout1D": "rate seed name dtype",
    "SpatialDropout2D": "rate data_format seed name dtype",
    "SpatialDropout3D": "rate data_format seed name dtype",
    "Subtract": "",
    "TimeDistributed": "layer",
    "UnitNormalization": "axis",
    "UpSampling1D": "size",
    "UpSampling2D": "size data_format interpolation",
    "UpSampling3D": "size data_format",
    "ZeroPadding1D": "padding data_format",
    "ZeroPadding2D": "padding data_format",
    "ZeroPadding3D": "padding data_format",
}

# Classes whose `__init__` takes no `**kwargs`: exactly their own arguments, no `trainable`.
CLOSED = frozenset({"SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"})

# Keras 3 records some tensor operations of a functional model as nodes of their own (the mask of
# an Embedding(mask_zero=True) is `ops.not_equal(ids, 0)`); they are operations, not layers.
OP_CLASSES: dict[str, tuple[str, frozenset[str]]] = {
    "NotEqual": ("keras.src.ops.numpy", frozenset()),
    "Any": ("keras.src.ops.numpy", frozenset({"axis", "keepdims"})),
    "Transpose": ("keras.src.ops.numpy", frozenset({"axes"})),
}


def keras3_args(class_name: str) -> frozenset[str] | None:
    """Every keyword the Keras 3 class accepts, or None when Keras 3 has no such layer."""
    own = _ARGS.get(class_name)
    if own is None:
        return None
    return frozenset(own.split()) if class_name in CLOSED else BASE_ARGS | frozenset(own.split())
