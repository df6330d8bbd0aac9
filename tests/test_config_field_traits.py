"""The class facts config validation asks of the handlers (converter/layers/registry.py traits
`argument_kinds`, `required_arguments`, `cell_layers`) name things converter/keras/config_fields.py
knows: a kind it defines, an argument the table would check, a layer handler a cell is checked like."""

from __future__ import annotations

import pytest

from converter.errors import FormatError
from converter.keras import config_fields
from converter.layers import LAYERS


def _handlers() -> list[tuple[str, object]]:
    return [(name, LAYERS.get(name)) for name in LAYERS.names()]


def test_every_argument_kind_is_one_config_fields_defines() -> None:
    unknown = {(name, key, kind) for name, handler in _handlers()
               for key, kind in getattr(handler, "argument_kinds", {}).items() if kind not in config_fields.KINDS}
    assert unknown == set()


def test_every_cell_is_checked_like_a_registered_layer() -> None:
    missing = {(name, cell, layer) for name, handler in _handlers()
               for cell, layer in getattr(handler, "cell_layers", {}).items() if LAYERS.get(layer) is None}
    assert missing == set()
    rnn = LAYERS.get("RNN")
    assert rnn is not None and rnn.cell_layers


@pytest.mark.parametrize(("cls", "key", "described"), [
    ("ZeroPadding2D", "padding", "an int >= 0, a list of 2 ints >= 0, or 2 [before, after] pairs"),
    ("Conv2D", "padding", "a string"),
    ("UpSampling2D", "size", "a positive int or a list of 2 positive ints"),
    ("Concatenate", "axis", "an int axis"),
    ("Dense", "size", None),
])
def test_a_name_means_what_the_class_handler_says(cls: str, key: str, described: str | None) -> None:
    kind = config_fields.kind_of(cls, key)
    assert (kind.describe(2) if kind else None) == described


def test_a_required_argument_comes_from_the_handler() -> None:
    with pytest.raises(FormatError, match=r"Embedding 'e' has no output_dim in its config \(Keras writes e.g. "
                                          r"output_dim=8\)"):
        config_fields.validate_fields("Embedding", "e", {"input_dim": 4})
    config_fields.validate_fields("ReversibleEmbedding", "e", {"input_dim": 4})  # output_dim arrives as units


def test_an_rnn_cell_is_checked_like_its_layer() -> None:
    with pytest.raises(FormatError, match="LSTMCell 'r/cell' has no units"):
        config_fields.validate_fields("RNN", "r", {"cell": {"class_name": "LSTMCell", "config": {}}})
    config_fields.validate_fields("RNN", "r", {"cell": {"class_name": "MyCell", "config": {}}})  # a custom cell
