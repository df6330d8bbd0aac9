"""Shared by the Keras Hub tests: small Keras Hub models with random weights, saved, converted, compared.

Keras Hub's own classes build each model (nothing is downloaded); the reference is Keras' forward pass on
the TensorFlow backend (the backend every Keras Hub block takes its explicit, non-fused attention path on).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnxruntime as ort
import pytest

RTOL, ATOL = 1e-4, 1e-5


def hub_archive(path: Path, class_name: str = "", config: dict[str, Any] | None = None,
                module: str = "keras_hub.src.models", *, entry: dict[str, Any] | None = None) -> Path:
    """A `.keras` at `path` holding one Keras Hub entry and no weights, as a damaged or hand-edited file looks,
    for tests that need no Keras: metadata.json, config.json (`{module, class_name, registered_name
    "keras_hub>class_name", config}`) and a model.weights.h5 with empty groups `layers` and `vars`.
    `entry` replaces that config.json entry whole, for an entry of another shape."""
    if (entry is None) == (not class_name):
        raise TypeError("hub_archive takes either class_name (and config) or entry")
    if entry is None:
        entry = {"module": module, "class_name": class_name, "registered_name": f"keras_hub>{class_name}",
                 "config": config if config is not None else {}}
    weights = io.BytesIO()
    with h5py.File(weights, "w") as handle:
        handle.create_group("layers")
        handle.create_group("vars")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(entry))
        archive.writestr("model.weights.h5", weights.getvalue())
    return path


def hub() -> Any:
    return pytest.importorskip("keras_hub")


def randomize(model: Any, seed: int = 0, scale: float = 0.5) -> None:
    """Every variable random (BatchNorm variances positive), so each weight changes the answer."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.path
        values = rng.normal(size=shape) * scale
        if "moving_variance" in name:
            values = np.abs(values) + 0.5
        variable.assign(values.astype(variable.dtype))


def text_inputs(batch: int, seq: int, vocab: int, padding: str = "none", segments: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    """`token_ids` and `padding_mask` (1 = a real token), `segment_ids` too for BERT. padding: "none",
    "right" (each row ends in a different number of padding tokens) or "left" (padding first)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq)).astype("int32")
    mask = np.ones((batch, seq), "int32")
    if padding != "none":
        for row in range(batch):
            pad = min(seq - 1, 1 + 2 * row)
            if padding == "right":
                mask[row, seq - pad:] = 0
            else:
                mask[row, :pad] = 0
        ids = ids * mask
    out = {"token_ids": ids, "padding_mask": mask}
    if segments:
        out["segment_ids"] = (np.arange(seq)[None, :] >= seq // 2).astype("int32").repeat(batch, 0)
    return out


def image_inputs(batch: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def keras_answer(model: Any, inputs: Any) -> dict[str, np.ndarray] | list[np.ndarray]:
    out = model(inputs, training=False)
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return [np.asarray(v) for v in (out if isinstance(out, (list, tuple)) else [out])]


def convert_saved(model: Any, tmp_path: Path, name: str = "model") -> Any:
    """Save as `.keras` and convert; returns the ONNX ModelProto."""
    import converter

    path = tmp_path / f"{name}.keras"
    model.save(path)
    return converter.convert(path)


def run(onnx_model: Any, inputs: Any) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    assert set(feeds) == set(names), f"ONNX inputs {names}, given {sorted(feeds)}"
    outputs = session.run(None, feeds)
    return {o.name: v for o, v in zip(session.get_outputs(), outputs)}


def assert_matches(onnx_model: Any, model: Any, inputs: Any, rtol: float = RTOL, atol: float = ATOL) -> float:
    """ONNX outputs against Keras' (a dict by name, else in order); returns the largest absolute error."""
    want = keras_answer(model, inputs)
    got = run(onnx_model, inputs)
    pairs = [(got[k], v) for k, v in want.items()] if isinstance(want, dict) else list(zip(got.values(), want))
    assert len(got) == len(want), f"ONNX has outputs {list(got)}, Keras {len(want)}"
    worst = 0.0
    for actual, expected in pairs:
        assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
        worst = max(worst, float(np.max(np.abs(actual - expected))) if actual.size else 0.0)
    return worst
