"""Localisation without TensorFlow: the layer map kconvert writes into the ONNX file, and runtime/localize.py
run against the *unperturbed* conversion standing in for Keras (tests/test_tf_localize.py uses live Keras).
One weight of one layer is perturbed; both modes must name exactly that layer (or, for a layer the
conversion folded into the next one's ops, the value that computes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from kmodels import layer, save_keras, sequential
from test_float16 import F, T, U, _cell

import converter
from converter.errors import FormatError
from converter.value_map import KERAS_VALUES_KEY
from runtime.localize import _values_of, localize
from runtime.localize_types import ACCUMULATED, ISOLATED, Localization
from runtime.session import make_session, session_feeds
from runtime.value_map import ValueMap, read_value_map

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOLERANCE = (1e-4, 1e-5)


def run_bytes(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = make_session(model, "cpu")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, session_feeds(session, feeds))))


class OnnxAsKeras:
    """The clean conversion as the reference: each mapped value, laid out as Keras lays it out."""

    def __init__(self, model: onnx.ModelProto, value_map: ValueMap, feeds: dict[str, np.ndarray]) -> None:
        self.model, self.value_map, self.feeds = model, value_map, feeds
        self.asked: list[list[str]] = []

    def layers(self) -> list[tuple[str, str]]:
        return [(m.layer, m.class_name) for m in self.value_map.layers]

    def outputs(self, layers: list[str]) -> dict[str, list[np.ndarray]]:
        self.asked.append(list(layers))
        wanted = [m for m in self.value_map.layers if m.layer in layers]
        values = _values_of(self.model, [m.value for m in wanted], self.feeds, run_bytes)
        found: dict[str, list[np.ndarray]] = {}
        for m in wanted:
            value = values[m.value]
            found.setdefault(m.layer, []).append(value if m.perm is None else np.transpose(value, m.perm))
        return found


def map_of(model: onnx.ModelProto) -> ValueMap:
    found = read_value_map({p.key: p.value for p in model.metadata_props}, "model")
    assert found is not None
    return found


def perturbed(model: onnx.ModelProto, initializer: str) -> onnx.ModelProto:
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    tensor = next(t for t in bad.graph.initializer if t.name == initializer)
    array = onnx.numpy_helper.to_array(tensor).copy()
    array.flat[0] += 0.5 + abs(float(array.flat[0]))
    tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    return bad


def random_feeds(model: onnx.ModelProto, rng: np.random.Generator, size: int = 2) -> dict[str, np.ndarray]:
    return {i.name: rng.standard_normal([d.dim_value or size for d in i.type.tensor_type.shape.dim]).astype("float32")
            for i in model.graph.input}


def localized(clean: onnx.ModelProto, bad: onnx.ModelProto, feeds: dict[str, np.ndarray],
              budget: int = 1 << 28) -> list[Localization]:
    value_map = map_of(clean)
    return localize(bad, value_map, OnnxAsKeras(clean, value_map, feeds), feeds, run_bytes, (ACCUMULATED, ISOLATED),
                    TOLERANCE, budget)


def assert_localized_to(found: list[Localization], target: str) -> None:
    for loc in found:
        first = loc.first_divergent
        assert first is not None, loc.mode
        assert target == first.layer or target in first.folded, (loc.mode, first.title)
    isolated = next(loc for loc in found if loc.mode == ISOLATED)
    assert [e.layer for e in isolated.layers if not e.ok] == [isolated.first_divergent.layer]  # type: ignore[union-attr]


def masked_lstm(rng: np.random.Generator, tmp_path: Path) -> tuple[Path, np.ndarray]:
    rnn = layer("LSTM", "rnn", units=U, return_sequences=True)
    config = sequential([layer("Masking", "masking", mask_value=-1.0), rnn,
                         layer("Dense", "head", units=3)], (T, F))
    weights: dict[str, Any] = {"rnn": {"cell": _cell(rng, "LSTM")},
                               "head": [rng.normal(size=(U, 3)).astype("float32"), np.zeros(3, "float32")]}
    x = rng.normal(size=(3, T, F)).astype("float32")
    x[0, 4:], x[1, :2] = -1.0, -1.0
    return save_keras(tmp_path / "masked.keras", config, weights), x


def test_the_map_names_every_layer_value_its_layout_and_what_was_folded() -> None:
    model = converter.convert(FIXTURES / "zoo" / "mobilenet_v2_a010" / "model.keras")
    raw = json.loads(next(p.value for p in model.metadata_props if p.key == KERAS_VALUES_KEY))
    produced = {out for node in model.graph.node for out in node.output}
    assert all(entry["value"] in produced for entry in raw["layers"])
    first = raw["layers"][0]
    assert (first["layer"], first["class"], first["folded"]) == ("bn_Conv1", "BatchNormalization", ["Conv1"])
    assert first["perm"] == [0, 2, 3, 1]  # the ONNX value is channels-first; Keras' is channels-last
    assert raw["outputs"] == {model.graph.output[0].name: None}
    assert len({entry["layer"] for entry in raw["layers"]}) == len(raw["layers"])


@pytest.mark.parametrize("target", ["conv2d", "conv2d_1", "dense"])
def test_a_perturbed_layer_is_named_in_both_modes(rng: np.random.Generator, target: str) -> None:
    clean = converter.convert(FIXTURES / "small_cnn" / "model.keras")
    found = localized(clean, perturbed(clean, f"{target}/kernel"), random_feeds(clean, rng))
    assert_localized_to(found, target)
    accumulated = found[0]
    after = [e.layer for e in accumulated.divergent_after]
    assert all(e.depth > accumulated.first_divergent.depth for e in accumulated.divergent_after)  # type: ignore[union-attr]
    assert target == "dense" or after  # an early error reaches the later layers


def test_a_conv_folded_into_its_batch_norm_is_named_with_it(rng: np.random.Generator) -> None:
    clean = converter.convert(FIXTURES / "zoo" / "mobilenet_v2_a010" / "model.keras")
    kernels = [t.name for t in clean.graph.initializer if t.name.startswith("block_3_project/")]
    assert kernels
    found = localized(clean, perturbed(clean, kernels[0]), random_feeds(clean, rng, 32))
    assert_localized_to(found, "block_3_project")
    assert found[1].first_divergent.layer == "block_3_project_BN"  # type: ignore[union-attr]
    assert found[1].first_divergent.title == "block_3_project_BN (BatchNormalization) + block_3_project folded in"  # type: ignore[union-attr]


def test_a_wrapped_layer_is_named_by_its_wrapper(rng: np.random.Generator) -> None:
    clean = converter.convert(FIXTURES / "time_distributed" / "model.keras")
    names = [m.layer for m in map_of(clean).layers]
    kernel = next(t.name for t in clean.graph.initializer if t.name.startswith(names[-1]))
    found = localized(clean, perturbed(clean, kernel), random_feeds(clean, rng))
    assert_localized_to(found, names[-1])
    assert found[0].first_divergent.class_name == "TimeDistributed"  # type: ignore[union-attr]


def test_a_masked_rnn_is_named(rng: np.random.Generator, tmp_path: Path) -> None:
    path, x = masked_lstm(rng, tmp_path)
    clean = converter.convert(path)
    recurrent = next(t.name for t in clean.graph.initializer
                     if t.name.startswith("rnn/") and "R" in t.name.split("/")[-1])
    found = localized(clean, perturbed(clean, recurrent), {clean.graph.input[0].name: x})
    assert_localized_to(found, "rnn")
    assert [e.layer for e in found[0].layers] == ["masking", "rnn", "head"]


def test_memory_is_bounded_by_the_budget(rng: np.random.Generator) -> None:
    """With a budget below one layer's values, one layer at a time is held; the answers do not change."""
    clean = converter.convert(FIXTURES / "small_cnn" / "model.keras")
    bad = perturbed(clean, "conv2d_1/kernel")
    feeds = random_feeds(clean, rng, 4)
    roomy, tight = localized(clean, bad, feeds), localized(clean, bad, feeds, budget=1)
    for wide, narrow in zip(roomy, tight):
        # onnxruntime fuses differently when other values are outputs: float32 rounding may differ
        assert [e.stats.max_abs for e in wide.layers] == pytest.approx([e.stats.max_abs for e in narrow.layers],
                                                                        rel=1e-4, abs=1e-5)
        assert [e.ok for e in wide.layers] == [e.ok for e in narrow.layers]
        largest_layer = max(2 * 4 * int(np.prod(e.stats.shape)) for e in narrow.layers)  # ONNX + Keras, float32
        assert narrow.peak_bytes <= largest_layer + 4 * int(np.prod(feeds["input_layer"].shape)) * 2
        assert narrow.peak_bytes <= wide.peak_bytes
    value_map = map_of(clean)
    keras = OnnxAsKeras(clean, value_map, feeds)
    localize(bad, value_map, keras, feeds, run_bytes, (ACCUMULATED,), TOLERANCE, budget=1)
    assert {len(asked) for asked in keras.asked} == {1}  # one layer per chunk


def test_values_an_optimiser_renamed_are_reported_unmapped(rng: np.random.Generator) -> None:
    clean = converter.convert(FIXTURES / "small_cnn" / "model.keras")
    renamed = onnx.ModelProto()
    renamed.CopyFrom(clean)
    value = next(m.value for m in map_of(clean).layers if m.layer == "max_pooling2d")
    for node in renamed.graph.node:
        node.output[:] = ["renamed_by_optimiser" if o == value else o for o in node.output]
        node.input[:] = ["renamed_by_optimiser" if i == value else i for i in node.input]
    found = localized(clean, renamed, random_feeds(clean, rng))
    assert all(loc.unmapped == ["max_pooling2d"] and loc.first_divergent is None for loc in found)


@pytest.mark.parametrize("text", [
    "{", '{"version": 2, "layers": []}', '{"version": 1, "layers": [1], "inputs": {}, "outputs": {}}',
    '{"version": 1, "inputs": {}, "outputs": {}, "layers": [{"layer": "a", "class": "B", "call": 0, "output": 0, '
    '"value": "v", "perm": [0, 0]}]}',
    '{"version": 1, "inputs": {"x": "nope"}, "outputs": {}, "layers": []}',
    '{"version": 1, "inputs": {}, "outputs": {}, "layers": [{"layer": "a", "class": "B", "call": -1, "output": 0, '
    '"value": "v"}]}',
])
def test_a_damaged_map_is_a_format_error(text: str) -> None:
    with pytest.raises(FormatError):
        read_value_map({KERAS_VALUES_KEY: text}, "model.onnx")


def test_a_file_without_a_map_has_none() -> None:
    assert read_value_map({}, "other_tool.onnx") is None
