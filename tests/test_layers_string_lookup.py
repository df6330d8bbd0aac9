"""StringLookup with a config vocabulary -> ONNX-ML LabelEncoder, against a numpy reference of Keras'
id layout; refusals for what cannot convert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5

import converter
from converter.errors import UnsupportedLayerError

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
TOKENS = np.array(["a", "zz", "b", "", "[PAD]", "[UNK]", "c", "é"], dtype=object)


def _model(**config: Any) -> dict[str, Any]:
    return functional([(input_layer("text", (2,), dtype="string"), []),
                       (layer("StringLookup", "lookup", **config), ["text"])], ["text"], ["lookup"])


def _reference(x: np.ndarray, vocabulary: list[str], mask: str | None) -> np.ndarray:
    """Keras: [mask ->] 0, OOV -> the next id, tokens after it (a leading [mask,] '[UNK]' is not a token)."""
    special = ([mask] if mask is not None else []) + ["[UNK]"]
    tokens = vocabulary[len(special):] if vocabulary[:len(special)] == special else vocabulary
    oov = 0 if mask is None else 1
    ids = {t: oov + 1 + i for i, t in enumerate(tokens)}
    out = np.array([ids.get(t, oov) for t in x.ravel()], dtype=np.int64).reshape(x.shape)
    return np.where(x == mask, 0, out) if mask is not None else out


CASES = [
    (["a", "b", "c"], None),
    (["a", "b", "c", "é"], ""),
    (["[PAD]", "[UNK]", "b", "a"], "[PAD]"),
    (["[UNK]", "c"], None),
]


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("vocabulary", "mask"), CASES)
def test_string_lookup(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int, vocabulary: list[str],
                       mask: str | None) -> None:
    config = _model(vocabulary=vocabulary, mask_token=mask, oov_token="[UNK]", num_oov_indices=1,
                    output_mode="int")
    model = converter.convert(SAVERS[fmt](tmp_path / f"m.{fmt}", config, {}))
    assert {o.domain: o.version for o in model.opset_import}.get("ai.onnx.ml") == 2
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    x = rng.choice(TOKENS, size=(batch, 2))
    (y,) = run_onnx(model, x)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, _reference(x, vocabulary, mask))


def test_float_model_imports_no_ml_domain(tmp_path: Path) -> None:
    config = functional([(input_layer("x", (2,)), []), (layer("Dense", "d", units=1), ["x"])], ["x"], ["d"])
    w = {"d": [np.ones((2, 1), np.float32), np.zeros(1, np.float32)]}
    model = converter.convert(save_keras(tmp_path / "m.keras", config, w))
    assert [o.domain for o in model.opset_import] == [""]


@pytest.mark.parametrize(("config", "match"), [
    ({"vocabulary": None}, "vocabulary is not in the config"),
    ({"vocabulary": "vocab.txt"}, "in the file 'vocab.txt' it names"),
    ({"vocabulary": ["a"], "invert": True}, "invert=True"),
    ({"vocabulary": ["a"], "output_mode": "one_hot"}, "output_mode 'one_hot'"),
    ({"vocabulary": ["a"], "num_oov_indices": 2}, "num_oov_indices=2"),
    ({"vocabulary": ["a", "a"]}, "repeats a token"),
])
def test_string_lookup_refusals(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=match):
        converter.convert(save_keras(tmp_path / "m.keras", _model(**config), {}))


def test_string_lookup_refuses_numeric_input(tmp_path: Path) -> None:
    config = functional([(input_layer("x", (2,)), []), (layer("StringLookup", "lookup", vocabulary=["a"]), ["x"])],
                        ["x"], ["lookup"])
    with pytest.raises(UnsupportedLayerError, match="its input is float32, not string"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))
