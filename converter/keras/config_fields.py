"""Every layer argument kconvert reads, with its kind and range: checked once, where a layer config enters.

`validate_fields` runs in `layer_configs.make_node` on each layer's canonical config (after
`dialects.canonical_config` renamed Keras 1 arguments), for wrapped layers and RNN cells too. A value
of the wrong kind becomes a FormatError naming the layer and the argument, with what Keras writes
there; a value Keras accepts is normalised to what the handlers read (`config_kinds.py`). Handlers then
read typed values: `int(node.attrs["units"])` cannot fail on a string, a NaN or a nested list.

The table is keyed by canonical argument name; where a name means something else in some classes
(`padding` is a string for Conv but amounts for ZeroPadding; `size` is a repeat count for UpSampling),
`FAMILY_FIELDS` overrides it for those classes. Only Keras' own classes whose arguments kconvert reads
are checked (`layer_configs.is_builtin`): a custom layer's arguments mean what its author says.
Input-shape arguments (`input_shape`, `batch_input_shape`, `input_dim` outside Embedding, ...) belong
to the shape-semantics pass. Names (`padding`, `interpolation`, ...) are checked for kind only: the
handlers refuse the values they do not convert as unsupported, listed with the model's other
unsupported layers.
"""

from __future__ import annotations

import re
from typing import Any

from converter.errors import FormatError
from converter.keras import config_kinds as k
from converter.keras.config_kinds import Invalid, Kind

POSITIVE = Kind("a positive int", "8", k.positive_int)
NON_NEGATIVE = Kind("an int >= 0", "1", k.non_negative_int)
WINDOW = Kind("a positive int or a list of {n} positive ints", "3 or [3, 3]", k.int_tuple(1))
NON_NEGATIVE_TUPLE = Kind("an int >= 0 or a list of {n} ints >= 0", "0 or [1, 1]", k.int_tuple(0))
BOOL = Kind("true or false", "true", k.boolean)
FLOAT = Kind("a finite number", "0.001", k.finite())
NON_NEGATIVE_FLOAT = Kind("a finite number >= 0", "6.0", k.finite(0.0))
RATE = Kind("a number between 0 and 1", "0.5", k.finite(0.0, 1.0))
AXES = Kind("an int axis or a list of int axes", "-1 or [1, 2]", k.axes)
TEXT = Kind("a string", '"ab,bc->ac"', k.text)
LOWER_TEXT = Kind("a string", '"same"', k.lowered)
ACTIVATION = Kind("an activation name or a serialised activation", '"relu"', k.activation)
NUMBERS = Kind("a number or a list of numbers", "0.5 or [0.1, 0.2, 0.3]", k.numbers)
NUMBER_PAIR = Kind("a list of 2 numbers", "[0, 255]", k.number_pair)
NESTED = Kind("a layer config (a JSON object)", '{"class_name": "LSTM", "config": {...}}', k.structure)

FIELDS: dict[str, Kind] = {
    **dict.fromkeys((
        "units", "filters", "num_heads", "key_dim", "value_dim", "n", "depth_multiplier", "num_tokens",
        "num_query_heads", "num_key_value_heads", "head_dim", "num_mel_bins", "sampling_rate", "fft_length",
        "sequence_length", "sequence_stride", "frame_length", "frame_step", "height", "width", "max_tokens",
        "projection_dim", "sliding_window", "lora_rank", "num_bins", "groups"), POSITIVE),
    "num_oov_indices": NON_NEGATIVE,
    **dict.fromkeys(("kernel_size", "strides", "dilation_rate", "pool_size", "output_size",
                     "tile_grid_size"), WINDOW),
    "output_padding": NON_NEGATIVE_TUPLE,
    **dict.fromkeys((
        "use_bias", "return_sequences", "return_state", "go_backwards", "stateful", "unroll", "center", "scale",
        "mask_zero", "use_scale", "use_gate", "causal", "normalize", "keepdims", "invert", "sparse",
        "pad_to_max_tokens", "crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias", "reset_after",
        "time_major", "zero_output_for_mask", "rms_scaling", "renorm", "power_to_db", "expand_dims",
        "tie_weights", "unit_forget_bias"), BOOL),
    **dict.fromkeys(("epsilon", "momentum", "alpha", "mask_value", "theta", "stddev", "l1", "l2", "clip_limit",
                     "mag_exp", "min_power", "ref_power", "min_freq", "max_freq", "top_db", "logit_soft_cap",
                     "negative_slope", "threshold"), FLOAT),
    **dict.fromkeys(("rate", "dropout", "recurrent_dropout"), RATE),
    "max_value": NON_NEGATIVE_FLOAT,  # Keras 2 and 3 refuse a negative ReLU max_value
    "axis": AXES,
    "attention_axes": AXES,
    "shared_axes": Kind("an axis >= 1 or a list of them", "[1, 2]", k.int_tuple(1)),
    "axes": Kind("an int axis or a list of 2 axes", "1 or [1, 2]", k.axis_pair),
    "activation": ACTIVATION,
    "recurrent_activation": ACTIVATION,
    "data_format": LOWER_TEXT,
    "padding": LOWER_TEXT,
    **dict.fromkeys(("interpolation", "merge_mode", "output_mode", "score_mode", "equation", "bias_axes",
                     "oov_method", "encoding", "quantization_mode"), TEXT),
    "target_shape": Kind("a list of positive ints with at most one -1", "[8, -1]", k.target_shape),
    "dims": Kind("a list of 1-based sample axes", "[2, 1]", k.permutation),
    "bin_boundaries": Kind("a sorted list of numbers", "[0.0, 1.0, 2.0]", k.sorted_numbers),
    "value_range": NUMBER_PAIR,
    "window": Kind("a window name or a list of weights", '"hann"', k.window),
    "output_shape": Kind("a positive int or a list of positive ints (null for unknown)", "[16]", k.dims_or_none),
    **dict.fromkeys(("layer", "backward_layer", "cell"), NESTED),
}

# Classes whose arguments of the same name mean something else, by family.
FAMILIES: dict[str, tuple[str, ...]] = {
    "padding_amounts": ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D"),
    "upsampling": ("UpSampling1D", "UpSampling2D", "UpSampling3D"),
    "embedding": ("Embedding", "ReversibleEmbedding"),
    "group_norm": ("GroupNormalization",),
    "rescaling": ("Rescaling",),
    "normalization": ("Normalization",),
    "integer_lookup": ("IntegerLookup",),
    "string_lookup": ("StringLookup",),
    "locally_connected": ("LocallyConnected1D", "LocallyConnected2D"),
    "spectrogram": ("STFTSpectrogram",),
    "concatenate": ("Concatenate",),
    "transpose": ("Transpose",),  # the Keras 3 op node ops.transpose: `axes` is a whole permutation
}
FAMILY_OF = {cls: family for family, classes in FAMILIES.items() for cls in classes}
AMOUNTS = Kind("an int >= 0, a list of {n} ints >= 0, or {n} [before, after] pairs", "[1, 1] or [[1, 0], [0, 1]]",
               k.amounts)
FAMILY_FIELDS: dict[tuple[str, str], Kind] = {
    ("padding_amounts", "padding"): AMOUNTS,
    ("padding_amounts", "cropping"): AMOUNTS,
    ("upsampling", "size"): WINDOW,
    ("upsampling", "length"): POSITIVE,  # Keras 1 UpSampling1D
    ("embedding", "input_dim"): POSITIVE,
    ("embedding", "output_dim"): POSITIVE,
    ("embedding", "reverse_dtype"): TEXT,
    ("group_norm", "groups"): Kind("a positive int or -1", "32",
                                   lambda v, r: k.integer(v, -1) if v == -1 else k.positive_int(v, r)),
    ("rescaling", "scale"): NUMBERS,
    ("rescaling", "offset"): NUMBERS,
    ("normalization", "mean"): NUMBERS,
    ("normalization", "variance"): NUMBERS,
    ("integer_lookup", "mask_token"): Kind("an int (or null)", "0", k.any_int),
    ("integer_lookup", "oov_token"): Kind("an int", "-1", k.any_int),
    ("integer_lookup", "vocabulary"): Kind("a list of ints", "[12, 36, 1138]", k.tokens(k.any_int)),
    ("string_lookup", "mask_token"): TEXT,
    ("string_lookup", "oov_token"): TEXT,
    ("string_lookup", "vocabulary"): Kind("a list of strings", '["a", "b"]', k.tokens(k.text)),
    ("locally_connected", "implementation"): Kind("1, 2 or 3", "1", lambda v, r: k.integer(v, 1, 3)),
    ("spectrogram", "mode"): TEXT,
    ("concatenate", "axis"): Kind("an int axis", "-1", k.one_axis),
    ("transpose", "axes"): Kind("a list of int axes", "[0, 2, 1]", k.axes),
}

# Arguments a class cannot do without (Keras has no default for them).
REQUIRED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("Dense", "SimpleRNN", "GRU", "LSTM", "LSTMCell", "GRUCell", "SimpleRNNCell"), ("units",)),
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose",
                     "Conv2DTranspose", "Conv3DTranspose", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
                     "LocallyConnected1D", "LocallyConnected2D"), ("filters", "kernel_size")),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), ("kernel_size",)),
    "Embedding": ("input_dim", "output_dim"),
    "ReversibleEmbedding": ("input_dim",),  # its output_dim arrives renamed to units (dialects' generic rename)
    "Reshape": ("target_shape",),
    "Permute": ("dims",),
    "RepeatVector": ("n",),
    "Dot": ("axes",),
    "MultiHeadAttention": ("num_heads", "key_dim"),
    **dict.fromkeys(("GroupQueryAttention", "GroupedQueryAttention"),
                    ("head_dim", "num_query_heads", "num_key_value_heads")),
    "EinsumDense": ("equation", "output_shape"),
    **dict.fromkeys(("Resizing", "CenterCrop"), ("height", "width")),
    "CategoryEncoding": ("num_tokens",),
    **dict.fromkeys(("AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
                     "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D"), ("output_size",)),
    **dict.fromkeys(("TimeDistributed", "Bidirectional", "SpectralNormalization"), ("layer",)),
    "RNN": ("cell",),
}

# The recurrent cells an RNN layer holds in its `cell` argument (their configs are checked like layers).
CELL_CLASSES = frozenset({"LSTMCell", "GRUCell", "SimpleRNNCell", "StackedRNNCells"})
_RANK = re.compile(r"([123])D")


def spatial_rank(cls: str) -> int | None:
    """1, 2 or 3 for the `...1D` / `...2D` / `...3D` classes (Conv2DTranspose, ConvLSTM3D, ...)."""
    found = _RANK.search(cls)
    return int(found.group(1)) if found else None


def kind_of(cls: str, key: str) -> Kind | None:
    family = FAMILY_OF.get(cls)
    if family is not None and (family, key) in FAMILY_FIELDS:
        return FAMILY_FIELDS[(family, key)]
    if key in ("input_dim", "output_dim", "size", "length", "mask_token", "oov_token", "vocabulary"):
        return None  # shape arguments, or meaningful only in the families above
    return FIELDS.get(key)


def validate_fields(cls: str, name: str, attrs: dict[str, Any]) -> None:
    """Check and normalise, in place, every argument of one built-in layer's canonical config."""
    rank = spatial_rank(cls)
    for key in REQUIRED.get(cls, ()):
        if attrs.get(key) is None:
            kind = kind_of(cls, key)
            example = f" (Keras writes e.g. {key}={kind.example})" if kind else ""
            raise FormatError(f"{cls} '{name}' has no {key} in its config{example}", layer=name,
                              hint=f"{cls} cannot be built without {key}: the file's config is damaged or incomplete")
    for key, value in attrs.items():
        kind = kind_of(cls, key)
        if kind is None or value is None:
            continue
        try:
            attrs[key] = kind.parse(value, rank)
        except Invalid:
            raise FormatError(
                f"layer '{name}': {key} must be {kind.describe(rank)}, got {_shown(value)}", layer=name,
                hint=f"Keras writes {key} of a {cls} as {kind.example}; the file's config is damaged or was "
                     "edited by hand") from None
    _validate_cells(name, attrs.get("cell") if cls == "RNN" else None)


def _validate_cells(name: str, cell: Any) -> None:
    """An RNN layer's cell (or StackedRNNCells' cells): each cell's config is checked like a layer's."""
    if not isinstance(cell, dict) or cell.get("class_name") not in CELL_CLASSES:
        return
    config = cell.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"RNN '{name}' has a {cell['class_name']} without a config", layer=name,
                          hint="the file's config is damaged or incomplete")
    if cell["class_name"] == "StackedRNNCells":
        cells = config.get("cells")
        if not isinstance(cells, list) or not cells or not all(isinstance(c, dict) and "class_name" in c
                                                               for c in cells):
            raise FormatError(f"layer '{name}': StackedRNNCells must hold a list of cell configs, got {_shown(cells)}",
                              layer=name, hint="the file's config is damaged or incomplete")
        for inner in cells:
            _validate_cells(name, inner)
        return
    validate_fields(str(cell["class_name"]), f"{name}/{config.get('name') or 'cell'}", config)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
