"""Every layer argument kconvert reads, with its kind and range: checked once, where a layer config enters.

`validate_fields` runs in `layer_configs.make_node` on each layer's canonical config (after
`dialects.canonical_config` renamed Keras 1 arguments), for wrapped layers and RNN cells too. A value
of the wrong kind becomes a FormatError naming the layer and the argument, with what Keras writes
there; a value Keras accepts is normalised to what the handlers read (`config_kinds.py`). Handlers then
read typed values: `int(node.attrs["units"])` cannot fail on a string, a NaN or a nested list.

The table is keyed by canonical argument name; where a name means something else in some classes
(`padding` is a string for Conv but amounts for ZeroPadding; `size` is a repeat count for UpSampling),
the class's handler names the argument's kind in its `argument_kinds` trait (one of `KINDS`). Which
arguments a class requires is its handler's `required_arguments`; which cells an RNN holds, its
`cell_layers`: facts about classes live with their handlers, how a value is checked lives here. Only
Keras' own classes whose arguments kconvert reads are checked (`layer_configs.is_builtin`): a custom
layer's arguments mean what its author says.
Input-shape arguments (`input_shape`, `batch_input_shape`, `input_dim` outside Embedding, ...) belong
to the shape-semantics pass. Names (`padding`, `interpolation`, ...) are checked for kind only: the
handlers refuse the values they do not convert as unsupported, listed with the model's other
unsupported layers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from converter.errors import FormatError
from converter.keras import config_kinds as k
from converter.keras.config_kinds import Invalid, Kind
from converter.layers.registry import LAYERS, LayerHandler

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

AMOUNTS = Kind("an int >= 0, a list of {n} ints >= 0, or {n} [before, after] pairs", "[1, 1] or [[1, 0], [0, 1]]",
               k.amounts)

# The kinds a handler's `argument_kinds` (converter/layers/registry.py) names, for the arguments whose name
# means something else in its classes than FIELDS says (ZeroPadding's `padding` is amounts, not a mode).
# Which class takes which is the handler's fact; how a value of the kind is checked and normalised is
# this boundary's.
KINDS: dict[str, Kind] = {
    "amounts": AMOUNTS,
    "window": WINDOW,
    "positive": POSITIVE,
    "text": TEXT,
    "numbers": NUMBERS,
    "positive_or_minus_one": Kind("a positive int or -1", "32",
                                  lambda v, r: k.integer(v, -1) if v == -1 else k.positive_int(v, r)),
    "int_or_null": Kind("an int (or null)", "0", k.any_int),
    "int": Kind("an int", "-1", k.any_int),
    "int_tokens": Kind("a list of ints", "[12, 36, 1138]", k.tokens(k.any_int)),
    "text_tokens": Kind("a list of strings", '["a", "b"]', k.tokens(k.text)),
    "one_to_three": Kind("1, 2 or 3", "1", lambda v, r: k.integer(v, 1, 3)),
    "one_axis": Kind("an int axis", "-1", k.one_axis),
    "axis_list": Kind("a list of int axes", "[0, 2, 1]", k.axes),
}
# Arguments read only in the classes whose handler names their kind: elsewhere they are shape arguments
# (`input_dim`, checked by the shape-semantics pass) or mean what each class says.
CLASS_ONLY = frozenset({"input_dim", "output_dim", "size", "length", "mask_token", "oov_token", "vocabulary"})
# The container of an RNN's cells (its config lists cells, each checked like a layer): not a cell itself.
STACKED_CELLS = "StackedRNNCells"
_RANK = re.compile(r"([123])D")


def spatial_rank(cls: str) -> int | None:
    """1, 2 or 3 for the `...1D` / `...2D` / `...3D` classes (Conv2DTranspose, ConvLSTM3D, ...)."""
    found = _RANK.search(cls)
    return int(found.group(1)) if found else None


def kind_of(cls: str, key: str, handler: LayerHandler[Any] | None = None) -> Kind | None:
    """The kind of argument `key` of class `cls`, whose facts its handler (or the one given) holds."""
    facts = handler if handler is not None else LAYERS.get(cls)
    own = facts.argument_kinds.get(key) if facts is not None else None
    if own is not None:
        return KINDS[own]
    if key in CLASS_ONLY:
        return None  # shape arguments, or meaningful only in the classes whose handler names their kind
    return FIELDS.get(key)


def validate_fields(cls: str, name: str, attrs: dict[str, Any], handler: LayerHandler[Any] | None = None) -> None:
    """Check and normalise, in place, every argument of one built-in layer's canonical config. The class's
    facts (its arguments' kinds, the required ones, its cells) are its handler's traits; an RNN cell, which
    has no handler, gives the handler of the layer computing the same."""
    facts = handler if handler is not None else LAYERS.get(cls)
    rank = spatial_rank(cls)
    for key in facts.required_arguments if facts is not None else ():
        if attrs.get(key) is None:
            kind = kind_of(cls, key, facts)
            example = f" (Keras writes e.g. {key}={kind.example})" if kind else ""
            raise FormatError(f"{cls} '{name}' has no {key} in its config{example}", layer=name,
                              hint=f"{cls} cannot be built without {key}: the file's config is damaged or incomplete")
    for key, value in attrs.items():
        kind = kind_of(cls, key, facts)
        if kind is None or value is None:
            continue
        try:
            attrs[key] = kind.parse(value, rank)
        except Invalid:
            raise FormatError(
                f"layer '{name}': {key} must be {kind.describe(rank)}, got {_shown(value)}", layer=name,
                hint=f"Keras writes {key} of a {cls} as {kind.example}; the file's config is damaged or was "
                     "edited by hand") from None
    if facts is not None and facts.cell_layers:
        _validate_cells(name, attrs.get("cell"), facts.cell_layers)


def _validate_cells(name: str, cell: Any, cell_layers: Mapping[str, str]) -> None:
    """An RNN layer's cell (or StackedRNNCells' cells): each cell's config is checked like a layer's."""
    if not isinstance(cell, dict) or (cell.get("class_name") not in cell_layers
                                      and cell.get("class_name") != STACKED_CELLS):
        return
    config = cell.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"RNN '{name}' has a {cell['class_name']} without a config", layer=name,
                          hint="the file's config is damaged or incomplete")
    if cell["class_name"] == STACKED_CELLS:
        cells = config.get("cells")
        if not isinstance(cells, list) or not cells or not all(isinstance(c, dict) and "class_name" in c
                                                               for c in cells):
            raise FormatError(f"layer '{name}': {STACKED_CELLS} must hold a list of cell configs, got {_shown(cells)}",
                              layer=name, hint="the file's config is damaged or incomplete")
        for inner in cells:
            _validate_cells(name, inner, cell_layers)
        return
    cls = str(cell["class_name"])
    layer = LAYERS.get(cell_layers[cls])
    validate_fields(cls, f"{name}/{config.get('name') or 'cell'}", config, layer)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
