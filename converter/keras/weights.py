"""HDF5 weight layouts, read the way Keras reads them.

Two layouts exist:
- legacy (Keras 1/2, tf.keras, Keras 3 `model.save("x.h5")`, `save_weights("x.h5")`): one group per
  top-level layer, whose `weight_names` attribute (possibly chunked, bytes or str) lists its datasets
  in `layer.weights` order;
- Keras 3 (`model.weights.h5` in a `.keras` zip, `save_weights("x.weights.h5")`): `layers/<name>/vars/<i>`,
  with sub-objects (an RNN's `cell`, a wrapper's `layer`, attention projections) as child groups.
Both are exposed as one flat, ordered list of arrays per layer path.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import h5py
import numpy as np

from converter.keras.mapped import MappedImage, read_array

# Keras 3 stores sub-objects as child groups; h5py lists them alphabetically, but a layer's
# `weights` list follows build order. These names fix the order where alphabetical is wrong.
_CHILD_ORDER = (
    "cell",
    "forward_layer",
    "backward_layer",
    "layer",
    "query_dense",
    "key_dense",
    "value_dense",
    "output_dense",
    # GroupQueryAttention keeps its projections under the private attribute names, built in this order.
    "_query_dense",
    "_key_dense",
    "_gate_dense",
    "_value_dense",
    "_output_dense",
)


def decode(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_chunked_attr(group: h5py.Group, name: str) -> list[str]:
    """Keras splits long name lists over `name0`, `name1`, ... when they exceed the HDF5 attribute limit."""
    if name in group.attrs:
        values = group.attrs[name]
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [decode(v) for v in np.atleast_1d(values)] if len(values) else []


# One step of a path to a layer: its layer name (legacy layout) and its Keras 3 saved name.
LayerKey = tuple[str, str]


# Keras 3 snake-cases the Python class name; these classes are exported (and configured) under another.
_PYTHON_CLASS = {"GroupQueryAttention": "GroupedQueryAttention"}


def saved_object_name(class_name: str) -> str:
    """Keras 3 addresses a container's layers by snake-cased class name, not by `layer.name`."""
    name = re.sub(r"\W+", "", _PYTHON_CLASS.get(class_name, class_name))
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def saved_names(class_names: list[tuple[str, str]]) -> dict[str, str]:
    """(layer name, class name) in container order -> Keras 3 saved names (`dense`, `dense_1`, ...)."""
    used: dict[str, int] = {}
    names: dict[str, str] = {}
    for layer_name, class_name in class_names:
        base = saved_object_name(class_name)
        if base in used:
            used[base] += 1
            names[layer_name] = f"{base}_{used[base]}"
        else:
            used[base] = 0
            names[layer_name] = base
    return names


class WeightSource(Protocol):
    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        """Arrays of the layer at `path` (outermost model layer first) in Keras order, or None."""

    def layer_names(self) -> list[str]:
        """Top-level layer names that carry a weights entry, in file order."""


class LegacyH5Weights:
    """`model_weights/<layer>/<weight_name>` (or the root group for save_weights files)."""

    def __init__(self, group: h5py.Group, image: MappedImage | None = None) -> None:
        self.group = group
        self.image = image

    def layer_names(self) -> list[str]:
        return read_chunked_attr(self.group, "layer_names")

    def has_layer(self, name: str) -> bool:
        """Whether the file holds a group for this top-level layer; reads no weight data."""
        return name in self.group

    def weight_count(self, name: str) -> int:
        """How many arrays the file lists for this top-level layer; reads no weight data."""
        return len(read_chunked_attr(self.group[name], "weight_names")) if name in self.group else 0

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        top = path[0][0]
        if top not in self.group:
            return None
        layer_group = self.group[top]
        names = read_chunked_attr(layer_group, "weight_names")
        if len(path) > 1:
            enclosing = [key[0] for key in path[:-1]]
            names = [n for n in names if _owning_layer(n, enclosing) == path[-1][0]]
        return [read_array(layer_group[n], self.image) for n in names]


def _owning_layer(weight_name: str, enclosing: list[str]) -> str:
    """The layer that created a weight stored in a nested model's group, by exact path component.

    Keras 2 names it after that layer (`dense_3/kernel:0`); Keras 3 prefixes the names of the
    enclosing models it was built inside (`inner/dense_3/kernel`), but not always all of them.
    """
    parts = weight_name.split("/")
    i = 0
    for model in enclosing:
        if i < len(parts) - 1 and parts[i] == model:
            i += 1
        elif model in parts[i:-1]:  # Keras 3 also prefixes the outer model (`sequential/pipeline/dense/kernel`)
            i = parts.index(model, i) + 1
    return parts[i]


class Keras3H5Weights:
    """`layers/<name>/vars/<i>` with sub-objects as child groups."""

    def __init__(self, root: h5py.Group, image: MappedImage | None = None) -> None:
        self.root = root
        self.image = image

    def layer_names(self) -> list[str]:
        layers = self.root.get("layers")
        return list(layers.keys()) if isinstance(layers, h5py.Group) else []

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        group: Any = self.root
        for _, name in path:
            group = group.get("layers") if isinstance(group, h5py.Group) else None
            if not isinstance(group, h5py.Group) or name not in group:
                return None
            group = group[name]
        return collect_vars(group, self.image)


class TfKerasZipWeights(Keras3H5Weights):
    """tf.keras 2.13-2.15 `.keras` zips: `_layer_checkpoint_dependencies/<layer name>/vars/<i>`.

    Same vars layout as Keras 3, but a container's layers are keyed by `layer.name`, not by the
    snake-cased class name.
    """

    CONTAINER = "_layer_checkpoint_dependencies"
    # Set when the config's layer names are not the file's keys (layers renamed after creation).
    by_rank = False

    def layer_names(self) -> list[str]:
        layers = self.root.get(self.CONTAINER)
        return list(layers.keys()) if isinstance(layers, h5py.Group) else []

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        group: Any = self.root
        for name, saved in path:
            group = group.get(self.CONTAINER) if isinstance(group, h5py.Group) else None
            if not isinstance(group, h5py.Group):
                return None
            key = name if name in group and not self.by_rank else _ranked_key(list(group), saved)
            if key is None:
                return None
            group = group[key]
        return collect_vars(group, self.image)


def _ranked_key(keys: list[str], saved: str) -> str | None:
    """Models whose layers were renamed after creation are keyed by their creation names
    (`conv2d`, `conv2d_2`, ...): the n-th layer of a class is the n-th such key by number."""
    match = re.fullmatch(r"(.+?)(?:_(\d+))?", saved)
    if match is None:
        return None
    base, rank = match.group(1), int(match.group(2) or 0)
    numbered = sorted((int(m.group(1) or 0), k) for k in keys
                      if (m := re.fullmatch(re.escape(base) + r"(?:_(\d+))?", k)))
    return numbered[rank][1] if rank < len(numbered) else None


def collect_vars(group: h5py.Group, image: MappedImage | None = None) -> list[np.ndarray]:
    """Own `vars/0..n` first, then child objects in build order."""
    arrays: list[np.ndarray] = []
    own = group.get("vars")
    if isinstance(own, h5py.Group):
        arrays.extend(read_array(own[k], image) for k in sorted(own.keys(), key=int))
    children = [k for k in group if k != "vars" and isinstance(group[k], h5py.Group)]
    ranked = sorted(children, key=lambda k: (_CHILD_ORDER.index(k) if k in _CHILD_ORDER else len(_CHILD_ORDER), k))
    for child in ranked:
        arrays.extend(collect_vars(group[child], image))
    return arrays


def open_weight_source(root: h5py.Group, image: MappedImage | None = None) -> WeightSource | None:
    """Pick the layout by content: `model_weights/` or `layer_names` is legacy, `layers/` is Keras 3.
    `image`: the file's bytes mapped, so that weights are read as views of it (see mapped.py)."""
    if "model_weights" in root:
        return LegacyH5Weights(root["model_weights"], image)
    if read_chunked_attr(root, "layer_names"):
        return LegacyH5Weights(root, image)
    if TfKerasZipWeights.CONTAINER in root:
        return TfKerasZipWeights(root, image)
    if "layers" in root or "vars" in root:
        return Keras3H5Weights(root, image)
    return None
