"""Llama, Llama 3 and Mistral backbones and causal LMs (keras_hub/src/models/{llama,llama3,mistral}/).

token_ids -> token_embedding (ReversibleEmbedding) -> transformer_layer_0..n-1 (decoder blocks, each also
given the padding mask) -> sequence_output_layernorm. A causal LM calls the token embedding in reverse on
that output (logits over the vocabulary). Llama3Backbone subclasses LlamaBackbone unchanged.

Keras Hub does not save Llama's `tie_word_embeddings` (quirk: a tied Llama file does not even reload in
Keras), so tying is read from the stored arrays: the embedding's second array (reverse_embeddings) is
there only when untied. Mistral never ties.
"""

from __future__ import annotations

from typing import Any

from converter.keras.hub.functional import FunctionalBuilder
from converter.keras.hub.recipes import BackboneGraph, HubModel, backbone, causal_lm, task

TOKEN_EMBEDDING = "token_embedding"
# Constructor arguments of Llama 3.1's rotary band adjustment (all four set, or none).
LLAMA3_ROPE = ("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
               "rope_pretraining_sequence_length")


@backbone("LlamaBackbone", "Llama3Backbone")
def llama_backbone(model: HubModel) -> BackboneGraph:
    block = {**_attention_args(model), "rope_max_wavelength": model.number("rope_max_wavelength", 10000.0)}
    for key in LLAMA3_ROPE:
        block[key] = model.optional_number(key)
    return _decoder_stack(model, "LlamaTransformerDecoder", "LlamaLayerNorm", block, _llama_tied(model))


@backbone("MistralBackbone")
def mistral_backbone(model: HubModel) -> BackboneGraph:
    block = {**_attention_args(model), "rope_max_wavelength": model.number("rope_max_wavelength", 10000.0),
             "rope_scaling_factor": model.number("rope_scaling_factor", 1.0),
             # Absent: Keras Hub's default window, 512; null: no window.
             "sliding_window": model.optional_integer("sliding_window") if "sliding_window" in model.args.raw
             else 512,
             "head_dim": model.optional_integer("head_dim")}
    return _decoder_stack(model, "MistralTransformerDecoder", "MistralLayerNormalization", block, tied=False)


@task("LlamaCausalLM", "Llama3CausalLM", "MistralCausalLM")
def llama_causal_lm(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """backbone(inputs) -> the backbone's token embedding called in reverse (its own weights)."""
    return causal_lm(task_model, backbone_model, graph)


def _attention_args(model: HubModel) -> dict[str, Any]:
    """The block arguments Llama and Mistral share, checked as Keras Hub would need them."""
    hidden = model.integer("hidden_dim")
    heads = model.integer("num_query_heads", maximum=hidden)
    kv_heads = model.integer("num_key_value_heads", maximum=heads)
    if heads % kv_heads:
        raise model.refuse("num_key_value_heads", f"it must divide num_query_heads ({heads})")
    head_dim = model.optional_integer("head_dim") if model.class_name == "MistralBackbone" else None
    if (head_dim or hidden // heads) % 2:
        key = "num_query_heads" if head_dim is None else "head_dim"
        raise model.refuse(key, f"the head size {head_dim or hidden // heads} is odd; rotary embedding needs it even")
    return {"intermediate_dim": model.integer("intermediate_dim"), "num_query_heads": heads,
            "num_key_value_heads": kv_heads, "activation": "silu",
            "layer_norm_epsilon": model.number("layer_norm_epsilon", 1e-6),
            "dropout": model.number("dropout", 0.0)}


def _llama_tied(model: HubModel) -> bool:
    """Tied when the token embedding stores one array (embeddings), untied with two (+ reverse_embeddings);
    a file without weights converts as Keras Hub's default, untied."""
    arrays = model.weights.arrays("reversible_embedding")
    if arrays is None:
        return False
    if len(arrays) not in (1, 2):
        raise model.refuse("vocabulary_size", f"its token embedding stores {len(arrays)} arrays, not 1 "
                                              "(tied) or 2 (untied)")
    return len(arrays) == 1


def _decoder_stack(model: HubModel, block_class: str, norm_class: str, block: dict[str, Any],
                   tied: bool) -> BackboneGraph:
    hidden = model.integer("hidden_dim")
    b = FunctionalBuilder(model.name)
    token_ids = b.input("token_ids", (None,), "int32")
    padding_mask = b.input("padding_mask", (None,), "int32")
    x = b.layer("ReversibleEmbedding", TOKEN_EMBEDDING,
                {"input_dim": model.integer("vocabulary_size"), "output_dim": hidden, "tie_weights": tied,
                 "mask_zero": False, "reverse_dtype": None, "logit_soft_cap": None}, token_ids)
    for index in range(model.integer("num_layers", maximum=4096)):
        x = b.hub_layer(block_class, f"transformer_layer_{index}", block, x, decoder_padding_mask=padding_mask)
    x = b.hub_layer(norm_class, "sequence_output_layernorm",
                    {"epsilon": model.number("layer_norm_epsilon", 1e-6)}, x)
    return BackboneGraph(b, x, token_embedding=TOKEN_EMBEDDING)
