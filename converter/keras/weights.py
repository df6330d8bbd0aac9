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

from converter.errors import FormatError
from converter.keras.h5_attrs import keys, member, name_list, subgroup
from converter.keras.h5_safety import DatasetReader

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
    """Lenient text of an attribute value (for writers and tests; reading uses h5_attrs' strict forms)."""
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_chunked_attr(group: h5py.Group, name: str, file_name: str, layer: str | None = None) -> list[str]:
    """Keras splits long name lists over `name0`, `name1`, ... when they exceed the HDF5 attribute limit."""
    return name_list(group, name, f"{file_name}: group '{group.name}'", layer)


# Keras 3 nests a container's layers at most a few levels deep; a deeper file is damaged or hostile.
MAX_NESTING = 64


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

    def __init__(self, group: h5py.Group, reader: DatasetReader) -> None:
        self.group = group
        self.reader = reader

    def layer_names(self) -> list[str]:
        return read_chunked_attr(self.group, "layer_names", self.reader.file_name)

    def has_layer(self, name: str) -> bool:
        """Whether the file holds a group for this top-level layer; reads no weight data."""
        return self._layer_group(name) is not None

    def weight_count(self, name: str) -> int:
        """How many arrays the file lists for this top-level layer; reads no weight data."""
        group = self._layer_group(name)
        return 0 if group is None else len(read_chunked_attr(group, "weight_names", self.reader.file_name, name))

    def _layer_group(self, name: str) -> h5py.Group | None:
        return subgroup(self.group, name, self.reader.file_name, name)

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        layer = "/".join(key[0] for key in path)
        layer_group = self._layer_group(path[0][0])
        if layer_group is None:
            return None
        names = read_chunked_attr(layer_group, "weight_names", self.reader.file_name, layer)
        if len(path) > 1:
            enclosing = [key[0] for key in path[:-1]]
            names = [n for n in names if _owning_layer(n, enclosing) == path[-1][0]]
        return [self.reader.read(self._listed(layer_group, n, layer), layer) for n in names]

    def _listed(self, group: h5py.Group, name: str, layer: str) -> Any:
        found = member(group, name, self.reader.file_name, layer)
        if found is None:
            raise FormatError(f"{self.reader.file_name}: '{group.name}' lists weight '{name}' in its weight_names "
                              "but holds no such dataset", layer=layer, hint="is the file complete?")
        return found


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

    CONTAINER = "layers"

    def __init__(self, root: h5py.Group, reader: DatasetReader) -> None:
        self.root = root
        self.reader = reader

    def layer_names(self) -> list[str]:
        layers = subgroup(self.root, self.CONTAINER, self.reader.file_name)
        return [] if layers is None else keys(layers, self.reader.file_name)

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        layer = "/".join(key[0] for key in path)
        group: h5py.Group | None = self.root
        for key in path:
            layers = subgroup(group, self.CONTAINER, self.reader.file_name, layer) if group is not None else None
            name = self._key(layers, key) if layers is not None else None
            group = subgroup(layers, name, self.reader.file_name, layer) if layers is not None and name else None
        return None if group is None else collect_vars(group, self.reader, layer)

    def _key(self, layers: h5py.Group, key: LayerKey) -> str | None:
        """Keras 3 keys a container's layers by saved (snake-cased class) name."""
        return key[1]


class TfKerasZipWeights(Keras3H5Weights):
    """tf.keras 2.13-2.15 `.keras` zips: `_layer_checkpoint_dependencies/<layer name>/vars/<i>`.

    Same vars layout as Keras 3, but a container's layers are keyed by `layer.name`, not by the
    snake-cased class name.
    """

    CONTAINER = "_layer_checkpoint_dependencies"
    # Set when the config's layer names are not the file's keys (layers renamed after creation).
    by_rank = False

    def _key(self, layers: h5py.Group, key: LayerKey) -> str | None:
        name, saved = key
        present = keys(layers, self.reader.file_name, name)
        return name if name in present and not self.by_rank else _ranked_key(present, saved)


def _ranked_key(present: list[str], saved: str) -> str | None:
    """Models whose layers were renamed after creation are keyed by their creation names
    (`conv2d`, `conv2d_2`, ...): the n-th layer of a class is the n-th such key by number."""
    match = re.fullmatch(r"(.+?)(?:_(\d+))?", saved)
    if match is None:
        return None
    base, rank = match.group(1), int(match.group(2) or 0)
    numbered = sorted((int(m.group(1) or 0), k) for k in present
                      if (m := re.fullmatch(re.escape(base) + r"(?:_(\d+))?", k)))
    return numbered[rank][1] if rank < len(numbered) else None


def collect_vars(group: h5py.Group, reader: DatasetReader, layer: str, depth: int = 0) -> list[np.ndarray]:
    """Own `vars/0..n` first, then child objects in build order."""
    if depth > MAX_NESTING:
        raise FormatError(f"{reader.file_name}: '{group.name}' nests sub-objects more than {MAX_NESTING} deep",
                          layer=layer, hint="refusing a damaged or hostile file")
    arrays: list[np.ndarray] = []
    own = subgroup(group, "vars", reader.file_name, layer)
    if own is not None:
        arrays.extend(reader.read(member(own, k, reader.file_name, layer), layer) for k in _var_order(own, layer))
    # `vars` was opened above: opening it again (an HDF5 object open per layer) would find nothing new.
    names = [k for k in keys(group, reader.file_name, layer) if k != "vars"]
    members = {k: member(group, k, reader.file_name, layer) for k in names}
    children = [k for k, v in members.items() if isinstance(v, h5py.Group)]
    ranked = sorted(children, key=lambda k: (_CHILD_ORDER.index(k) if k in _CHILD_ORDER else len(_CHILD_ORDER), k))
    for child in ranked:
        arrays.extend(collect_vars(members[child], reader, layer, depth + 1))
    return arrays


def _var_order(own: h5py.Group, layer: str) -> list[str]:
    """`vars/0`, `vars/1`, ... in numeric order; any other name is a damaged file."""
    names = keys(own, "vars", layer)
    odd = [k for k in names if not k.isdigit()]
    if odd:
        raise FormatError(f"'{own.name}' holds '{odd[0]}', not a numbered variable", layer=layer,
                          hint="is this a Keras weights file?")
    return sorted(names, key=int)


def open_weight_source(root: h5py.Group, reader: DatasetReader) -> WeightSource | None:
    """Pick the layout by content: `model_weights/` or `layer_names` is legacy, `layers/` is Keras 3.
    `reader` reads each dataset checked (h5_safety.py), as views of the mapped file where it can."""
    weights_group = subgroup(root, "model_weights", reader.file_name)
    if weights_group is not None:
        return LegacyH5Weights(weights_group, reader)
    if read_chunked_attr(root, "layer_names", reader.file_name):
        return LegacyH5Weights(root, reader)
    if member(root, TfKerasZipWeights.CONTAINER, reader.file_name) is not None:
        return TfKerasZipWeights(root, reader)
    if member(root, "layers", reader.file_name) is not None or member(root, "vars", reader.file_name) is not None:
        return Keras3H5Weights(root, reader)
    return None
