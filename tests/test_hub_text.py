"""Keras Hub text models (BERT, DistilBERT, RoBERTa, GPT-2 and their tasks) and users' models built from
keras_hub.layers, converted from saved `.keras` files and compared with Keras on the TensorFlow backend."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_support import assert_matches, convert_saved, hub, randomize, text_inputs

pytestmark = pytest.mark.tf

VOCAB = 50
SMALL = {"vocabulary_size": VOCAB, "num_layers": 2, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16,
         "max_sequence_length": 16}
SHAPES = ((2, 7), (3, 12))  # two batch sizes and two sequence lengths, one ONNX model


def _backbone(cls: str, **overrides: Any) -> Any:
    return getattr(hub().models, cls)(**{**SMALL, **overrides})


def _model(kind: str, **overrides: Any) -> Any:
    """A small Keras Hub model of class `kind`, built as the research notes do, with random weights."""
    models = hub().models
    backbones = {"BertTextClassifier": "BertBackbone", "DistilBertTextClassifier": "DistilBertBackbone",
                 "RobertaTextClassifier": "RobertaBackbone", "GPT2CausalLM": "GPT2Backbone"}
    if kind in backbones:
        task_args = overrides.pop("task", {})
        backbone = _backbone(backbones[kind], **overrides)
        if kind == "GPT2CausalLM":
            model = models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        else:
            model = getattr(models, kind)(backbone, num_classes=3, preprocessor=None, **task_args)
    else:
        model = _backbone(kind, **overrides)
    randomize(model, seed=1, scale=0.3)
    return model


def _check(model: Any, tmp_path: Path, paddings: tuple[str, ...], segments: bool = False, name: str = "model") -> float:
    onnx_model = convert_saved(model, tmp_path, name)
    for graph_input in onnx_model.graph.input:  # batch and sequence stay dynamic
        dims = graph_input.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims] == [0, 0], graph_input.name
    worst = 0.0
    for padding in paddings:
        for seed, (batch, seq) in enumerate(SHAPES):
            inputs = text_inputs(batch, seq, VOCAB, padding, segments, seed=seed)
            worst = max(worst, assert_matches(onnx_model, model, inputs))
    return worst


@pytest.mark.parametrize("kind", ["BertBackbone", "BertTextClassifier", "DistilBertBackbone",
                                  "DistilBertTextClassifier", "RobertaBackbone", "RobertaTextClassifier"])
def test_encoder_models_match_keras(tmp_path: Path, kind: str) -> None:
    _check(_model(kind), tmp_path, ("none", "right"), segments=kind.startswith("Bert"))


@pytest.mark.parametrize("kind", ["GPT2Backbone", "GPT2CausalLM"])
def test_gpt2_models_match_keras(tmp_path: Path, kind: str) -> None:
    _check(_model(kind), tmp_path, ("none", "right", "left"))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gpt2_left_padding_rows_follow_the_dropout_rule(tmp_path: Path, dropout: float) -> None:
    """Fully masked query rows (left padding under the causal mask): zero with dropout > 0, the mean of the
    values with dropout == 0 (Keras' MultiHeadAttention takes two different paths)."""
    _check(_model("GPT2CausalLM", dropout=dropout, num_layers=1), tmp_path, ("left",))


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_encoder_all_padding_row(tmp_path: Path, dropout: float) -> None:
    """A sequence of nothing but padding: every attention row of it is fully masked."""
    model = _model("BertBackbone", dropout=dropout)
    onnx_model = convert_saved(model, tmp_path)
    inputs = text_inputs(3, 6, VOCAB, "right", segments=True)
    inputs["padding_mask"][1] = 0
    assert_matches(onnx_model, model, inputs)


def test_options_that_change_the_graph(tmp_path: Path) -> None:
    """Three segments and one layer; a classifier head wider than the backbone with its own activation."""
    _check(_model("BertBackbone", num_segments=3, num_layers=1, num_heads=4), tmp_path, ("right",), segments=True,
           name="a")
    task_args = {"hidden_dim": 12, "activation": "softmax", "dropout": 0.3}
    _check(_model("RobertaTextClassifier", task=task_args), tmp_path, ("right",), name="b")
    _check(_model("DistilBertTextClassifier", task=dict(task_args), num_layers=3), tmp_path, ("right",), name="c")


def test_sequence_longer_than_the_position_table_fails(tmp_path: Path) -> None:
    """Keras refuses a sequence past max_sequence_length; the ONNX model fails too, never silently."""
    model = _model("GPT2Backbone", max_sequence_length=8)
    onnx_model = convert_saved(model, tmp_path)
    from hub_support import run

    run(onnx_model, text_inputs(1, 8, VOCAB))
    with pytest.raises(Exception, match="(?i)broadcast|dimension|shape"):
        run(onnx_model, text_inputs(1, 9, VOCAB))


@pytest.mark.parametrize("cls", ["BertBackbone", "DistilBertBackbone", "RobertaBackbone", "GPT2Backbone"])
def test_recipe_writes_keras_own_layer_list(cls: str) -> None:
    """The recipe's layers have the names, classes and order of Keras' own Functional config of the backbone."""
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = _backbone(cls, num_layers=3)
    golden = keras.Model(model.input, model.output).get_config()["layers"]
    ours = expand(cls, model.get_config(), StoredWeights(None))["layers"]
    assert [_named(layer) for layer in ours] == [_named(layer) for layer in golden]


def _named(layer: dict[str, Any]) -> tuple[str, str]:
    """(name, class); an op node's name is Keras' session-wide counter (get_item_9), its base is compared."""
    name = layer["name"]
    if layer.get("module", "").startswith("keras.src.ops"):
        name = re.sub(r"_\d+$", "", name)
    return name, layer["class_name"]


# -- users' own Functional models built from keras_hub.layers -----------------------------------------------
def _user_inputs(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    inputs = text_inputs(batch, seq, VOCAB, "right", seed=seed)
    return {"ids": inputs["token_ids"], "mask": inputs["padding_mask"]}


def _check_user(model: Any, tmp_path: Path) -> None:
    randomize(model, seed=2, scale=0.3)
    onnx_model = convert_saved(model, tmp_path)
    for seed, (batch, seq) in enumerate(SHAPES):
        assert_matches(onnx_model, model, _user_inputs(batch, seq, seed))


def test_user_encoder_classifier(tmp_path: Path) -> None:
    keras_hub = hub()
    import keras

    ids = keras.Input((None,), dtype="int32", name="ids")
    mask = keras.Input((None,), dtype="int32", name="mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(VOCAB, 16, 8, tie_weights=False)(ids)
    x = keras_hub.layers.TransformerEncoder(16, 2, dropout=0.0)(x, padding_mask=mask)
    x = keras_hub.layers.TransformerEncoder(12, 4, activation="gelu", normalize_first=True,
                                            layer_norm_epsilon=1e-6)(x, padding_mask=mask)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    _check_user(keras.Model({"ids": ids, "mask": mask}, outputs), tmp_path)


def test_user_decoder_language_model(tmp_path: Path) -> None:
    keras_hub = hub()
    import keras

    ids = keras.Input((None,), dtype="int32", name="ids")
    mask = keras.Input((None,), dtype="int32", name="mask")
    tokens = keras.layers.Embedding(VOCAB, 8)(ids)
    x = keras.layers.Add()([tokens, keras_hub.layers.PositionEmbedding(16)(tokens)])
    x = keras_hub.layers.TransformerDecoder(16, 2, dropout=0.1)(x, decoder_padding_mask=mask)
    x = keras_hub.layers.TransformerDecoder(16, 2, normalize_first=True)(x)
    outputs = keras.layers.Dense(VOCAB)(x)
    _check_user(keras.Model({"ids": ids, "mask": mask}, outputs), tmp_path)


def test_user_decoder_with_cross_attention_is_refused(tmp_path: Path) -> None:
    keras_hub = hub()
    import keras

    from converter.errors import UnsupportedLayerError

    decoder_in = keras.Input((None, 8), name="decoder")
    encoder_in = keras.Input((None, 8), name="encoder")
    outputs = keras_hub.layers.TransformerDecoder(16, 2)(decoder_in, encoder_in)
    model = keras.Model([decoder_in, encoder_in], outputs)
    with pytest.raises(UnsupportedLayerError, match="cross-attention"):
        convert_saved(model, tmp_path)


def test_user_block_after_an_implicit_mask_is_refused(tmp_path: Path) -> None:
    keras_hub = hub()
    import keras

    from converter.errors import UnsupportedLayerError

    ids = keras.Input((None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(ids)
    model = keras.Model(ids, keras_hub.layers.TransformerEncoder(16, 2)(x))
    with pytest.raises(UnsupportedLayerError, match="implicit mask"):
        convert_saved(model, tmp_path)


def test_user_attention_masks_and_options(tmp_path: Path) -> None:
    """attention_mask (B, T, T) on both blocks, a decoder without its causal mask, positions from 2 on."""
    keras_hub = hub()
    import keras

    ids = keras.Input((None,), dtype="int32", name="ids")
    allowed = keras.Input((None, None), dtype="int32", name="allowed")
    tokens = keras.layers.Embedding(VOCAB, 8)(ids)
    x = keras.layers.Add()([tokens, keras_hub.layers.PositionEmbedding(16)(tokens, start_index=2)])
    x = keras_hub.layers.TransformerEncoder(16, 2, dropout=0.1)(x, attention_mask=allowed)
    x = keras_hub.layers.TransformerDecoder(16, 2)(x, decoder_attention_mask=allowed, use_causal_mask=False)
    model = keras.Model({"ids": ids, "allowed": allowed}, x)
    randomize(model, seed=4, scale=0.3)
    onnx_model = convert_saved(model, tmp_path)
    rng = np.random.default_rng(5)
    for batch, seq in SHAPES:
        inputs = {"ids": rng.integers(0, VOCAB, (batch, seq)).astype("int32"),
                  "allowed": (rng.random((batch, seq, seq)) < 0.6).astype("int32")}
        inputs["allowed"][0, 1] = 0  # one fully masked query row
        assert_matches(onnx_model, model, inputs)
