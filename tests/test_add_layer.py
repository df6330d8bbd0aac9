"""Adding a layer touches its family module and its test, nothing else: this test is that family module.

It registers a class kconvert has never seen (a scaled, shifted tanh with a weight), with a typed spec,
traits and an emission, and converts a model that uses it end to end: config parsing, weight
attachment, shape inference, masking, BN folding and layout passes, lowering, ONNX checking,
onnxruntime. No table elsewhere in the code had to learn the class.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import converter
from converter.errors import KconvertError
from converter.ir import Node
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec, parse_fields


@dataclass(frozen=True)
class ScaledTanhSpec(LayerSpec):
    scale: float = 1.0
    shift: float = 0.0


class ScaledTanh(LayerHandler[ScaledTanhSpec]):
    """y = scale * tanh(x * gain + shift), gain a per-feature weight."""

    layout_agnostic = False
    passes_mask = True

    def parse(self, config: Config) -> ScaledTanhSpec:
        return parse_fields(ScaledTanhSpec, config)

    def weight_names(self, node: Node) -> list[str]:
        return ["gain"]

    def weight_shapes(self, node: Node, input_shapes: list[tuple[int | str | None, ...]]
                      ) -> dict[str, tuple[int | None, ...]]:
        last = input_shapes[0][-1]
        return {"gain": (last if isinstance(last, int) else None,)}

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        x = b.op("Add", b.op("Mul", inputs[0], b.weight("gain")), b.scalar(spec.shift, "shift"))
        return [b.op("Mul", b.op("Tanh", x), b.scalar(spec.scale, "scale"))]


@pytest.fixture
def registered() -> Iterator[None]:
    LAYERS.add("ScaledTanh", ScaledTanh())
    try:
        yield
    finally:
        LAYERS.remove("ScaledTanh")


def _model(folder: Path, gain: np.ndarray) -> Path:
    import h5py

    layers = [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_input_shape": [None, 3, 4], "dtype": "float32"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 4, "activation": "linear", "use_bias": True}},
        {"class_name": "ScaledTanh", "config": {"name": "st", "scale": 2.5, "shift": -0.25}},
    ]
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": layers}}
    path = folder / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [b"dense", b"st"]
        dense = weights.create_group("dense")
        dense.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        dense.create_dataset("dense/kernel:0", data=np.eye(4, dtype=np.float32) * 0.5)
        dense.create_dataset("dense/bias:0", data=np.full(4, 0.1, np.float32))
        st = weights.create_group("st")
        st.attrs["weight_names"] = [b"st/gain:0"]
        st.create_dataset("st/gain:0", data=gain)
    return path


def test_a_new_layer_class_converts_with_nothing_but_its_handler(registered: None, tmp_path: Path) -> None:
    gain = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    model = converter.convert(_model(tmp_path, gain))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    expected = 2.5 * np.tanh((x * 0.5 + 0.1) * gain - 0.25)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_new_class_is_unknown_once_unregistered(tmp_path: Path) -> None:
    """The same file is refused without the handler: the registration, not some table, made it work."""
    with pytest.raises(KconvertError, match="ScaledTanh"):
        converter.convert(_model(tmp_path, np.ones(4, np.float32)))
