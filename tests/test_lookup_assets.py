"""Adapted IntegerLookup / StringLookup: `vocabulary: null` in the config, the vocabulary in the .keras
archive's `assets/<inner path>/vocabulary.txt` (special tokens first, "\\n"-joined, as Keras' save_assets
writes it), against a numpy reference of Keras' id layout; refusals where no vocabulary can be found."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from converter.errors import FormatError, UnsupportedLayerError
from converter.keras import artifacts
from converter.keras.assets import vocabulary_lines
from converter.layers.categorical import IntegerLookupSpec


def _save_with_assets(path: Path, config: dict[str, Any], assets: dict[str, bytes],
                      keras_version: str = "3.15.1") -> Path:
    save_keras(path, config, {}, keras_version=keras_version)
    with zipfile.ZipFile(path, "a") as archive:
        for inner, text in assets.items():
            archive.writestr(f"assets/{inner}/vocabulary.txt", text)
    return path


def _int_lookup(x: np.ndarray, tokens: list[int], mask: int | None, oov: int) -> np.ndarray:
    """Keras' 'int' ids: [mask] [oov x num_oov] [tokens]; unknown -> floormod bucket; mask -> 0."""
    start = 1 if mask is not None else 0
    table = {t: start + oov + i for i, t in enumerate(tokens)}
    ids = np.vectorize(lambda v: table.get(int(v), start + int(v) % oov))(x)
    return ids if mask is None else np.where(x == mask, 0, ids)


@pytest.mark.parametrize(("mask", "oov"), [(None, 1), (0, 2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_adapted_integer_lookup(tmp_path: Path, rng: np.random.Generator, mask: int | None, oov: int,
                                batch: int) -> None:
    tokens = [12, 7, 9, 5]
    stored = ([] if mask is None else [mask]) + [-1] * oov + tokens
    cfg = layer("IntegerLookup", "ilk", vocabulary=None, mask_token=mask, num_oov_indices=oov, oov_token=-1,
                output_mode="int", vocabulary_dtype="int64")
    config = sequential([input_layer("in", (5,), "int64"), cfg])
    text = "\n".join(str(t) for t in stored).encode()
    model = converter.convert(_save_with_assets(tmp_path / "m.keras", config, {"layers/integer_lookup": text}))
    x = rng.choice([0, 12, 7, 9, 5, 4, 100, -3], size=(batch, 5)).astype("int64")
    (y,) = run_onnx(model, x)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, _int_lookup(x, tokens, mask, oov))


def test_adapted_integer_lookup_multi_hot(tmp_path: Path) -> None:
    """Encoded modes store no mask token in the vocabulary; the mask then encodes to nothing."""
    cfg = layer("IntegerLookup", "ilk", vocabulary=None, mask_token=3, output_mode="multi_hot", oov_token=-1)
    config = sequential([input_layer("in", (4,), "int64"), cfg])
    path = _save_with_assets(tmp_path / "m.keras", config, {"layers/integer_lookup": b"-1\n7\n9\n5"})
    model = converter.convert(path)
    x = np.array([[5, 7, 7, 100], [3, 9, 3, 3]], "int64")
    (y,) = run_onnx(model, x)
    expected = np.array([[1, 1, 0, 1], [0, 0, 1, 0]])  # ids: 0 = OOV, 1 = 7, 2 = 9, 3 = 5
    np.testing.assert_array_equal(y, expected)


def _string_model(nested: bool) -> dict[str, Any]:
    first = layer("StringLookup", "first", vocabulary=None, mask_token="", oov_token="[UNK]")
    second = layer("StringLookup", "second", vocabulary=None, mask_token=None, oov_token="[UNK]")
    if not nested:
        return functional([(input_layer("text", (3,), "string"), []), (first, ["text"]), (second, ["text"])],
                          ["text"], ["first", "second"])
    inner = functional([(input_layer("t", (3,), "string"), []), (first, ["t"]), (second, ["t"])],
                       ["t"], ["first", "second"], name="inner")
    inner["config"]["name"] = inner["name"] = "inner"
    config = functional([(input_layer("text", (3,), "string"), []), (inner, ["text"])], ["text"], ["inner"])
    config["config"]["output_layers"] = [["inner", 0, 0], ["inner", 0, 1]]
    return config


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_adapted_string_lookups(tmp_path: Path, nested: bool, batch: int) -> None:
    """Two lookups of one class: the saved names string_lookup / string_lookup_1 pick each one's assets."""
    prefix = "layers/functional/" if nested else ""
    assets = {f"{prefix}layers/string_lookup": "\n[UNK]\ny\né\nc c".encode(),
              f"{prefix}layers/string_lookup_1": b"[UNK]\nb\na\ny"}
    model = converter.convert(_save_with_assets(tmp_path / "m.keras", _string_model(nested), assets))
    x = np.array([["y", "é", ""], ["c c", "a", "zz"], ["b", "y", "[UNK]"]][:batch], dtype=object)
    first, second = run_onnx(model, x)
    table1 = {"": 0, "y": 2, "é": 3, "c c": 4}
    table2 = {"b": 1, "a": 2, "y": 3}
    np.testing.assert_array_equal(first, np.vectorize(lambda t: table1.get(t, 1))(x))
    np.testing.assert_array_equal(second, np.vectorize(lambda t: table2.get(t, 0))(x))


@pytest.mark.parametrize(("raw", "keras3", "lines"), [
    (b"[UNK]\na\nb", True, ["[UNK]", "a", "b"]),
    (b"[UNK]\r\na\n\n", True, ["[UNK]", "a"]),  # Keras 3: universal newlines, trailing empty lines dropped
    (b"\n[UNK]\na", True, ["", "[UNK]", "a"]),  # a leading empty mask token stays
    (b"[UNK]\na\x0bb", True, ["[UNK]", "a", "b"]),  # str.splitlines() also splits at \x0b
    (b"[UNK]\na\x0bb\n", False, ["[UNK]", "a\x0bb", ""]),  # tf_keras: split("\n") only
])
def test_vocabulary_lines(raw: bytes, keras3: bool, lines: list[str]) -> None:
    assert vocabulary_lines(raw, keras3, "asset") == lines


@pytest.mark.parametrize("cls, match", [("IntegerLookup", "assets"), ("StringLookup", "vocabulary is not in")])
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_missing_vocabulary_is_refused(tmp_path: Path, cls: str, match: str, fmt: str) -> None:
    dtype = "int64" if cls == "IntegerLookup" else "string"
    config = sequential([input_layer("in", (2,), dtype), layer(cls, "lk", vocabulary=None)])
    saver = save_keras if fmt == "keras" else save_legacy_h5
    path = saver(tmp_path / f"m.{fmt}", config, {})
    if fmt == "keras":  # an asset for another layer is not this one's
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("assets/layers/other_lookup/vocabulary.txt", b"[UNK]\na")
    with pytest.raises(UnsupportedLayerError, match=match):
        converter.convert(path)


def test_integer_lookup_vocabulary_file_path_is_refused(tmp_path: Path) -> None:
    config = sequential([input_layer("in", (2,), "int64"), layer("IntegerLookup", "lk", vocabulary="/tmp/v.txt")])
    with pytest.raises(UnsupportedLayerError, match="names the vocabulary file '/tmp/v.txt'"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


def test_non_integer_token_is_a_format_error(tmp_path: Path) -> None:
    config = sequential([input_layer("in", (2,), "int64"), layer("IntegerLookup", "lk", vocabulary=None)])
    path = _save_with_assets(tmp_path / "m.keras", config, {"layers/integer_lookup": b"-1\n4\nfour"})
    with pytest.raises(FormatError, match="holds 'four', not an integer token"):
        converter.convert(path)


def test_oversized_asset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sequential([input_layer("in", (2,), "string"), layer("StringLookup", "lk", vocabulary=None)])
    path = _save_with_assets(tmp_path / "m.keras", config, {"layers/string_lookup": b"[UNK]\n" + b"a" * 100})
    monkeypatch.setattr(artifacts, "MAX_ASSET_BYTES", 64)
    with pytest.raises(FormatError, match="refusing an oversized asset|claims 106 bytes"):
        converter.convert(path)


def test_adapted_vocabulary_is_typed_in_the_spec(tmp_path: Path) -> None:
    """The assets' lines reach the parsed spec as the lookup's tokens: ints for IntegerLookup."""
    cfg = layer("IntegerLookup", "ilk", vocabulary=None, mask_token=None, oov_token=-1, output_mode="int")
    config = sequential([input_layer("in", (4,), "int64"), cfg])
    path = _save_with_assets(tmp_path / "m.keras", config, {"layers/integer_lookup": b"-1\n7\n9\n5"})
    loaded = converter.api.load(path)
    (node,) = [n for n in loaded.graph.nodes if n.kind == "IntegerLookup"]
    assert isinstance(node.spec, IntegerLookupSpec) and node.spec.vocabulary == (-1, 7, 9, 5)
    loaded.artifact.close()
