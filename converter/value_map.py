"""The map from Keras layer outputs to ONNX values, recorded in the ONNX file's metadata.

`kconvert verify --localize` compares each Keras layer's output with the ONNX value that holds it, so it
must know which value that is, in which axis order. Lowering records it under KERAS_VALUES_KEY as JSON:

    {"version": 1,
     "inputs":  {"<onnx input>":  PERM | null},          # PERM: keras = transpose(onnx, PERM)
     "outputs": {"<onnx output>": PERM | null},
     "layers":  [{"layer": NAME, "class": CLASS, "call": 0, "output": 0, "value": "<onnx value>",
                  "perm": PERM | null, "folded": [NAME, ...]}, ...]}   # in the model's topological order

Only top-level layers are listed (those `model.layers` names). A layer whose value the conversion no
longer computes (a Dropout removed at inference, a Conv whose BatchNormalization was folded into it: its
value is the BN's now) is absent; verify reports those as unmapped. `folded` names the layers whose
computation was folded into the ops of this value (that Conv; a ZeroPadding absorbed by the convolution
after it).
"""

from __future__ import annotations

import json
from typing import Any

from converter.ir import Graph, Tensor
from converter.ir.graph import CHANNELS_FIRST
from converter.ir.shape import to_channels_last

KERAS_VALUES_KEY = "kconvert.keras_values"
FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "KERAS_VALUES_KEY", "keras_values", "keras_values_json"]


def keras_perm(tensor: Tensor) -> list[int] | None:
    """The permutation that turns the tensor's physical (ONNX) layout back into Keras' (None: the same)."""
    rank = len(tensor.shape or ())
    return list(to_channels_last(rank)) if tensor.layout == CHANNELS_FIRST and rank >= 3 else None


def keras_values(graph: Graph, value_of: dict[int, str]) -> dict[str, Any]:
    """The map for a lowered graph; `value_of` gives each tensor's ONNX value name (by tensor id)."""
    layers = []
    seen: set[tuple[str, int, int]] = set()
    for node in graph.nodes:
        for tensor in node.outputs:
            origin, value = tensor.origin, value_of.get(id(tensor))
            if origin is None or value is None or (origin.layer, origin.call, origin.index) in seen:
                continue
            seen.add((origin.layer, origin.call, origin.index))
            layers.append({"layer": origin.layer, "class": origin.class_name, "call": origin.call,
                           "output": origin.index, "value": value, "perm": keras_perm(tensor),
                           "folded": list(origin.folded)})
    return {"version": FORMAT_VERSION,
            "inputs": {t.name: keras_perm(t) for t in graph.inputs},
            "outputs": {name: keras_perm(t) for t, name in zip(graph.outputs, graph.output_names)},
            "layers": layers}


def keras_values_json(graph: Graph, value_of: dict[int, str]) -> str:
    return json.dumps(keras_values(graph, value_of), separators=(",", ":"))
