"""Recipes of Keras Hub's encoder text models (BERT, DistilBERT, RoBERTa: backbones and text classifiers)
and GPT-2 (backbone and causal LM), from keras_hub/src/models/{bert,distil_bert,roberta,gpt2}/ (0.32.0).

Each replays its constructor: embeddings, a stack of TransformerEncoder (post-LN) or TransformerDecoder
(pre-LN, causal) blocks masked by `padding_mask`, and the head. The blocks' maths is the layer handlers'
(converter/layers/hub_text.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.recipes import (
    MAX_ITEMS,
    BackboneGraph,
    HubModel,
    backbone,
    call_backbone,
    causal_lm,
    task,
)

# Keras Hub's BERT and GPT-2 blocks use gelu's tanh form, saved as this registered function.
GELU_APPROXIMATE = {"module": "builtins", "class_name": "function", "config": "keras_hub>gelu_approximate",
                    "registered_name": "function"}
CLS = [slice(None), 0, slice(None)]  # x[:, 0, :], the first token's features


@dataclass(frozen=True)
class TextSizes:
    """The constructor arguments every one of these backbones takes, checked."""

    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    dropout: float
    max_sequence_length: int


def text_sizes(model: HubModel, default_length: int) -> TextSizes:
    heads, hidden = model.integer("num_heads"), model.integer("hidden_dim")
    if hidden % heads:
        raise model.refuse("num_heads", f"does not divide hidden_dim={hidden} (Keras Hub's blocks require it)")
    dropout = model.number("dropout", 0.1)
    if not 0.0 <= dropout < 1.0:
        raise model.refuse("dropout", "expected a rate from 0 to 1")
    return TextSizes(vocabulary_size=model.integer("vocabulary_size"),
                     num_layers=model.integer("num_layers", minimum=0, maximum=MAX_ITEMS), num_heads=heads,
                     hidden_dim=hidden, intermediate_dim=model.integer("intermediate_dim"), dropout=dropout,
                     max_sequence_length=model.integer("max_sequence_length", default_length))


def text_inputs(b: FunctionalBuilder, *names: str) -> list[Ref]:
    return [b.input(name, (None,), "int32") for name in names]


def layer_norm(b: FunctionalBuilder, name: str, epsilon: float, x: Ref) -> Ref:
    return b.layer("LayerNormalization", name, {"axis": [-1], "epsilon": epsilon, "center": True, "scale": True,
                                                "rms_scaling": False}, x)


def dropout(b: FunctionalBuilder, name: str, rate: float, x: Ref) -> Ref:
    return b.layer("Dropout", name, {"rate": rate, "seed": None, "noise_shape": None}, x)


def token_embedding(b: FunctionalBuilder, sizes: TextSizes, ids: Ref) -> Ref:
    return b.layer("ReversibleEmbedding", "token_embedding",
                   {"input_dim": sizes.vocabulary_size, "output_dim": sizes.hidden_dim, "mask_zero": False,
                    "tie_weights": True, "reverse_dtype": None, "logit_soft_cap": None}, ids)


def block_stack(b: FunctionalBuilder, kind: str, sizes: TextSizes, x: Ref, padding: Ref, activation: Any,
                epsilon: float, **extra: Any) -> Ref:
    """`num_layers` blocks `transformer_layer_<i>` of `kind`, each called with the padding mask."""
    mask_argument = "padding_mask" if kind == "TransformerEncoder" else "decoder_padding_mask"
    config = {"intermediate_dim": sizes.intermediate_dim, "num_heads": sizes.num_heads, "dropout": sizes.dropout,
              "activation": activation, "layer_norm_epsilon": epsilon, **extra}
    for i in range(sizes.num_layers):
        x = b.hub_layer(kind, f"transformer_layer_{i}", dict(config), x, **{mask_argument: padding})
    return x


# -- BERT -----------------------------------------------------------------------------------------------------
@backbone("BertBackbone")
def bert_backbone(model: HubModel) -> BackboneGraph:
    sizes = text_sizes(model, 512)
    b = FunctionalBuilder(model.name)
    token_ids, segment_ids, padding = text_inputs(b, "token_ids", "segment_ids", "padding_mask")
    tokens = token_embedding(b, sizes, token_ids)
    positions = b.hub_layer("PositionEmbedding", "position_embedding",
                            {"sequence_length": sizes.max_sequence_length}, tokens)
    segments = b.layer("Embedding", "segment_embedding", {"input_dim": model.integer("num_segments", 2),
                                                          "output_dim": sizes.hidden_dim, "mask_zero": False},
                       segment_ids)
    x = b.layer("Add", "embeddings_add", {}, [tokens, positions, segments])
    x = dropout(b, "embeddings_dropout", sizes.dropout, layer_norm(b, "embeddings_layer_norm", 1e-12, x))
    x = block_stack(b, "TransformerEncoder", sizes, x, padding, GELU_APPROXIMATE, 1e-12, normalize_first=False)
    pooled = b.layer("Dense", "pooled_dense", {"units": sizes.hidden_dim, "activation": "tanh", "use_bias": True},
                     b.op("GetItem", {}, x, CLS))
    # Keys in sorted order: Keras flattens a dict output by key, and so does the task's call of it.
    return BackboneGraph(b, {"pooled_output": pooled, "sequence_output": x}, token_embedding="token_embedding")


def logits(b: FunctionalBuilder, task_model: HubModel, x: Ref) -> Ref:
    activation = task_model.args.value("activation") or "linear"
    return b.layer("Dense", "logits", {"units": task_model.integer("num_classes"), "activation": activation,
                                       "use_bias": True}, x)


@task("BertTextClassifier")
def bert_text_classifier(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    b = FunctionalBuilder(task_model.name)
    outputs = call_backbone(b, backbone_model, graph)
    assert isinstance(outputs, dict)  # BertBackbone returns a dict
    x = dropout(b, "classifier_dropout", task_model.number("dropout", 0.1), outputs["pooled_output"])
    return b.build(logits(b, task_model, x))


# -- DistilBERT and RoBERTa --------------------------------------------------------------------------------------
def encoder_backbone(model: HubModel, embedding_name: str, epsilon: float) -> BackboneGraph:
    """DistilBERT's and RoBERTa's graph: TokenAndPositionEmbedding, LayerNorm, exact-gelu post-LN encoders."""
    sizes = text_sizes(model, 512)
    b = FunctionalBuilder(model.name)
    token_ids, padding = text_inputs(b, "token_ids", "padding_mask")
    x = b.hub_layer("TokenAndPositionEmbedding", embedding_name,
                    {"vocabulary_size": sizes.vocabulary_size, "sequence_length": sizes.max_sequence_length,
                     "embedding_dim": sizes.hidden_dim, "tie_weights": True, "mask_zero": False}, token_ids)
    x = dropout(b, "embeddings_dropout", sizes.dropout, layer_norm(b, "embeddings_layer_norm", epsilon, x))
    x = block_stack(b, "TransformerEncoder", sizes, x, padding, "gelu", epsilon, normalize_first=False)
    return BackboneGraph(b, x)


@backbone("DistilBertBackbone")
def distil_bert_backbone(model: HubModel) -> BackboneGraph:
    return encoder_backbone(model, "token_and_position_embedding", 1e-12)


@backbone("RobertaBackbone")
def roberta_backbone(model: HubModel) -> BackboneGraph:
    return encoder_backbone(model, "embeddings", 1e-5)


def pooled_dense(b: FunctionalBuilder, task_model: HubModel, backbone_model: HubModel, activation: str,
                 x: Ref) -> Ref:
    units = task_model.optional_integer("hidden_dim") or backbone_model.integer("hidden_dim")
    return b.layer("Dense", "pooled_dense", {"units": units, "activation": activation, "use_bias": True}, x)


@task("DistilBertTextClassifier")
def distil_bert_text_classifier(task_model: HubModel, backbone_model: HubModel,
                                graph: BackboneGraph) -> dict[str, Any]:
    b = FunctionalBuilder(task_model.name)
    first = b.op("GetItem", {}, call_backbone(b, backbone_model, graph), CLS)
    x = pooled_dense(b, task_model, backbone_model, "relu", first)
    x = dropout(b, "output_dropout", task_model.number("dropout", 0.2), x)
    return b.build(logits(b, task_model, x))


@task("RobertaTextClassifier")
def roberta_text_classifier(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    b = FunctionalBuilder(task_model.name)
    rate = task_model.number("dropout", 0.0)
    first = b.op("GetItem", {}, call_backbone(b, backbone_model, graph), CLS)
    x = pooled_dense(b, task_model, backbone_model, "tanh", dropout(b, "pooled_dropout", rate, first))
    return b.build(logits(b, task_model, dropout(b, "output_dropout", rate, x)))


# -- GPT-2 ---------------------------------------------------------------------------------------------------
@backbone("GPT2Backbone")
def gpt2_backbone(model: HubModel) -> BackboneGraph:
    sizes = text_sizes(model, 1024)
    b = FunctionalBuilder(model.name)
    token_ids, padding = text_inputs(b, "token_ids", "padding_mask")
    tokens = token_embedding(b, sizes, token_ids)
    positions = b.hub_layer("PositionEmbedding", "position_embedding",
                            {"sequence_length": sizes.max_sequence_length}, tokens)
    x = dropout(b, "embeddings_dropout", sizes.dropout, b.layer("Add", "embeddings_add", {}, [tokens, positions]))
    x = block_stack(b, "TransformerDecoder", sizes, x, padding, GELU_APPROXIMATE, 1e-5, normalize_first=True,
                    decoder_sequence_shape=[None, None, sizes.hidden_dim], encoder_sequence_shape=None)
    return BackboneGraph(b, layer_norm(b, "layer_norm", 1e-5, x), token_embedding="token_embedding")


@task("GPT2CausalLM")
def gpt2_causal_lm(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """logits = hidden @ token_embeddings^T: the backbone's own embedding called in reverse."""
    return causal_lm(task_model, backbone_model, graph)
