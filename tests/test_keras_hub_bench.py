"""bench/keras_hub_bench.py's mapping of one set of Keras inputs onto two ONNX files (kconvert's and Keras'
export, whose input names, types and output names differ), and how it reports a refusal. No timing here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("keras_hub_bench", ROOT / "bench" / "keras_hub_bench.py")
assert _spec is not None and _spec.loader is not None
hub_bench = importlib.util.module_from_spec(_spec)
sys.modules["keras_hub_bench"] = hub_bench  # dataclasses look their module up while the class is built
_spec.loader.exec_module(hub_bench)


def test_bert_inputs_are_padded_per_row_and_segmented() -> None:
    arrays = hub_bench.token_inputs("bert_small", 8, 128)
    assert sorted(arrays) == ["padding_mask", "segment_ids", "token_ids"]
    lengths = arrays["padding_mask"].sum(axis=1)
    assert lengths[0] == 128 and lengths[-1] == 64 and np.all(np.diff(lengths) <= 0)
    assert np.all(arrays["token_ids"][arrays["padding_mask"] == 0] == 0)
    assert np.all(arrays["token_ids"][arrays["padding_mask"] == 1] > 0)
    assert np.all(arrays["segment_ids"] <= arrays["padding_mask"]) and arrays["segment_ids"][0, -1] == 1
    assert sorted(hub_bench.token_inputs("gpt2_small", 1, 16)) == ["padding_mask", "token_ids"]
    assert hub_bench.token_inputs("gpt2_small", 1, 16)["padding_mask"].all()  # batch 1: no padding


def test_feed_maps_by_name_and_casts_to_each_files_types() -> None:
    arrays = hub_bench.token_inputs("bert_small", 2, 8)
    keras_export = [("padding_mask", "tensor(int32)"), ("segment_ids", "tensor(int32)"),
                    ("token_ids", "tensor(int32)")]
    ours = [("token_ids", "tensor(int64)"), ("segment_ids:0", "tensor(int64)"), ("padding_mask", "tensor(bool)")]
    a, b = hub_bench.feed_for(keras_export, arrays), hub_bench.feed_for(ours, arrays)
    assert b["token_ids"].dtype == np.int64 and b["padding_mask"].dtype == np.bool_
    for name in arrays:
        np.testing.assert_array_equal(a[name], arrays[name])
    np.testing.assert_array_equal(b["segment_ids:0"], arrays["segment_ids"])
    np.testing.assert_array_equal(b["padding_mask"], arrays["padding_mask"].astype(bool))


def test_feed_refuses_a_missing_or_an_unread_input() -> None:
    arrays = hub_bench.token_inputs("bert_small", 1, 8)
    with pytest.raises(KeyError, match="input_ids"):
        hub_bench.feed_for([("input_ids", "tensor(int32)")], arrays)
    with pytest.raises(KeyError, match="segment_ids"):  # a file that ignores segment_ids is not comparable
        hub_bench.feed_for([("token_ids", "tensor(int32)"), ("padding_mask", "tensor(int32)")], arrays)
    with pytest.raises(TypeError, match="tensor\\(string\\)"):
        hub_bench.feed_for([("token_ids", "tensor(string)")], {"token_ids": arrays["token_ids"]})


def test_outputs_pair_by_name_or_as_the_only_output() -> None:
    assert hub_bench.paired_outputs(["sequence_output", "pooled_output"], ["pooled_output", "sequence_output:0"]) \
        == [("sequence_output", "sequence_output:0"), ("pooled_output", "pooled_output")]
    assert hub_bench.paired_outputs(["sequence_output"], ["Identity:0"]) == [("sequence_output", "Identity:0")]
    with pytest.raises(KeyError, match="outputs differ"):
        hub_bench.paired_outputs(["a", "b"], ["a", "c"])


def test_a_kconvert_error_is_a_refusal_with_its_hint_and_anything_else_a_failure() -> None:
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "converter.errors.UnsupportedLayerError: Keras Hub class BertBackbone is not converted\n"
              "  hint: converted Keras Hub classes: ResNetBackbone\n")
    assert hub_bench._failure(stderr) == ("refused: Keras Hub class BertBackbone is not converted hint: converted "
                                          "Keras Hub classes: ResNetBackbone (UnsupportedLayerError)")
    assert hub_bench._failure("Traceback ...\nMemoryError: out\n") == "failed: out (MemoryError)"
    assert hub_bench._failure("Killed\n") == "failed: Killed"


def test_table_keeps_each_tools_column_when_one_tool_made_no_file() -> None:
    refused = hub_bench.Conversion(None, None, "refused: not converted (UnsupportedLayerError)")
    keras = hub_bench.Conversion(Path("k.onnx"), 30.0, cached="2026-12-08 00:01")
    row = {"model": "bert_small", "ours": refused, "keras": keras, "graphs": [None, (244, "FastGelu 2")],
           "diff": "", "b1": [None, 2.0], "b8": [None, 14.0]}
    line = hub_bench.table([row]).splitlines()[-1]
    assert line == ("| bert_small | kconvert: refused: not converted (UnsupportedLayerError) | 30.0 (cached, "
                    "2026-12-08 00:01) |  | - / 2.00 |  | - / 14.0 |  |  | - / 244 |  | FastGelu 2 |")
    both = {**row, "ours": hub_bench.Conversion(Path("o.onnx"), 1.5), "graphs": [(91, "LayerNormalization 5"),
            (244, "FastGelu 2")], "diff": "1.0e-06 (x)", "b1": [1.0, 2.0], "b8": [7.0, 14.0]}
    assert "| 1.50 | 30.0 (cached, 2026-12-08 00:01) | 20.0x | 1.00 / 2.00 | 0.50 | 7.0 / 14.0 | 0.50 |" \
        in hub_bench.table([both])
