"""The guide examples of the foundation issue, built live with Keras 3 and tf_keras.

The live tests (`tf`) rebuild every fixture case with the installed Keras versions through the same
builders as `fixtures/make_fixtures.py`, save every format into a temporary folder, convert and compare
with `model.predict`: the committed fixtures pin one Keras release, these follow the installed ones.
The rank-4 LSTM mistake needs no TensorFlow: Keras refuses to build that model, so the file is written
by hand, as a user's hand-edited or foreign config would be.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import functional, input_layer, layer, save_keras, save_legacy_h5
from test_fixtures import CASES, FIXTURES, FORMATS, KERAS_HUB_PREFIX, run_model

import converter
from converter.errors import ShapeError

LiveFiles = tuple[Path, list[np.ndarray], list[np.ndarray]]


# The cases make_fixtures.py rebuilds (the Keras Hub ones come from make_hub_fixtures.py).
LIVE_CASES = [(case, fmt) for case, fmt in CASES if not case.startswith(KERAS_HUB_PREFIX)]


@pytest.fixture(scope="module")
def make_fixtures() -> ModuleType:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    pytest.importorskip("keras", reason="the live cross-check needs Keras 3 (the tf extra)")
    pytest.importorskip("tf_keras", reason="the live cross-check needs tf_keras (the tf extra)")
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_fixtures as module
    finally:
        sys.path.remove(str(FIXTURES))
    return module


@pytest.fixture(scope="module")
def live(make_fixtures: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(case, source) -> the files one Keras wrote for the case, its inputs and its predictions; built once."""
    built: dict[tuple[str, str], LiveFiles] = {}

    def get(case_name: str, source: str) -> LiveFiles:
        if (case_name, source) not in built:
            case = next(c for c in make_fixtures.CASES if c.name == case_name)
            folder = tmp_path_factory.mktemp(f"{case_name}_{source}")
            rng = np.random.default_rng(7)  # other weights and inputs than the committed fixture's
            inputs = case.inputs(rng)
            write = make_fixtures.write_k3 if source == "k3" else make_fixtures.write_k2
            built[(case_name, source)] = (folder, inputs, write(folder, case, rng, inputs))
        return built[(case_name, source)]

    return get


@pytest.mark.tf
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("case", "fmt"), LIVE_CASES, ids=[f"{c}-{f}" for c, f in LIVE_CASES])
def test_guide_example_live(case: str, fmt: str, batch: int, live: Any) -> None:
    model_file, weights_file, source = FORMATS[fmt]
    folder, inputs, expected = live(case, source)
    model = converter.convert(folder / model_file, weights=None if weights_file is None else folder / weights_file)
    outputs = run_model(model, [x[:batch] for x in inputs])
    assert len(outputs) == len(expected)
    for actual, want in zip(outputs, expected):
        assert_close(actual, want[:batch])


def _lstm_weights(rng: np.random.Generator, features: int) -> dict[str, Any]:
    cell = [rng.normal(size=(features, 40)), rng.normal(size=(10, 40)), rng.normal(size=40)]
    return {"lstm": {"cell": [a.astype("float32") for a in cell]}}


def _rank4_input_layer() -> dict[str, Any]:
    """Keras 3: `x = Input(shape=(1, 3, 1)); LSTM(10)(x)`."""
    return functional([(input_layer("input_layer", (1, 3, 1)), []),
                       (layer("LSTM", "lstm", units=10), ["input_layer"])], ["input_layer"], ["lstm"])


def _rank4_input_shape() -> dict[str, Any]:
    """Keras 2: `Sequential([LSTM(10, input_shape=(1, 3, 1))])`, saved as batch_input_shape."""
    lstm = layer("LSTM", "lstm", units=10, batch_input_shape=[None, 1, 3, 1])
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [lstm]}}


@pytest.mark.parametrize(("spelling", "save"), [("Input", save_keras), ("input_shape", save_legacy_h5)],
                         ids=["keras3-Input", "keras2-input_shape"])
def test_rank4_lstm_input_explains_the_batch_dimension(tmp_path: Path, rng: np.random.Generator, spelling: str,
                                                       save: Any) -> None:
    config = _rank4_input_layer() if spelling == "Input" else _rank4_input_shape()
    path = save(tmp_path / ("m.keras" if save is save_keras else "m.h5"), config, _lstm_weights(rng, 1))
    with pytest.raises(ShapeError) as err:
        converter.convert(path)
    message = str(err.value)
    assert "input_shape excludes the batch dimension" in message
    assert "did you mean input_shape=(3, 1)" in message
    assert "'lstm'" in message
