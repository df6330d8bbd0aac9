"""Build Keras model files in tests without TensorFlow: configs as dicts, weights as numpy arrays.

The writers follow the layouts Keras itself writes (checked against real files in fixtures/):
- `save_keras`: a Keras 3 `.keras` zip (config.json, metadata.json, model.weights.h5 with
  `layers/<snake_case class>[_n]/vars/<i>`; sub-objects such as an RNN `cell` as child groups);
- `save_legacy_h5`: a Keras 2 / tf.keras full-model `.h5` (`model_config` + `model_weights/<layer>`).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import onnxruntime as ort

from converter.keras.weights import saved_names

# Per-layer weights: a list of arrays (own vars), or {sub-path: list} for sub-objects ("cell", ...).
LayerWeights = dict[str, Any]


def layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    return {"class_name": class_name, "config": {"name": name, **config}, "name": name}


def sequential(layers: list[dict[str, Any]], input_shape: tuple[Any, ...] | None = None,
               name: str = "sequential") -> dict[str, Any]:
    """A Keras 3 style Sequential config; `input_shape` (without batch) adds an InputLayer."""
    entries = list(layers)
    if input_shape is not None:
        entries.insert(0, layer("InputLayer", "input_layer", batch_shape=[None, *input_shape], dtype="float32"))
    return {"class_name": "Sequential", "config": {"name": name, "layers": entries}}


def keras_tensor(name: str, node: int = 0, index: int = 0) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                         "keras_history": [name, node, index]}}


def functional(layers: list[tuple[dict[str, Any], list[Any]]], inputs: list[str], outputs: list[str],
               name: str = "functional") -> dict[str, Any]:
    """Keras 3 Functional config. Each entry is (layer config, inbound layer names for one call)."""
    entries = []
    for cfg, inbound in layers:
        entry = dict(cfg)
        if cfg["class_name"] == "InputLayer":
            entry["inbound_nodes"] = []
        else:
            args: Any = [keras_tensor(n) for n in inbound]
            entry["inbound_nodes"] = [{"args": args if len(args) > 1 else args, "kwargs": {}}]
            if len(args) > 1:
                entry["inbound_nodes"] = [{"args": [args], "kwargs": {}}]
        entries.append(entry)
    return {"class_name": "Functional", "config": {
        "name": name, "layers": entries,
        "input_layers": [[n, 0, 0] for n in inputs], "output_layers": [[n, 0, 0] for n in outputs]}}


def input_layer(name: str, shape: tuple[Any, ...], dtype: str = "float32") -> dict[str, Any]:
    return layer("InputLayer", name, batch_shape=[None, *shape], dtype=dtype)


def _container_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    inner = config["config"]
    return inner if isinstance(inner, list) else inner["layers"]


def _write_keras3_weights(group: h5py.Group, config: dict[str, Any], weights: dict[str, LayerWeights]) -> None:
    layers = _container_layers(config)
    names = saved_names([(entry["config"]["name"], entry["class_name"]) for entry in layers])
    root = group.create_group("layers")
    for entry in layers:
        lname = entry["config"]["name"]
        sub = root.create_group(names[lname])
        if entry["class_name"] in ("Sequential", "Functional", "Model"):
            _write_keras3_weights(sub, entry, weights)
            continue
        _write_vars(sub, weights.get(lname, []))


def _write_vars(group: h5py.Group, value: Any) -> None:
    if isinstance(value, dict):
        for path, arrays in value.items():
            _write_vars(group.require_group(path) if path else group, arrays)
        return
    vars_group = group.require_group("vars")
    for i, array in enumerate(value):
        vars_group.create_dataset(str(i), data=np.asarray(array))


def save_keras(path: Path, config: dict[str, Any], weights: dict[str, LayerWeights],
               keras_version: str = "3.15.1") -> Path:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        _write_keras3_weights(handle, config, weights)
        handle.create_group("vars")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": keras_version}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def _flat(value: Any) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [a for arrays in value.values() for a in _flat(arrays)]
    return list(value)


def save_legacy_h5(path: Path, config: dict[str, Any], weights: dict[str, LayerWeights],
                   keras_version: str = "2.15.0") -> Path:
    """Keras 2 layout; nested models store their inner weights under the nested model's group."""
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        handle.attrs["keras_version"] = keras_version
        handle.attrs["backend"] = "tensorflow"
        _write_legacy_group(handle.create_group("model_weights"), config, weights)
    return path


def _write_legacy_group(group: h5py.Group, config: dict[str, Any], weights: dict[str, LayerWeights]) -> None:
    layers = _container_layers(config)
    group.attrs["layer_names"] = [e["config"]["name"].encode() for e in layers]
    for entry in layers:
        lname = entry["config"]["name"]
        sub = group.create_group(lname)
        if entry["class_name"] in ("Sequential", "Functional", "Model"):
            inner = [(e["config"]["name"], a) for e in _container_layers(entry)
                     for a in _flat(weights.get(e["config"]["name"], []))]
            _write_named(sub, [(f"{owner}/w{i}:0", a) for i, (owner, a) in enumerate(inner)])
        else:
            _write_named(sub, [(f"{lname}/w{i}:0", a) for i, a in enumerate(_flat(weights.get(lname, [])))])


def _write_named(group: h5py.Group, named: list[tuple[str, np.ndarray]]) -> None:
    group.attrs["weight_names"] = [n.encode() for n, _ in named]
    for name, array in named:
        group.create_dataset(name, data=np.asarray(array))


def save_legacy_weights(path: Path, config: dict[str, Any], weights: dict[str, LayerWeights],
                        keras_version: str = "2.15.0") -> Path:
    """Keras 2 `save_weights("x.h5")`: the layer groups at the root, no model_config."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = keras_version
        handle.attrs["backend"] = "tensorflow"
        _write_legacy_group(handle, config, weights)
    return path


def save_keras3_weights(path: Path, config: dict[str, Any], weights: dict[str, LayerWeights]) -> Path:
    """Keras 3 `save_weights("x.weights.h5")`: the same layout as model.weights.h5 inside a .keras zip."""
    with h5py.File(path, "w") as handle:
        _write_keras3_weights(handle, config, weights)
        handle.create_group("vars")
    return path


def run_onnx(model: onnx.ModelProto, *inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
    return list(session.run(None, feeds))

