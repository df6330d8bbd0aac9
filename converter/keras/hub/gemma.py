"""Gemma recipes: GemmaBackbone (Gemma 1 and the Gemma 2 options), Gemma3Backbone (text only) and their
causal LMs (keras_hub/src/models/gemma/gemma_backbone.py, gemma3/gemma3_backbone.py, 0.32.0).

token_ids -> ReversibleEmbedding (tied, `final_logit_soft_cap` on its reverse call) -> x * sqrt(hidden_dim)
(a Keras `Multiply` op node with a float32 constant) -> decoder_block_0 .. n-1 (each also given the
padding mask) -> final_normalization (Gemma's RMSNormalization, the backbone's `layer_norm_epsilon`; the
blocks keep their own default 1e-6). Gemma slides the window in even blocks; Gemma 3 in every block but
each sixth (i % 6 < 5), those local blocks with RoPE wavelength 10^4 and `local_rope_scaling_factor`,
the global ones with 10^6 and `global_rope_scaling_factor`; `is_embedding_model` adds the pooled output
(EmbeddingGemma). A causal LM's logits are the token
embedding called in reverse on the backbone's output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.keras.hub.functional import FunctionalBuilder, Ref
from converter.keras.hub.recipes import (
    MAX_ITEMS,
    MAX_SIZE,
    BackboneGraph,
    HubModel,
    backbone,
    causal_lm,
    task,
)

LOCAL_ROPE_WAVELENGTH = 10_000.0
GLOBAL_ROPE_WAVELENGTH = 1_000_000.0
# Gemma 3's layer pattern: five local (sliding-window) blocks, then one global.
GEMMA3_PATTERN = 6


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape_args(model: HubModel) -> dict[str, Any]:
    """The block arguments both generations share, checked (counts bounded, heads grouped evenly)."""
    heads, kv_heads = model.integer("num_query_heads"), model.integer("num_key_value_heads")
    if heads % kv_heads:
        raise model.refuse("num_key_value_heads", f"num_query_heads={heads} is not a multiple of it")
    head_dim = model.integer("head_dim")
    if head_dim % 2:
        raise model.refuse("head_dim", "rotary position embedding needs an even head_dim")
    dropout = model.number("dropout", 0.0)
    if not 0.0 <= dropout <= 1.0:
        raise model.refuse("dropout", "expected a rate from 0 to 1")
    return {"hidden_dim": model.integer("hidden_dim"), "intermediate_dim": model.integer("intermediate_dim"),
            "head_dim": head_dim, "num_query_heads": heads, "num_key_value_heads": kv_heads,
            "layer_norm_epsilon": 1e-6, "dropout": dropout,
            "use_post_ffw_norm": model.flag("use_post_ffw_norm", False),
            "use_post_attention_norm": model.flag("use_post_attention_norm", False),
            "logit_soft_cap": _cap(model, "attention_logit_soft_cap"),
            "query_head_dim_normalize": model.flag("query_head_dim_normalize", True)}


def _cap(model: HubModel, key: str) -> float | None:
    cap = model.optional_number(key)
    if cap is not None and cap == 0.0:
        raise model.refuse(key, "a soft cap divides the logits: it cannot be 0")
    return cap


def _embedded(b: FunctionalBuilder, model: HubModel, hidden_dim: int) -> tuple[Ref, Ref]:
    """The inputs, the token embedding and the sqrt(hidden_dim) scale; returns (x, padding_mask)."""
    token_ids = b.input("token_ids", (None,), "int32")
    padding_mask = b.input("padding_mask", (None,), "int32")
    embedding = {"input_dim": model.integer("vocabulary_size"), "output_dim": hidden_dim, "mask_zero": False,
                 "tie_weights": True, "reverse_dtype": None, "logit_soft_cap": _cap(model, "final_logit_soft_cap")}
    x = b.layer("ReversibleEmbedding", "token_embedding", embedding, token_ids)
    scale = {"class_name": "__tensor__", "config": {"value": float(np.sqrt(np.float32(hidden_dim))),
                                                     "dtype": "float32"}}
    return b.op("Multiply", {}, x, scale), padding_mask


def _finish(b: FunctionalBuilder, model: HubModel, x: Ref) -> BackboneGraph:
    epsilon = model.number("layer_norm_epsilon", 1e-6)
    out = b.hub_layer("RMSNormalization", "final_normalization", {"epsilon": epsilon}, x)
    return BackboneGraph(b, out, token_embedding="token_embedding")


@backbone("GemmaBackbone")
def gemma_backbone(model: HubModel) -> BackboneGraph:
    shared = _shape_args(model)
    sliding, window = model.flag("use_sliding_window_attention", False), _window(model, 4096)
    b = FunctionalBuilder(model.name)
    x, padding_mask = _embedded(b, model, shared["hidden_dim"])
    for i in range(model.integer("num_layers", maximum=MAX_ITEMS)):
        config = {**shared, "use_sliding_window_attention": sliding and i % 2 == 0, "sliding_window_size": window}
        x = b.hub_layer("GemmaDecoderBlock", f"decoder_block_{i}", config, x, padding_mask=padding_mask)
    return _finish(b, model, x)


def _window(model: HubModel, default: int) -> int:
    return model.integer("sliding_window_size", default, minimum=-MAX_SIZE)


@backbone("Gemma3Backbone")
def gemma3_backbone(model: HubModel) -> BackboneGraph:
    _refuse_vision(model)
    shared = _shape_args(model)
    sliding, window = model.flag("use_sliding_window_attention", False), _window(model, 1024)
    local_factor = model.number("local_rope_scaling_factor", 1.0)
    global_factor = model.number("global_rope_scaling_factor", 1.0)
    extra = {"use_query_key_norm": model.flag("use_query_key_norm", True), "gate_dim_reduction": 1,
             "use_bidirectional_attention": model.flag("use_bidirectional_attention", False)}
    b = FunctionalBuilder(model.name)
    x, padding_mask = _embedded(b, model, shared["hidden_dim"])
    for i in range(model.integer("num_layers", maximum=MAX_ITEMS)):
        local = sliding and i % GEMMA3_PATTERN < GEMMA3_PATTERN - 1
        rope = {"rope_wavelength": LOCAL_ROPE_WAVELENGTH if local else GLOBAL_ROPE_WAVELENGTH,
                "rope_scaling_factor": local_factor if local else global_factor}
        config = {**shared, **extra, **rope, "use_sliding_window_attention": local, "sliding_window_size": window}
        x = b.hub_layer("Gemma3DecoderBlock", f"decoder_block_{i}", config, x, padding_mask=padding_mask,
                        vision_mask=None)
    graph = _finish(b, model, x)
    if model.flag("is_embedding_model", False):
        graph.outputs = _embedding_outputs(b, model, graph.outputs, padding_mask)
    return graph


def _embedding_outputs(b: FunctionalBuilder, model: HubModel, sequence: Ref | dict[str, Ref],
                       padding_mask: Ref) -> dict[str, Ref]:
    """EmbeddingGemma: the sequence mean-pooled over real tokens, projected twice (no biases), unit-normed."""
    assert isinstance(sequence, Ref)
    pooled = b.hub_layer("Gemma3MeanPooling", "mean_pooling", {}, sequence, padding_mask=padding_mask)
    for name, key in (("pooling_dense_1", "pooling_intermediate_dim"), ("embedding_projection", "embedding_dim")):
        pooled = b.layer("Dense", name, {"units": model.integer(key), "activation": "linear", "use_bias": False},
                         pooled)
    pooled = b.layer("UnitNormalization", "unit_normalization", {"axis": -1}, pooled)
    return {"sequence_output": sequence, "pooled_output": pooled}


def _refuse_vision(model: HubModel) -> None:
    """A vision encoder (image inputs interleaved with the text) is an option kconvert does not convert:
    refused by name."""
    if model.args.value("vision_encoder") is not None:
        raise UnsupportedLayerError(
            f"{model.class_name} '{model.name}' has a vision_encoder: kconvert converts text-only Gemma 3",
            layer=model.name, hint="save the text-only model (vision_encoder=None, e.g. a gemma3_1b preset or "
                                   "Gemma3Backbone(..., vision_encoder=None)) and convert that")


@task("GemmaCausalLM", "Gemma3CausalLM")
def gemma_causal_lm(task_model: HubModel, backbone_model: HubModel, graph: BackboneGraph) -> dict[str, Any]:
    """logits = token_embedding(backbone(inputs), reverse=True): the backbone's own tied embedding (its
    final logit soft cap included)."""
    return causal_lm(task_model, backbone_model, graph)
