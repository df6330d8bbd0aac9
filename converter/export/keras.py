"""LayerGraph -> Keras 3 `.keras` archive (config.json, metadata.json, model.weights.h5), without Keras.

The upgrade path for files Keras 3 refuses (Keras 1, Theano-era, tf.keras 2.13-2.15 zips): the graph
read from them (canonical classes, arguments and weights) is written as one Keras 3 Functional model.
- Layers keep their names; a nested model is flattened into the outer one, its layers named
  `outer_inner` (Keras 3 forbids '/'); a nested model called twice becomes two copies of its layers.
- The layer list is in the order Keras 3 itself computes for a Functional model (`map_graph` in
  keras/src/ops/function.py), because that order numbers the `layers/<class>_<n>` weight groups.
- A Keras 2 hard_sigmoid (clip(0.2 x + 0.5)) becomes Keras 3's (clip(x / 6 + 0.5)) of a pre-activation
  scaled by 1.2 (keras_weights); where no weights can carry that scale the layer is refused.
"""

from __future__ import annotations

import datetime
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from converter.errors import UnsupportedLayerError
from converter.export.files import cannot_write, fresh_file, staged
from converter.export.keras_args import op_module
from converter.export.keras_config import Notes, keras3_class, layer_entry
from converter.export.keras_masks import explicit_masks
from converter.export.keras_order import keras_order
from converter.export.keras_weights import write_layer_vars
from converter.ir import Graph, Node, Tensor
from converter.ir.names import NameAuthority
from converter.keras.weights import saved_names
from converter.layers.registry import handler_for

# The Keras 3 release whose reader this writer is checked against (tests/test_tf_upgrade.py).
KERAS_FORMAT_VERSION = "3.15.1"
TensorRef = list[Any]  # [layer name, call index, output index]


@dataclass
class KerasArchive:
    path: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class _Layer:
    name: str
    class_name: str  # the Keras 3 class (names the weight group)
    calls: list[Node] = field(default_factory=list)
    tensor: Tensor | None = None  # the graph input an InputLayer stands for


def source_major(keras_version: str | None) -> int:
    """Major Keras version of the source; files that record none predate Keras 3."""
    head = (keras_version or "").split(".")[0]
    return int(head) if head.isdigit() else 2


def write_keras(graph: Graph, output: str | Path, keras_version: str | None = None) -> KerasArchive:
    """Write `graph` (from `converter.load(..., optimize=False)`) as a Keras 3 archive, atomically.

    The graph is consumed: Keras 1/2 implicit masks are added to it as explicit inputs (keras_masks).
    """
    output = Path(output)
    notes = Notes()
    major = source_major(keras_version)
    if major < 3:
        explicit_masks(graph)
    layers, producer = _collect(graph)
    layer_of = {id(node): layer.name for layer in layers.values() for node in layer.calls}
    layer_of.update({id(layer.tensor): layer.name for layer in layers.values() if layer.tensor is not None})
    order = keras_order(graph, layer_of)
    ordered = [layers[name] for name in order]
    config = _model_config(graph, ordered, producer, major, notes)
    _atomic_zip(output, config, ordered, major)
    return KerasArchive(output, notes.lines)


def _sanitize(name: str) -> str:
    return name.replace("/", "_")


def _collect(graph: Graph) -> tuple[dict[str, _Layer], dict[int, TensorRef]]:
    """Layers by Keras 3 name (graph inputs become InputLayers) and each tensor's keras_history."""
    layers: dict[str, _Layer] = {}
    by_source: dict[str, str] = {}
    producer: dict[int, TensorRef] = {}
    names = NameAuthority()

    def unique(name: str) -> str:
        return names.unique(_sanitize(name))

    for tensor in graph.inputs:
        name = unique(tensor.name)
        layers[name] = _Layer(name, "InputLayer", tensor=tensor)
        producer[id(tensor)] = [name, 0, 0]
    for node in graph.nodes:
        if node.layer_name not in by_source:
            by_source[node.layer_name] = unique(node.layer_name)
            layers[by_source[node.layer_name]] = _Layer(by_source[node.layer_name], keras3_class(node)[0])
        layer = layers[by_source[node.layer_name]]
        for index, tensor in enumerate(node.outputs):
            producer[id(tensor)] = [layer.name, len(layer.calls), index]
        layer.calls.append(node)
    return layers, producer


def _model_config(graph: Graph, ordered: list[_Layer], producer: dict[int, TensorRef], major: int,
                  notes: Notes) -> dict[str, Any]:
    entries, refused = [], []
    for layer in ordered:
        try:
            entries.append(_layer_config(layer, producer, major, notes))
        except UnsupportedLayerError as err:
            refused.append(err)
    if refused:
        raise UnsupportedLayerError(
            f"{len(refused)} layer(s) cannot be written as Keras 3: " + "; ".join(e.message for e in refused),
            layer=refused[0].layer, hint=refused[0].hint)
    inputs = [producer[id(t)] for t in graph.inputs]
    outputs = [producer[id(t)] for t in graph.outputs]
    return {
        "module": "keras.src.models.functional", "class_name": "Functional",
        "config": {"name": _sanitize(graph.name), "trainable": True, "layers": entries,
                   "input_layers": inputs[0] if len(inputs) == 1 else inputs,
                   "output_layers": outputs[0] if len(outputs) == 1 else outputs},
        "registered_name": "Functional", "build_config": {"input_shape": None},
    }


def _layer_config(layer: _Layer, producer: dict[int, TensorRef], major: int, notes: Notes) -> dict[str, Any]:
    if layer.tensor is not None:
        return _input_layer(layer.name, layer.tensor)
    entry = layer_entry(layer.calls[0], layer.name, major, notes)
    entry["name"] = layer.name
    entry["inbound_nodes"] = [_inbound(node, producer) for node in layer.calls]
    return entry


def _input_layer(name: str, tensor: Tensor) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else None for d in (tensor.shape or ())]
    config = {"batch_shape": shape, "dtype": tensor.dtype, "sparse": False, "ragged": False, "name": name,
              "optional": False}
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None,
            "name": name, "inbound_nodes": []}


def _keras_tensor(tensor: Tensor, ref: TensorRef) -> dict[str, Any]:
    shape = None if tensor.shape is None else [d if isinstance(d, int) else None for d in tensor.shape]
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": tensor.dtype, "keras_history": list(ref)}}


def _inbound(node: Node, producer: dict[int, TensorRef]) -> dict[str, Any]:
    """One call as Keras 3 writes it: positional tensors in `args`, tensor keyword arguments in `kwargs`."""
    tensors = [_keras_tensor(t, producer[id(t)]) for t in node.inputs]
    tensor_kwargs: dict[str, list[int]] = dict(node.call.tensor_kwargs)
    in_kwargs = {i for positions in tensor_kwargs.values() for i in positions}
    positional = [tensors[i] for i in range(len(tensors)) if i not in in_kwargs]
    call_kwargs = dict(node.call.kwargs)
    constants = list(call_kwargs.pop("positional_constants", None) or [])
    # Keras 2 wrote every keyword, unset ones as None (`constants=None`, which Keras 3 RNNs lack).
    kwargs: dict[str, Any] = {k: v for k, v in call_kwargs.items() if v is not None}
    handler = handler_for(node)
    if handler is not None and handler.keras_list_input and len(positional) > 1:
        args: list[Any] = [positional]
    elif handler is not None and handler.keras_rnn_call and len(positional) > 1:
        args, kwargs["initial_state"] = positional[:1], positional[1:]
    else:
        args = positional
    for key, positions in tensor_kwargs.items():
        values = [tensors[i] for i in positions]
        kwargs[key] = values if len(values) > 1 or key in ("initial_state", "constants") else values[0]
    return {"args": args + constants, "kwargs": kwargs}


def _atomic_zip(output: Path, config: dict[str, Any], ordered: list[_Layer], major: int) -> None:
    """metadata.json, config.json and model.weights.h5, via temporary files renamed into place (the
    folder created if needed, the archive with the user's umask)."""
    try:
        with staged(output) as tmp:
            weights_tmp = fresh_file(output.parent, f".{output.name}.", ".h5.tmp")
            try:
                with h5py.File(weights_tmp, "w") as handle:
                    _write_weights(handle, ordered, major)
                metadata = {"keras_version": KERAS_FORMAT_VERSION,
                            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
                with zipfile.ZipFile(tmp, "w") as archive:
                    archive.writestr("metadata.json", json.dumps(metadata))
                    archive.writestr("config.json", json.dumps(config))
                    archive.write(weights_tmp, "model.weights.h5")
            finally:
                weights_tmp.unlink()
    except OSError as err:
        raise cannot_write(output, err) from None


def _write_weights(handle: h5py.File, ordered: list[_Layer], major: int) -> None:
    """`layers/<saved name>` for every layer (operations such as NotEqual are not layers), then `vars`."""
    real = [layer for layer in ordered if op_module(layer.class_name) is None]
    names = saved_names([(layer.name, layer.class_name) for layer in real])
    root = handle.create_group("layers")
    for layer in real:
        write_layer_vars(root.create_group(names[layer.name]), layer.calls[0] if layer.calls else None, major)
    handle.create_group("vars")
