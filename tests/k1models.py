"""Keras 1 model files built in tests, in the layout Keras 1.x wrote (checked against the corpus):
a bare-list Sequential or a `Model` config with Keras 1 argument names, and `model_weights/<layer>`
groups whose `weight_names` are `<layer>_W`, `<layer>_U_i`, ... in `layer.weights` order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def k1layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    return {"class_name": class_name, "config": {"name": name, "trainable": True, **config}}


def k1sequential(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"class_name": "Sequential", "config": layers, "keras_version": "1.2.2"}


def k1model(layers: list[tuple[dict[str, Any], list[str]]], inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    """Keras 1 functional `Model`; each entry is (layer, names of the layers feeding its single call)."""
    entries = []
    for layer, inbound in layers:
        entry = dict(layer, name=layer["config"]["name"])
        entry["inbound_nodes"] = [[[n, 0, 0] for n in inbound]] if inbound else []
        entries.append(entry)
    return {"class_name": "Model", "keras_version": "1.2.2", "config": {
        "name": "model_1", "layers": entries,
        "input_layers": [[n, 0, 0] for n in inputs], "output_layers": [[n, 0, 0] for n in outputs]}}


def save_keras1_h5(path: Path, config: dict[str, Any], weights: dict[str, list[tuple[str, np.ndarray]]],
                   keras_version: str | None = "1.2.2", backend: str | None = None) -> Path:
    """`weights`: layer name -> [(weight suffix, array)] in Keras 1 order, e.g. [("W", w), ("b", b)]."""
    inner = config["config"]
    layers = inner if isinstance(inner, list) else inner["layers"]
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        if keras_version is not None:
            handle.attrs["keras_version"] = keras_version
        if backend is not None:
            handle.attrs["backend"] = backend
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = [entry["config"]["name"].encode() for entry in layers]
        for entry in layers:
            name = entry["config"]["name"]
            sub = group.create_group(name)
            named = [(f"{name}_{suffix}", np.asarray(array)) for suffix, array in weights.get(name, [])]
            sub.attrs["weight_names"] = [n.encode() for n, _ in named]
            for wname, array in named:
                sub.create_dataset(wname, data=array)
    return path
