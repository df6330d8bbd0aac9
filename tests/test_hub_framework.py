"""The Keras Hub framework without Keras: the Functional builder's layer order, the expansion's refusals,
the typed constructor-argument reads, preset folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hub_support import hub_archive

import converter
from converter.errors import FormatError, KconvertError, UnsupportedLayerError
from converter.keras.hub.functional import FunctionalBuilder
from converter.keras.hub.recipes import MAX_SIZE, HubModel, StoredWeights


def _conv(b: FunctionalBuilder, name: str, x: Any) -> Any:
    return b.layer("Conv2D", name, {"filters": 4, "kernel_size": 1}, x)


def test_layers_come_out_in_keras_order_whatever_the_call_order() -> None:
    """A residual block whose shortcut conv is created first: Keras lists layers by depth from the outputs,
    ties in the order a depth-first walk from the outputs meets them, so the shortcut comes last."""
    b = FunctionalBuilder("m")
    x = b.input("images", (8, 8, 3))
    shortcut = _conv(b, "shortcut", x)
    main = _conv(b, "main_2", _conv(b, "main_1", x))
    out = b.layer("Add", "add", {}, [main, shortcut])
    names = [layer["name"] for layer in b.build(out)["layers"]]
    assert names == ["images", "main_1", "main_2", "shortcut", "add"]


def test_shared_layer_calls_and_dict_outputs() -> None:
    b = FunctionalBuilder("m")
    ids = b.input("token_ids", (None,), "int32")
    embedded = b.layer("ReversibleEmbedding", "emb", {"input_dim": 5, "output_dim": 2}, ids)
    logits = b.layer("ReversibleEmbedding", "emb", {}, embedded, reverse=True)
    config = b.build({"sequence_output": embedded, "logits": logits})
    emb = next(layer for layer in config["layers"] if layer["name"] == "emb")
    assert len(emb["inbound_nodes"]) == 2 and emb["inbound_nodes"][1]["kwargs"] == {"reverse": True}
    assert config["output_layers"] == {"sequence_output": ["emb", 0, 0], "logits": ["emb", 1, 0]}
    assert config["input_layers"] == [["token_ids", 0, 0]]


def _model(**config: Any) -> HubModel:
    return HubModel.of("BertBackbone", {"name": "bert", **config}, StoredWeights(None))


@pytest.mark.parametrize("value", ["2", 2.5, True, 0, MAX_SIZE + 1, None, [2]])
def test_integer_arguments_are_checked(value: Any) -> None:
    with pytest.raises(FormatError, match="num_layers") as err:
        _model(num_layers=value).integer("num_layers")
    assert err.value.layer == "bert"


def test_typed_reads() -> None:
    model = _model(dropout=0.1, act="gelu", sizes=[1, 2], flag=False)
    assert model.number("dropout") == 0.1 and model.number("missing", 0.5) == 0.5
    assert model.text("act", choices=("gelu", "relu")) == "gelu" and model.integers("sizes") == (1, 2)
    assert model.flag("flag", True) is False and model.optional_integer("missing") is None
    for read in (lambda: model.text("act", choices=("relu",)), lambda: model.integers("act"),
                 lambda: model.flag("act", True), lambda: _model(x=float("nan")).number("x"),
                 lambda: _model(x=list(range(5000))).items("x")):
        with pytest.raises(FormatError):
            read()


def _hub_entry(cls: str, config: dict[str, Any], module: str = "keras_hub.src.models.x") -> dict[str, Any]:
    return {"module": module, "class_name": cls, "registered_name": f"keras_hub>{cls}", "config": config}


@pytest.mark.parametrize("cls", ["BertTokenizer", "BertTextClassifierPreprocessor", "ViTImageConverter"])
def test_preprocessors_and_tokenizers_are_refused_by_name(tmp_path: Path, cls: str) -> None:
    path = hub_archive(tmp_path / "tok.keras", entry=_hub_entry(cls, {"name": "tok"}))
    with pytest.raises(UnsupportedLayerError, match=f"{cls} 'tok' is a Keras Hub preprocessor") as err:
        converter.convert(path)
    assert "backbone" in str(err.value.hint) and "README.md#keras-hub-models" in str(err.value.hint)


def test_an_unknown_keras_hub_model_is_refused_with_the_supported_list(tmp_path: Path) -> None:
    path = hub_archive(tmp_path / "t5.keras", entry=_hub_entry("T5Backbone", {"name": "t5", "num_layers": 2}))
    with pytest.raises(UnsupportedLayerError, match="Keras Hub class T5Backbone") as err:
        converter.convert(path)
    assert err.value.exit_code == 3


@pytest.mark.parametrize("backbone", [None, "bert", {"class_name": 3}, _hub_entry("NoSuchBackbone", {})])
def test_a_task_whose_backbone_is_not_a_known_backbone(tmp_path: Path, backbone: Any) -> None:
    task = _hub_entry("BertTextClassifier", {"name": "clf", "backbone": backbone, "num_classes": 2})
    path = hub_archive(tmp_path / "clf.keras", entry=task)
    from converter.keras.hub.recipes import TASKS

    if "BertTextClassifier" not in TASKS:
        pytest.skip("BertTextClassifier is not registered")
    with pytest.raises(KconvertError) as err:
        converter.convert(path)
    assert err.value.exit_code in (2, 3)


def test_a_preset_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "preset").mkdir()
    with pytest.raises(FormatError, match="without a config.json"):
        converter.convert(tmp_path / "preset")


def test_a_preset_folder_never_reads_through_a_link_out_of_it(tmp_path: Path) -> None:
    preset = tmp_path / "preset"
    preset.mkdir()
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
    (preset / "config.json").symlink_to(outside)
    with pytest.raises(FormatError, match="not a file inside the folder"):
        converter.convert(preset)
