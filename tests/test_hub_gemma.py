"""Keras Hub Gemma: GemmaBackbone / GemmaCausalLM (Gemma 1 and the Gemma 2 options), Gemma3Backbone /
Gemma3CausalLM (text only), and their layers in a user's own model, against Keras; hostile configs.

The tf tests build small models with Keras Hub's own classes and random weights, save them as `.keras`,
convert, and compare with Keras at two batch sizes and two sequence lengths on one ONNX file (dynamic
batch and time), with right and left padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kmodels
import numpy as np
import pytest
from hub_support import ATOL, assert_matches, convert_saved, hub, hub_archive, randomize, run, text_inputs

import converter
from converter.errors import FormatError, KconvertError, UnsupportedLayerError

VOCAB = 50
SMALL = {"vocabulary_size": VOCAB, "num_layers": 2, "num_query_heads": 2, "num_key_value_heads": 1,
         "hidden_dim": 8, "intermediate_dim": 16, "head_dim": 4}
# Gemma 2's options: post norms, both soft caps (low enough to bite at these logit sizes), a window
# shorter than the sequences, query_head_dim_normalize=False with head_dim != hidden_dim // heads
# (Keras Hub's block passes True to its attention regardless), dropout (an inference identity).
GEMMA2_STYLE = {**SMALL, "head_dim": 2, "num_query_heads": 4, "num_key_value_heads": 2, "num_layers": 3,
                "use_post_ffw_norm": True, "use_post_attention_norm": True, "attention_logit_soft_cap": 1.5,
                "final_logit_soft_cap": 2.0, "use_sliding_window_attention": True, "sliding_window_size": 3,
                "query_head_dim_normalize": False, "dropout": 0.1}
# Gemma 3: seven blocks (local x5, global, local), local/global RoPE scaling, QK norm (the default).
GEMMA3 = {**SMALL, "num_layers": 7, "image_size": 16, "use_post_ffw_norm": True, "use_post_attention_norm": True,
          "use_sliding_window_attention": True, "sliding_window_size": 3, "local_rope_scaling_factor": 2.0,
          "global_rope_scaling_factor": 8.0, "vision_encoder": None}
# Gemma 3's embedding-model attention: bidirectional, an even window (asymmetric band), no QK norm, caps.
GEMMA3_BIDIRECTIONAL = {**GEMMA3, "use_bidirectional_attention": True, "sliding_window_size": 4,
                        "use_query_key_norm": False, "attention_logit_soft_cap": 1.5, "final_logit_soft_cap": 2.0}
# EmbeddingGemma: the bidirectional model plus the pooled output (mean pooling, two projections, unit norm).
GEMMA3_EMBEDDING = {**GEMMA3_BIDIRECTIONAL, "is_embedding_model": True, "pooling_intermediate_dim": 12,
                    "embedding_dim": 6}
SIZES = ((2, 7), (3, 4))


def _check(onnx_model: Any, model: Any, paddings: tuple[str, ...], atol: float = ATOL) -> float:
    worst = 0.0
    for batch, seq in SIZES:
        for padding in paddings:
            inputs = text_inputs(batch, seq, VOCAB, padding, seed=seq)
            worst = max(worst, assert_matches(onnx_model, model, inputs, atol=atol))
    return worst


def _backbone(cls: str, config: dict[str, Any], seed: int = 0) -> Any:
    model = getattr(hub().models, cls)(**config)
    randomize(model, seed, 0.5)
    return model


@pytest.mark.tf
@pytest.mark.parametrize("cls,config", [("GemmaBackbone", SMALL), ("GemmaBackbone", GEMMA2_STYLE),
                                        ("Gemma3Backbone", GEMMA3), ("Gemma3Backbone", GEMMA3_BIDIRECTIONAL),
                                        ("Gemma3Backbone", GEMMA3_EMBEDDING)],
                         ids=["gemma", "gemma2_style", "gemma3", "gemma3_bidirectional", "gemma3_embedding"])
def test_backbone_matches_keras(tmp_path: Path, cls: str, config: dict[str, Any]) -> None:
    model = _backbone(cls, config)
    onnx_model = convert_saved(model, tmp_path)
    assert [i.name for i in onnx_model.graph.input] == ["token_ids", "padding_mask"]
    _check(onnx_model, model, ("none", "right", "left"))


@pytest.mark.tf
@pytest.mark.parametrize("backbone_cls,task_cls,config", [
    ("GemmaBackbone", "GemmaCausalLM", SMALL), ("GemmaBackbone", "GemmaCausalLM", GEMMA2_STYLE),
    ("Gemma3Backbone", "Gemma3CausalLM", GEMMA3)], ids=["gemma", "gemma2_style", "gemma3"])
def test_causal_lm_matches_keras(tmp_path: Path, backbone_cls: str, task_cls: str, config: dict[str, Any]) -> None:
    backbone = _backbone(backbone_cls, config, seed=1)
    model = getattr(hub().models, task_cls)(backbone=backbone, preprocessor=None)
    onnx_model = convert_saved(model, tmp_path)
    logits = onnx_model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in logits] == [0, 0, VOCAB]  # batch and time stay dynamic
    # Seven Gemma 3 blocks then logits of size ~4: float32 rounding reaches 1.2e-5 at a few entries (measured:
    # 1e-6 .. 1.2e-5 over seeds, the same with QK norm, RoPE scaling or post norms switched off).
    _check(onnx_model, model, ("none", "right", "left"), atol=3 * ATOL if task_cls == "Gemma3CausalLM" else ATOL)


@pytest.mark.tf
def test_soft_caps_and_window_change_the_answer(tmp_path: Path) -> None:
    """The Gemma 2 options are not identities at these sizes: the test configs above can fail."""
    inputs = text_inputs(2, 7, VOCAB)
    plain = {k: v for k, v in GEMMA2_STYLE.items() if k not in ("attention_logit_soft_cap", "final_logit_soft_cap",
                                                              "use_sliding_window_attention")}
    outputs = []
    for config in (GEMMA2_STYLE, plain):
        model = hub().models.GemmaCausalLM(backbone=_backbone("GemmaBackbone", config, seed=1), preprocessor=None)
        outputs.append(np.asarray(model(inputs)))
    assert np.max(np.abs(outputs[0] - outputs[1])) > 0.05


def _layers(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, class) in order; an op node's name counts the op's calls in the whole Keras session
    (`multiply_10`), so only its class is compared."""
    return [("<op>" if str(layer.get("module")).startswith("keras.src.ops") else layer["name"], layer["class_name"])
            for layer in config["layers"]]


@pytest.mark.tf
@pytest.mark.parametrize("cls,config", [("GemmaBackbone", GEMMA2_STYLE), ("Gemma3Backbone", GEMMA3),
                                        ("Gemma3Backbone", GEMMA3_EMBEDDING)])
def test_recipe_layers_are_keras_own(cls: str, config: dict[str, Any]) -> None:
    """Names, classes and order of the recipe's layers are those of Keras' own Functional graph."""
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    model = getattr(hub().models, cls)(**config)
    golden = keras.Model(model.input, model.output).get_config()
    saved = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    recipe = expand(cls, saved["config"], StoredWeights(None))
    assert _layers(recipe) == _layers(golden)
    blocks = {layer["name"]: layer["config"] for layer in golden["layers"] if "DecoderBlock" in layer["class_name"]}
    for layer in recipe["layers"]:
        if layer["name"] in blocks:  # the block arguments Keras Hub's constructor passes, each one
            mine = {k: v for k, v in layer["config"].items() if k != "dtype"}
            assert mine == {k: v for k, v in blocks[layer["name"]].items() if k in mine}


@pytest.mark.tf
def test_gemma_layers_in_a_users_model(tmp_path: Path) -> None:
    """GemmaDecoderBlock, Gemma3DecoderBlock and Gemma's RMSNormalization (unregistered Keras Hub classes,
    told from Keras' RMSNormalization by their module) in a user's Functional model."""
    import keras
    from keras_hub.src.models.gemma.gemma_decoder_block import GemmaDecoderBlock
    from keras_hub.src.models.gemma.rms_normalization import RMSNormalization
    from keras_hub.src.models.gemma3.gemma3_decoder_block import Gemma3DecoderBlock

    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = keras.layers.Embedding(VOCAB, 8)(token_ids)
    x = GemmaDecoderBlock(hidden_dim=8, intermediate_dim=12, head_dim=4, num_query_heads=2, num_key_value_heads=2,
                          use_post_ffw_norm=True, layer_norm_epsilon=1e-3)(x, padding_mask=padding_mask)
    x = Gemma3DecoderBlock(hidden_dim=8, intermediate_dim=12, head_dim=4, num_query_heads=2, num_key_value_heads=1,
                           use_query_key_norm=True, rope_wavelength=500.0, rope_scaling_factor=3.0,
                           use_sliding_window_attention=True, sliding_window_size=2)(x, padding_mask=padding_mask)
    x = GemmaDecoderBlock(hidden_dim=8, intermediate_dim=12, head_dim=4, num_query_heads=2, num_key_value_heads=1)(x)
    x = keras.layers.Dense(3)(RMSNormalization(epsilon=1e-5)(x))
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, x)
    randomize(model, 2, 0.5)
    _check(convert_saved(model, tmp_path), model, ("none", "right", "left"))


# -- hostile and unsupported configs (no TensorFlow) --------------------------------------------------------

def _save_hub(path: Path, cls: str, config: dict[str, Any], module: str = "gemma") -> Path:
    """A Keras Hub backbone entry named `backbone`, under its own module, and no weights."""
    return hub_archive(path, cls, {"name": "backbone", "trainable": True, **config},
                       f"keras_hub.src.models.{module}.{module}_backbone")


@pytest.mark.parametrize("change,error,field", [
    ({"num_layers": "2"}, FormatError, "num_layers"),
    ({"num_layers": 10**9}, FormatError, "num_layers"),
    ({"num_query_heads": 3, "num_key_value_heads": 2}, FormatError, "num_key_value_heads"),
    ({"head_dim": 3}, FormatError, "head_dim"),
    ({"hidden_dim": -8}, FormatError, "hidden_dim"),
    ({"use_post_ffw_norm": "yes"}, FormatError, "use_post_ffw_norm"),
    ({"attention_logit_soft_cap": 0}, FormatError, "attention_logit_soft_cap"),
    ({"final_logit_soft_cap": "inf"}, FormatError, "final_logit_soft_cap"),
    ({"vocabulary_size": None}, FormatError, "vocabulary_size"),
])
def test_bad_gemma_config_names_the_field(tmp_path: Path, change: dict[str, Any], error: type[KconvertError],
                                          field: str) -> None:
    path = _save_hub(tmp_path / "m.keras", "GemmaBackbone", {**SMALL, **change})
    with pytest.raises(error, match=field):
        converter.convert(path)


def test_gemma3_vision_encoder_refused_by_name(tmp_path: Path) -> None:
    vision = {"vision_encoder": {"class_name": "Gemma3VisionEncoder", "config": {}}}
    path = _save_hub(tmp_path / "m.keras", "Gemma3Backbone", {**GEMMA3, **vision}, module="gemma3")
    with pytest.raises(UnsupportedLayerError, match="vision_encoder"):
        converter.convert(path)


@pytest.mark.parametrize("cls,module", [("GemmaBackbone", "gemma"), ("Gemma3Backbone", "gemma3")])
def test_quantized_gemma_refused_with_the_way_out(tmp_path: Path, cls: str, module: str) -> None:
    """An int8-quantized model (`model.quantize("int8")`) is refused by its dtype policy, not by its arrays
    (bfloat16 and float16 policies convert, in float32: tests/test_hub_bf16.py)."""
    policy = {"module": "keras", "class_name": "QuantizedDTypePolicy",
              "config": {"name": "int8_from_bfloat16", "source_name": "bfloat16"}, "registered_name": None}
    path = _save_hub(tmp_path / "m.keras", cls, {**GEMMA3, "dtype": policy}, module=module)
    with pytest.raises(UnsupportedLayerError, match="int8_from_bfloat16") as raised:
        converter.convert(path)
    assert "float32" in str(raised.value.hint)


@pytest.mark.parametrize("change,field", [
    ({"is_embedding_model": True, "pooling_intermediate_dim": 8}, "embedding_dim"),
    ({"is_embedding_model": "true", "pooling_intermediate_dim": 8, "embedding_dim": 4}, "is_embedding_model"),
    ({"use_bidirectional_attention": 1}, "use_bidirectional_attention"),
    ({"global_rope_scaling_factor": "8"}, "global_rope_scaling_factor"),
])
def test_bad_gemma3_config_names_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    path = _save_hub(tmp_path / "m.keras", "Gemma3Backbone", {**GEMMA3, **change}, module="gemma3")
    with pytest.raises(FormatError, match=field):
        converter.convert(path)


def _users_block_model(block: dict[str, Any]) -> dict[str, Any]:
    """A user's Functional: token embedding, one GemmaDecoderBlock (unregistered: bare registered name)."""
    x = {"module": "keras_hub.src.models.gemma.gemma_decoder_block", "class_name": "GemmaDecoderBlock",
         "registered_name": "GemmaDecoderBlock", "name": "block", "config": {"name": "block", **block}}
    return kmodels.functional([(kmodels.input_layer("ids", (None,), "int32"), []),
                               (kmodels.layer("Embedding", "embedding", input_dim=VOCAB, output_dim=8), ["ids"]),
                               (x, ["embedding"])], ["ids"], ["block"])


@pytest.mark.parametrize("change,field", [
    ({"num_query_heads": 3, "num_key_value_heads": 2}, "num_key_value_heads"),
    ({"use_post_ffw_norm": "yes"}, "use_post_ffw_norm"),
    ({"intermediate_dim": "16"}, "intermediate_dim"),
    ({"logit_soft_cap": [1.0]}, "logit_soft_cap"),
])
def test_bad_block_config_names_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    block = {"hidden_dim": 8, "intermediate_dim": 16, "head_dim": 4, "num_query_heads": 2, "num_key_value_heads": 1,
             **change}
    path = kmodels.save_keras(tmp_path / "m.keras", _users_block_model(block), {})
    with pytest.raises(FormatError, match=field):
        converter.convert(path)


def test_gemma_rms_normalization_scales_by_one_plus_scale(tmp_path: Path) -> None:
    """Gemma's RMSNormalization in a user's model: x * rsqrt(mean(x^2) + eps) * (1 + scale), not Keras'
    RMSNormalization (x * ... * scale), though both are saved as class RMSNormalization."""
    norm = {"module": "keras_hub.src.models.gemma.rms_normalization", "class_name": "RMSNormalization",
            "registered_name": "RMSNormalization", "name": "norm", "config": {"name": "norm", "epsilon": 0.01}}
    config = kmodels.functional([(kmodels.input_layer("x", (3, 5)), []), (norm, ["x"])], ["x"], ["norm"])
    scale = np.array([0.5, -1.0, 0.0, 2.0, -0.25], np.float32)
    path = kmodels.save_keras(tmp_path / "m.keras", config, {"norm": [scale]})
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    want = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 0.01) * (1 + scale)
    np.testing.assert_allclose(run(converter.convert(path), x)["norm"], want, rtol=1e-5, atol=1e-6)


def test_a_causal_lm_around_an_embedding_backbone_is_refused(tmp_path: Path) -> None:
    """Gemma3CausalLM needs hidden states to project to the vocabulary; EmbeddingGemma returns pooled ones."""
    backbone = {"module": "keras_hub.src.models.gemma3.gemma3_backbone", "class_name": "Gemma3Backbone",
                "registered_name": "keras_hub>Gemma3Backbone",
                "config": {"name": "backbone", **GEMMA3, "is_embedding_model": True, "pooling_intermediate_dim": 8,
                           "embedding_dim": 4}}
    path = hub_archive(tmp_path / "m.keras", "Gemma3CausalLM", {"name": "lm", "backbone": backbone,
                                                               "preprocessor": None},
                       "keras_hub.src.models.gemma3.gemma3_causal_lm")
    with pytest.raises(FormatError, match="wraps a Gemma3Backbone that returns no hidden states"):
        converter.convert(path)
