"""Keras Hub models the way users hold them: a task saved with its preprocessor (the README's recipe for
running the tokenizer beside the ONNX), a preset folder, `--check` against Keras Hub, `kconvert batch`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_support import hub, randomize, run

import converter

pytestmark = pytest.mark.tf

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jumps", "over",
              "lazy", "dog", "a", "cat", "sat"]
SENTENCES = ["the quick brown fox", "a lazy dog jumps over the cat", "the cat sat"]


def _backbone() -> Any:
    return hub().models.BertBackbone(vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=16)


def _classifier_with_preprocessor() -> Any:
    models = hub().models
    tokenizer = models.BertTokenizer(vocabulary=VOCABULARY)
    preprocessor = models.BertTextClassifierPreprocessor(tokenizer, sequence_length=12)
    classifier = models.BertTextClassifier(_backbone(), num_classes=2, preprocessor=preprocessor)
    randomize(classifier, seed=3, scale=0.3)
    return classifier


def test_the_readme_recipe_runs_the_saved_tokenizer_beside_the_onnx(tmp_path: Path) -> None:
    """The task saved with its preprocessor converts (with a warning); the preprocessor loaded back from the
    same file makes the ONNX inputs from strings, and the ONNX logits equal Keras' predict on the strings."""
    keras = pytest.importorskip("keras")
    classifier = _classifier_with_preprocessor()
    path = tmp_path / "bert_classifier.keras"
    classifier.save(path)
    with pytest.warns(UserWarning, match="saved with its preprocessor"):
        onnx_model = converter.convert(path)
    preprocessor = keras.saving.load_model(path).preprocessor
    features = preprocessor(SENTENCES)
    feeds = {name: np.asarray(value).astype("int32") for name, value in features.items()}  # as the README says
    logits = run(onnx_model, feeds)["logits"]
    np.testing.assert_allclose(logits, classifier.predict(SENTENCES, verbose=0), rtol=1e-4, atol=1e-5)
    assert np.asarray(features["padding_mask"]).min() == 0  # the shorter sentences are padded


def test_a_preset_folder_converts_and_matches(tmp_path: Path) -> None:
    backbone = _backbone()
    randomize(backbone, seed=4, scale=0.3)
    preset = tmp_path / "bert_preset"
    backbone.save_to_preset(str(preset))
    onnx_model = converter.convert(preset)
    ids = np.array([[2, 5, 6, 7, 8, 3, 0, 0], [2, 13, 14, 15, 3, 0, 0, 0]], "int32")
    feed = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32"), "segment_ids": np.zeros_like(ids)}
    got = run(onnx_model, feed)
    want = backbone(feed)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-4, atol=1e-5)


def _kconvert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "application.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parent.parent)


def test_check_against_keras_hub_from_the_command_line(tmp_path: Path) -> None:
    """--check loads the file in Keras (importing keras_hub for its classes), feeds it the generated inputs
    by name (a padding mask of real tokens then padding, ids inside the vocabulary) and compares."""
    model = hub().models.GPT2CausalLM(backbone=hub().models.GPT2Backbone(
        vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16),
        preprocessor=None)
    randomize(model, seed=5, scale=0.3)
    path = tmp_path / "gpt2.keras"
    model.save(path)
    done = _kconvert("convert", str(path), "--check", "--input-shape", "token_ids=9",
                     "--input-shape", "padding_mask=9", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["ok"], result["check"]
    assert [o["name"] for o in result["check"]["outputs"]] == ["logits"]


def test_batch_finds_the_model_of_a_preset_folder_and_skips_its_tokenizer(tmp_path: Path) -> None:
    backbone = _backbone()
    tokenizer = hub().models.BertTokenizer(vocabulary=VOCABULARY)
    preset = tmp_path / "presets" / "bert"
    backbone.save_to_preset(str(preset))
    tokenizer.save_to_preset(str(preset))
    assert (preset / "tokenizer.json").is_file()
    done = _kconvert("batch", str(tmp_path / "presets"), "-o", str(tmp_path / "out"), "--json")
    assert done.returncode == 0, done.stderr
    models = json.loads(done.stdout)["models"]
    assert [Path(m["model"]).name for m in models] == ["config.json"] and models[0]["status"] == "pass"


def test_inspect_counts_a_layer_called_twice_once(tmp_path: Path) -> None:
    """A causal LM calls its token embedding twice (forward, then in reverse): one set of weights, as
    Keras counts them."""
    model = hub().models.GPT2CausalLM(backbone=hub().models.GPT2Backbone(
        vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16),
        preprocessor=None)
    path = tmp_path / "gpt2.keras"
    model.save(path)
    summary = converter.inspect(path)
    assert summary["total_params"] == summary["trainable_params"] == model.count_params()


def test_a_backbone_inside_the_users_own_functional_model(tmp_path: Path) -> None:
    """The user calls a Keras Hub backbone on a dict of inputs (in their own order) and reads both of its
    outputs by key: Keras indexes a dict of outputs by sorted key and passes a dict of inputs by name."""
    keras = pytest.importorskip("keras")
    backbone = _backbone()
    inputs = {"padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
              "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
              "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids")}
    features = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(features["sequence_output"])
    joined = keras.layers.Concatenate()([features["pooled_output"], pooled])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(joined))
    randomize(model, seed=6, scale=0.3)
    path = tmp_path / "users.keras"
    model.save(path)
    ids = np.array([[2, 5, 6, 7, 8, 3, 0, 0], [2, 13, 14, 15, 3, 0, 0, 0]], "int32")
    feed = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32"), "segment_ids": np.zeros_like(ids)}
    got = run(converter.convert(path), feed)
    np.testing.assert_allclose(got["head"], np.asarray(model(feed)), rtol=1e-4, atol=1e-5)
