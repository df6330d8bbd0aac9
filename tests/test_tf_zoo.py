"""The Keras Applications zoo, live: each application built by Keras 3 with `weights=None` at the smallest
input it accepts, saved as `.keras` and as Keras 3 `.h5`, converted, and compared with `model.predict`
at rtol 1e-4 / atol 1e-4 on seeded random images, batch 1 and 3.

Heads: every model keeps its classifier (include_top=True, classes=10) with
`classifier_activation=None`, so the test compares logits: a softmax over a random-init network's
outputs is nearly uniform and would hide differences. Weights: random init, then `calibrate` from
`fixtures/make_zoo.py` (BN statistics from a calibration batch, with a variance floor that keeps float32
rounding well inside the tolerance; see there) or, for VGG16, which has no normalisation, `lsuv`
(kernels scaled to unit-RMS activations). Each model is built, calibrated and saved once per module.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from kmodels import run_onnx

import converter

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf
keras = pytest.importorskip("keras")

RTOL = ATOL = 1e-4
MAKE_ZOO = Path(__file__).resolve().parent.parent / "fixtures" / "make_zoo.py"


def _make_zoo() -> Any:
    """fixtures/make_zoo.py, which holds the calibration shared with the committed zoo fixtures."""
    spec = importlib.util.spec_from_file_location("make_zoo", MAKE_ZOO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class App:
    build: Callable[..., Any]  # a keras.applications constructor
    side: int  # the smallest input side it accepts
    raw: bool  # include_preprocessing: it rescales raw [0, 255] pixels itself
    floor: float = 0.1  # BN variance floor (see make_zoo.calibrate); 0.3 for the deepest plain stacks


A = keras.applications
ZOO: dict[str, App] = {
    "MobileNetV2": App(A.MobileNetV2, 32, False),
    "MobileNetV3Small": App(A.MobileNetV3Small, 32, True),
    "ResNet50": App(A.ResNet50, 32, False, 0.3),
    "ResNet50V2": App(A.ResNet50V2, 32, False, 0.3),
    "DenseNet121": App(A.DenseNet121, 32, False),
    "EfficientNetB0": App(A.EfficientNetB0, 32, True),
    "EfficientNetV2B0": App(A.EfficientNetV2B0, 32, True),
    "InceptionV3": App(A.InceptionV3, 75, False, 0.3),
    "Xception": App(A.Xception, 71, False),
    "VGG16": App(A.VGG16, 32, False),
    "NASNetMobile": App(A.NASNetMobile, 32, False),
    "ConvNeXtTiny": App(A.ConvNeXtTiny, 32, True),
}
FORMATS = ["keras", "h5"]
MAKE_ZOO_MODULE = _make_zoo()


@dataclass
class Built:
    paths: dict[str, Path]
    x: np.ndarray
    expected: dict[int, np.ndarray]  # batch size -> model.predict on the first `batch` images
    converted: dict[str, Any]


@pytest.fixture(scope="module", params=list(ZOO))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    name, spec = request.param, ZOO[request.param]
    zoo = MAKE_ZOO_MODULE
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = spec.build(weights=None, input_shape=(spec.side, spec.side, 3), classes=10, classifier_activation=None)
    calibration = zoo.images(rng, zoo.CALIBRATION_BATCH, spec.side, spec.raw)
    if name == "VGG16":
        zoo.lsuv(model, calibration)
    else:
        zoo.calibrate(model, calibration, rng, spec.floor)
    folder = tmp_path_factory.mktemp(name)
    paths = {fmt: folder / f"model.{fmt}" for fmt in FORMATS}
    for path in paths.values():
        model.save(path)
    x = zoo.images(rng, 3, spec.side, spec.raw)
    expected = {batch: model.predict(x[:batch], verbose=0) for batch in (1, 3)}
    yield Built(paths, x, expected, {})
    for path in paths.values():  # the full-size files are large (up to ~130 MB each)
        path.unlink()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_application_matches_keras(app: Built, fmt: str, batch: int) -> None:
    if fmt not in app.converted:
        app.converted[fmt] = converter.convert(app.paths[fmt])
    (actual,) = run_onnx(app.converted[fmt], app.x[:batch])
    assert_close(actual, app.expected[batch], rtol=RTOL, atol=ATOL)


def test_outputs_tell_inputs_apart(app: Built) -> None:
    """The calibrated logits differ between images far beyond the tolerance, so the comparison above
    would catch a conversion that lost the input's influence."""
    logits = app.expected[3]
    assert np.abs(logits - logits[:1]).max() > 100 * ATOL
