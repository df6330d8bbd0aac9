"""Keras Hub Llama, Llama 3 and Mistral backbones and causal LMs against Keras (keras-hub 0.32.0).

Each model is small, random, saved as `.keras`, converted once and compared with Keras at two batch
sizes and two sequence lengths, without padding and with right and left padding (left padding leaves
whole query rows masked, which Keras Hub's blocks zero on the TensorFlow backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter.errors import KconvertError
from tests.hub_support import assert_matches, convert_saved, hub, hub_archive, randomize, text_inputs

VOCAB = 50
SMALL = {"vocabulary_size": VOCAB, "num_layers": 2, "num_query_heads": 4, "num_key_value_heads": 2,
         "hidden_dim": 16, "intermediate_dim": 32}
# head_dim 8 at wavelength 500000: rotary wavelengths 6.3, 167, 4443 and 118000 fall in Llama 3.1's
# high, high, medium (smoothed) and low (divided) frequency bands of a 8192-token pretraining length.
LLAMA3 = {**SMALL, "num_query_heads": 2, "num_key_value_heads": 1, "rope_max_wavelength": 500000,
          "rope_position_scaling_factor": 8.0, "rope_frequency_adjustment_factor": 8.0,
          "rope_low_freq_factor": 1.0, "rope_high_freq_factor": 4.0, "rope_pretraining_sequence_length": 8192}
SHAPES = ((2, 7), (3, 5))  # (batch, sequence): one ONNX file, dynamic dims


def _check_all(model: Any, tmp_path: Path, paddings: tuple[str, ...] = ("none", "right", "left"),
               name: str = "model") -> float:
    onnx_model = convert_saved(model, tmp_path, name)
    worst = 0.0
    for batch, seq in SHAPES:
        for padding in paddings:
            worst = max(worst, assert_matches(onnx_model, model, text_inputs(batch, seq, VOCAB, padding)))
    return worst


@pytest.mark.tf
@pytest.mark.parametrize("options", [{}, {"num_key_value_heads": 4, "dropout": 0.1, "layer_norm_epsilon": 1e-5}],
                         ids=["gqa", "mha_dropout"])
def test_llama_backbone(tmp_path: Path, options: dict[str, Any]) -> None:
    model = hub().models.LlamaBackbone(**{**SMALL, **options})
    randomize(model, seed=1, scale=0.3)
    _check_all(model, tmp_path)


@pytest.mark.tf
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama_causal_lm(tmp_path: Path, tied: bool) -> None:
    kh = hub()
    backbone = kh.models.LlamaBackbone(**SMALL, tie_word_embeddings=tied)
    model = kh.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    randomize(model, seed=2, scale=0.3)
    _check_all(model, tmp_path)


@pytest.mark.tf
def test_llama3_backbone_and_causal_lm(tmp_path: Path) -> None:
    kh = hub()
    backbone = kh.models.Llama3Backbone(**LLAMA3)
    randomize(backbone, seed=3, scale=0.3)
    _check_all(backbone, tmp_path, name="backbone")
    model = kh.models.Llama3CausalLM(backbone=kh.models.Llama3Backbone(**LLAMA3), preprocessor=None)
    randomize(model, seed=4, scale=0.3)
    _check_all(model, tmp_path, paddings=("right", "left"), name="task")


@pytest.mark.tf
@pytest.mark.parametrize("options", [
    {"sliding_window": 3},
    {"sliding_window": None, "head_dim": 6, "rope_scaling_factor": 4.0, "rope_max_wavelength": 500},
], ids=["window", "no_window_head_dim_scaled"])
def test_mistral_backbone(tmp_path: Path, options: dict[str, Any]) -> None:
    model = hub().models.MistralBackbone(**{**SMALL, **options})
    randomize(model, seed=5, scale=0.3)
    _check_all(model, tmp_path)


@pytest.mark.tf
def test_mistral_causal_lm(tmp_path: Path) -> None:
    kh = hub()
    model = kh.models.MistralCausalLM(backbone=kh.models.MistralBackbone(**SMALL, sliding_window=4),
                                      preprocessor=None)
    randomize(model, seed=6, scale=0.3)
    _check_all(model, tmp_path, paddings=("right", "left"))


@pytest.mark.tf
def test_mistral_recipe_matches_keras_functional_config() -> None:
    """Layer names, classes and order as keras.Model(backbone.input, backbone.output) writes them (Llama's
    blocks cannot write their config in keras-hub 0.32.0: LlamaTransformerDecoder.get_config raises)."""
    import keras

    from converter.keras.hub.expand import expand
    from converter.keras.hub.recipes import StoredWeights

    backbone = hub().models.MistralBackbone(**SMALL, sliding_window=4)
    golden = keras.Model(backbone.input, backbone.output).get_config()
    ours = expand("MistralBackbone", backbone.get_config(), StoredWeights(None))
    assert [(layer["name"], layer["class_name"]) for layer in ours["layers"]] == \
        [(layer["name"], layer["class_name"]) for layer in golden["layers"]]
    for mine, theirs in zip(ours["layers"], golden["layers"]):
        assert [_call_sources(n) for n in mine["inbound_nodes"]] == [_call_sources(n) for n in theirs["inbound_nodes"]]


def _call_sources(node: dict[str, Any]) -> list[Any]:
    """The (layer, node, index) of every tensor a call reads, in order."""
    found: list[Any] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            found.append(list(value["config"]["keras_history"]))
        elif isinstance(value, dict):
            for key in sorted(value):
                visit(value[key])
        elif isinstance(value, (list, tuple)):  # Keras' in-memory config holds tuples
            for item in value:
                visit(item)

    visit(node)
    return found


# -- fast: damaged constructor arguments ------------------------------------------------------------
def _hub_file(tmp_path: Path, class_name: str, **changes: Any) -> Path:
    config = {"name": "backbone", "trainable": True, **SMALL, "rope_max_wavelength": 10000,
              "layer_norm_epsilon": 1e-6, "dropout": 0, **changes}
    return hub_archive(tmp_path / "model.keras", class_name, config, f"keras_hub.src.models.x.{class_name.lower()}")


@pytest.mark.parametrize(("class_name", "changes", "field"), [
    ("LlamaBackbone", {"num_layers": "2"}, "num_layers"),
    ("LlamaBackbone", {"num_layers": 10**9}, "num_layers"),
    ("LlamaBackbone", {"num_key_value_heads": 3}, "num_key_value_heads"),
    ("LlamaBackbone", {"num_query_heads": 17}, "num_query_heads"),
    ("LlamaBackbone", {"hidden_dim": None}, "hidden_dim"),
    ("Llama3Backbone", {"rope_low_freq_factor": 1.0}, "rope_frequency_adjustment_factor"),
    ("Llama3Backbone", {"rope_frequency_adjustment_factor": 8.0, "rope_low_freq_factor": 1.0,
                        "rope_high_freq_factor": 1.0, "rope_pretraining_sequence_length": 8192},
     "rope_high_freq_factor"),
    ("LlamaBackbone", {"rope_max_wavelength": "big"}, "rope_max_wavelength"),
    ("MistralBackbone", {"sliding_window": -1}, "sliding_window"),
    ("MistralBackbone", {"head_dim": 5}, "head_dim"),
    ("MistralBackbone", {"layer_norm_epsilon": [1e-6]}, "layer_norm_epsilon"),
])
def test_damaged_arguments_are_refused_by_name(tmp_path: Path, class_name: str, changes: dict[str, Any],
                                               field: str) -> None:
    import converter

    with pytest.raises(KconvertError, match=field):
        converter.convert(_hub_file(tmp_path, class_name, **changes))
