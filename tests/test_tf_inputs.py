"""--check against live Keras with real inputs (--inputs), more generated samples in batches (--samples,
--batch-size, --seed) and chosen sizes for unknown dims (--input-shape)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from application.cli import main

pytestmark = pytest.mark.tf
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _cli(*args: Any) -> Result:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return CliRunner().invoke(main, [str(a) for a in args])


def _check(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    check: dict[str, Any] = json.loads(result.stdout)["check"]
    assert check["ok"]
    return check


def test_stored_inputs_in_batches_match_keras(tmp_path: Path) -> None:
    inputs = FIXTURES / "merge_add" / "inputs.npz"
    check = _check(_cli(FIXTURES / "merge_add" / "model.keras", "-o", tmp_path / "m.onnx", "--check", "--inputs",
                        inputs, "--batch-size", "2", "--json"))
    assert check["inputs"]["source"] == str(inputs) and check["inputs"]["batches"] == 2
    assert check["inputs"]["samples"] == 3 and check["outputs"][0]["shape"] == [3, 8]


def test_many_generated_samples_in_batches_match_keras(tmp_path: Path) -> None:
    check = _check(_cli(FIXTURES / "small_cnn" / "model.h5", "-o", tmp_path / "m.onnx", "--check", "--samples", "40",
                        "--batch-size", "16", "--seed", "3", "--save-test-data", "--json"))
    assert (check["inputs"]["samples"], check["inputs"]["batches"], check["inputs"]["seed"]) == (40, 4, 3)
    assert check["inputs"]["shapes"] == {"input_layer": [None, 8, 8, 3]}
    again = _check(_cli(FIXTURES / "small_cnn" / "model.h5", "-o", tmp_path / "again.onnx", "--check", "--inputs",
                        tmp_path / "m_test_data", "--json"))
    assert again["inputs"]["samples"] == 40 and again["inputs"]["batches"] == 4


def _unknown_size_conv(path: Path) -> Path:
    keras = pytest.importorskip("keras")
    x = keras.Input((None, None, 3), name="image")
    y = keras.layers.Conv2D(4, 7)(x)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.MaxPooling2D()(y)))
    keras.Model(x, y).save(path)
    return path


def test_input_shape_sets_the_unknown_dims_keras_and_onnx_run_at(tmp_path: Path) -> None:
    model = _unknown_size_conv(tmp_path / "conv.keras")
    chosen = _check(_cli(model, "--check", "--input-shape", "image=21,30,3", "--json"))["inputs"]
    assert chosen["shapes"] == {"image": [None, 21, 30, 3]} and chosen["probed_unknown_dim"] is None
    probed = _check(_cli(model, "--check", "--json"))["inputs"]
    assert probed["shapes"] == {"image": [None, 16, 16, 3]} and probed["probed_unknown_dim"] == 16
    too_small = _cli(model, "--check", "--input-shape", "image=6,6,3")
    assert too_small.exit_code == 2 and "does not run at --input-shape image=6,6,3" in too_small.output
    assert not (tmp_path / "conv.onnx").exists()


def test_real_images_of_a_chosen_size_match_keras(tmp_path: Path) -> None:
    model = _unknown_size_conv(tmp_path / "conv.keras")
    images = np.random.default_rng(0).uniform(0, 1, size=(5, 24, 20, 3)).astype("float32")
    np.save(tmp_path / "image.npy", images)
    check = _check(_cli(model, "--check", "--inputs", tmp_path / "image.npy", "--json"))
    assert check["inputs"]["shapes"] == {"image": [None, 24, 20, 3]} and check["outputs"][0]["shape"] == [5, 4]
