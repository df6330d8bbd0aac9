"""Keras Hub text models and layers from hand-written files (no Keras Hub needed): hostile constructor
arguments and layer configs give a KconvertError naming the field; a hand-built TransformerEncoder /
TransformerDecoder model matches a NumPy reference of Keras Hub's block maths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_support import hub_archive
from kmodels import input_layer, keras_tensor, run_onnx, save_keras

import converter
from converter.errors import FormatError, KconvertError, UnsupportedLayerError

BERT = {"name": "bert_backbone", "trainable": True, "vocabulary_size": 50, "num_layers": 2, "num_heads": 2,
        "hidden_dim": 8, "intermediate_dim": 16, "dropout": 0.1, "max_sequence_length": 16, "num_segments": 2,
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                  "registered_name": None}}


@pytest.mark.parametrize(("key", "value", "error"), [
    ("num_layers", "2", FormatError),
    ("num_layers", 10**9, FormatError),
    ("num_layers", -1, FormatError),
    ("num_heads", 3, FormatError),  # does not divide hidden_dim=8
    ("hidden_dim", 2.5, FormatError),
    ("vocabulary_size", None, FormatError),
    ("dropout", 5, FormatError),
    ("max_sequence_length", [16], FormatError),
    ("num_segments", True, FormatError),
    ("dtype", "int8_from_float32", UnsupportedLayerError),  # bfloat16 / float16 convert: test_hub_bf16.py
])
def test_hostile_backbone_arguments(tmp_path: Path, key: str, value: Any, error: type[KconvertError]) -> None:
    config = {**BERT, key: value}
    with pytest.raises(error, match=key if key != "dtype" else "dtype policy"):
        converter.convert(hub_archive(tmp_path / "hub.keras", "BertBackbone", config))


@pytest.mark.parametrize("cls", ["DistilBertBackbone", "RobertaBackbone", "GPT2Backbone"])
def test_hostile_layer_count_in_every_backbone(tmp_path: Path, cls: str) -> None:
    config = {k: v for k, v in BERT.items() if k != "num_segments"}
    with pytest.raises(FormatError, match="num_layers"):
        converter.convert(hub_archive(tmp_path / "hub.keras", cls, {**config, "num_layers": "many"}))


def test_task_with_a_damaged_head(tmp_path: Path) -> None:
    backbone = {"module": "keras_hub.src.models", "class_name": "BertBackbone", "config": BERT,
                "registered_name": "keras_hub>BertBackbone"}
    task = {"name": "classifier", "backbone": backbone, "preprocessor": None, "num_classes": "three"}
    with pytest.raises(FormatError, match="num_classes"):
        converter.convert(hub_archive(tmp_path / "hub.keras", "BertTextClassifier", task))


# -- keras_hub.layers in a hand-written Functional model ------------------------------------------------------
def _hub_layer(class_name: str, name: str, inbound: list[dict[str, Any]], kwargs: dict[str, Any],
               **config: Any) -> dict[str, Any]:
    return {"module": "keras_hub.src.layers", "class_name": class_name, "registered_name": f"keras_hub>{class_name}",
            "name": name, "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "inbound_nodes": [{"args": inbound, "kwargs": kwargs}]}


def _block_model(class_name: str, mask_kwarg: str, **config: Any) -> dict[str, Any]:
    """x (B, T, 8) and mask (B, T) -> one Keras Hub block called with the mask."""
    x, mask = input_layer("x", (None, 8)), input_layer("mask", (None,), "int32")
    for entry in (x, mask):
        entry["inbound_nodes"] = []
    block = _hub_layer(class_name, "block", [keras_tensor("x")], {mask_kwarg: keras_tensor("mask")},
                       **{"intermediate_dim": 16, "num_heads": 2, **config})
    return {"class_name": "Functional", "config": {"name": "m", "layers": [x, mask, block],
                                                   "input_layers": [["x", 0, 0], ["mask", 0, 0]],
                                                   "output_layers": [["block", 0, 0]]}}


@pytest.mark.parametrize(("key", "value", "error"), [
    ("intermediate_dim", "16", FormatError),
    ("intermediate_dim", 0, FormatError),
    ("num_heads", 0, FormatError),
    ("layer_norm_epsilon", "tiny", FormatError),
    ("normalize_first", "yes", FormatError),
    ("activation", "no_such_activation", UnsupportedLayerError),
    ("num_heads", 3, KconvertError),  # does not divide the feature size 8
])
def test_hostile_block_configs(tmp_path: Path, key: str, value: Any, error: type[KconvertError]) -> None:
    weights = {"block": _block_weights(np.random.default_rng(0))}
    path = save_keras(tmp_path / "m.keras", _block_model("TransformerEncoder", "padding_mask", **{key: value}),
                      weights)
    with pytest.raises(error, match=key if key != "activation" else value):
        converter.convert(path)


def test_decoder_with_cross_attention_is_refused(tmp_path: Path) -> None:
    config = _block_model("TransformerDecoder", "decoder_padding_mask", encoder_sequence_shape=[None, 5, 8])
    with pytest.raises(UnsupportedLayerError, match="cross-attention"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


def test_masked_token_embedding_is_refused(tmp_path: Path) -> None:
    ids = input_layer("ids", (None,), "int32")
    ids["inbound_nodes"] = []
    embed = _hub_layer("TokenAndPositionEmbedding", "embed", [keras_tensor("ids")], {}, vocabulary_size=10,
                       sequence_length=8, embedding_dim=4, mask_zero=True)
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [ids, embed],
                                                     "input_layers": [["ids", 0, 0]],
                                                     "output_layers": [["embed", 0, 0]]}}
    with pytest.raises(UnsupportedLayerError, match="mask_zero"):
        converter.convert(save_keras(tmp_path / "m.keras", config, {}))


# -- the block's maths against NumPy -----------------------------------------------------------------------------
def _block_weights(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    def normal(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) * 0.4).astype(np.float32)

    return {"_feedforward_intermediate_dense": [normal(8, 16), normal(16)],
            "_feedforward_layer_norm": [1 + normal(8), normal(8)],
            "_feedforward_output_dense": [normal(16, 8), normal(8)],
            "_self_attention_layer": {"query_dense": [normal(8, 2, 4), normal(2, 4)],
                                      "key_dense": [normal(8, 2, 4), normal(2, 4)],
                                      "value_dense": [normal(8, 2, 4), normal(2, 4)],
                                      "output_dense": [normal(2, 4, 8), normal(8)]},
            "_self_attention_layer_norm": [1 + normal(8), normal(8)]}


def _norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _reference(w: dict[str, Any], x: np.ndarray, keep: np.ndarray, normalize_first: bool) -> np.ndarray:
    """Keras Hub's block with relu, dropout 0: masked rows (none here) aside, plain softmax attention."""
    attention = w["_self_attention_layer"]

    def attend(h: np.ndarray) -> np.ndarray:
        q, k, v = (np.einsum("btd,dhk->bhtk", h, attention[n][0]) + attention[n][1].transpose(0, 1)[None, :, None]
                   for n in ("query_dense", "key_dense", "value_dense"))
        scores = np.where(keep, q @ k.transpose(0, 1, 3, 2) / 2.0, -1e9)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        context = (weights / weights.sum(-1, keepdims=True)) @ v
        return np.einsum("bhtk,hkd->btd", context, attention["output_dense"][0]) + attention["output_dense"][1]

    def feedforward(h: np.ndarray) -> np.ndarray:
        inner = np.maximum(h @ w["_feedforward_intermediate_dense"][0] + w["_feedforward_intermediate_dense"][1], 0)
        return inner @ w["_feedforward_output_dense"][0] + w["_feedforward_output_dense"][1]

    for sublayer, norm in ((attend, "_self_attention_layer_norm"), (feedforward, "_feedforward_layer_norm")):
        x = x + sublayer(_norm(x, *w[norm])) if normalize_first else _norm(x + sublayer(x), *w[norm])
    return x


@pytest.mark.parametrize(("class_name", "mask_kwarg", "normalize_first"), [
    ("TransformerEncoder", "padding_mask", False), ("TransformerEncoder", "padding_mask", True),
    ("TransformerDecoder", "decoder_padding_mask", True), ("TransformerDecoder", "decoder_padding_mask", False)])
def test_block_matches_numpy(tmp_path: Path, class_name: str, mask_kwarg: str, normalize_first: bool) -> None:
    rng = np.random.default_rng(3)
    weights = _block_weights(rng)
    config = _block_model(class_name, mask_kwarg, normalize_first=normalize_first, activation="relu",
                          dropout=0.0)
    onnx_model = converter.convert(save_keras(tmp_path / "m.keras", config, {"block": weights}))
    for batch, steps in ((2, 5), (3, 7)):
        x = rng.normal(size=(batch, steps, 8)).astype(np.float32)
        mask = np.ones((batch, steps), np.int32)
        mask[1:, steps - 2:] = 0  # right padding: every query keeps at least its first key
        keep = mask[:, None, None, :].astype(bool)
        if class_name == "TransformerDecoder":
            keep = keep & np.tril(np.ones((steps, steps), bool))[None, None]
        want = _reference(weights, x, keep, normalize_first)
        np.testing.assert_allclose(run_onnx(onnx_model, x, mask)[0], want, rtol=1e-4, atol=1e-5)
