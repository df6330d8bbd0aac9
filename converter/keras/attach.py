"""Weights onto nodes: by path in the file, upgraded from legacy layouts, checked by count; files whose
layer names differ from the config fall back to matching weighted layers by order (with a warning).

Keras 1 files do not record their backend, and Theano-backend files hold convolution kernels flipped:
where the file looks like Keras 1, holds a kernel the flip changes, and the user stated no backend,
the conversion goes on as TensorFlow with a KconvertWarning that says so and how to choose."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from converter.errors import FormatError, KconvertWarning, UnsupportedLayerError, WeightsError
from converter.ir import Node
from converter.keras.artifacts import KerasArtifact
from converter.keras.layer_configs import (
    MODEL_CLASSES,
    inner_layers,
    layer_parts,
    make_node,
    parse_node,
    saved_names_of,
)
from converter.keras.legacy_weights import CONV_KINDS, WeightOrigin, upgrade_weights
from converter.keras.weight_matching import match_by_order
from converter.keras.weights import LayerKey, LegacyH5Weights, TfKerasZipWeights, WeightSource
from converter.layers.registry import handler_for


@dataclass
class WeightAttacher:
    artifact: KerasArtifact
    # False for an architecture-only view (inspect of a JSON without weights): weights are not attached.
    require_weights: bool = True
    top_layers: list[Any] = field(default_factory=list)
    order_matched: bool = False
    backend_warned: bool = False

    def attach(self, node: Node, names: list[str], path: tuple[LayerKey, ...]) -> None:
        if not names:
            return
        source = self.artifact.weights
        if source is None and not self.require_weights:
            return
        source = self._matched(source, path)
        if source is None:
            raise WeightsError(f"no weights for layer '{node.layer_name}': the file holds only the architecture",
                               layer=node.layer_name, hint="pass the weights file with --weights")
        arrays = source.layer_weights(path)
        if arrays is not None:
            origin = WeightOrigin(self.artifact.keras_version, self.artifact.backend,
                                  self.artifact.keras_major == 1)
            arrays = upgrade_weights(node, arrays, origin)
            self._warn_unrecorded_backend(node, arrays, origin)
        if arrays is None:
            raise WeightsError(f"the weights file has no entry for layer '{node.layer_name}'",
                               layer=node.layer_name, hint="is this the weights file saved from this model?")
        if len(arrays) != len(names):
            raise WeightsError(
                f"layer '{node.layer_name}' ({node.kind}) expects {len(names)} weight arrays ({', '.join(names)}) "
                f"but the file holds {len(arrays)}", layer=node.layer_name,
                hint="is this the weights file saved from this model?")
        node.weights = {n: np.asarray(a) for n, a in zip(names, arrays)}


    def _matched(self, source: WeightSource | None, path: tuple[LayerKey, ...]) -> WeightSource | None:
        if source is not None and len(path) == 1 and not self.order_matched:
            self.artifact.weights = source = match_by_order(source, self._order_keys(source))
            self.order_matched = True
        return source

    def stored_arrays(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        """The arrays the file holds for a layer kconvert has no handler for (inspect counts them), as
        stored; None when the file holds no weights, or none for it."""
        source = self._matched(self.artifact.weights, path)
        return None if source is None else source.layer_weights(path)

    def attach_inner(self, node: Node, path: tuple[LayerKey, ...]) -> None:
        """A Pipeline's layers keep their own weights (Keras 3: `<pipeline>/layers/<saved name>/vars`; legacy
        h5: names with the layer's name as a path component), so each is read by its own path, then handed
        to the container as `<index>/<name>` (what its handler's weight_names lists)."""
        saved = saved_names_of(inner_layers(node.kind, node.attrs))
        weights: dict[str, np.ndarray] = {}
        for i, child in enumerate(node.children):
            handler = handler_for(child)
            if handler is None:
                continue  # the container's check() has refused it
            child.layer_name = f"{node.layer_name}/{child.name}"
            self.attach(child, handler.weight_names(child), path + ((child.name, saved.get(child.name,
                                                                                                 child.name)),))
            weights.update({f"{i}/{name}": array for name, array in child.weights.items()})
        node.weights = weights


    def _warn_unrecorded_backend(self, node: Node, arrays: list[np.ndarray], origin: WeightOrigin) -> None:
        """Once per file: a Keras 1 file that does not say whether Theano (flipped kernels) wrote it."""
        if self.backend_warned or origin.backend is not None or not origin.keras1 or node.kind not in CONV_KINDS:
            return
        if not arrays or all(size <= 1 for size in np.shape(arrays[0])[:-2]):
            return  # 1x1 kernels read the same either way
        self.backend_warned = True
        warnings.warn(
            f"{self.artifact.path.name} does not record the Keras backend that wrote it, and it looks like a "
            f"Keras 1 file ({_keras1_evidence(self.artifact)}): Theano-backend files hold convolution kernels "
            f"flipped (layer '{node.layer_name}'). Converted as TensorFlow; pass --backend theano if it was "
            "trained with Theano (--backend tensorflow silences this warning)", KconvertWarning, stacklevel=2)

    def _order_keys(self, source: WeightSource) -> list[LayerKey]:
        """What match_by_order needs: the weighted top-level layers, in config order. Finding them parses
        every layer a second time (a third of a wide model's reading), so it is skipped where the answer
        cannot change the match: a Keras 3 layout (keyed by saved name, never paired by order), or a file
        with an entry under every top-level layer's name, where every weighted layer is found by name and
        match_by_order keeps the source as it is (as it does for no weighted layers)."""
        present: Callable[[str], bool]
        if isinstance(source, LegacyH5Weights):
            present = partial(_has_group, source)
        elif isinstance(source, TfKerasZipWeights):
            present = set(source.layer_names()).__contains__
        else:
            return []
        every_name_found = all(present(layer_parts(layer)[1]) for layer in self.top_layers)
        return [] if every_name_found else self._weighted_top_layers()

    def _weighted_top_layers(self) -> list[LayerKey]:
        """The model's top-level layers that hold weights, in config order (what Keras matches by order)."""
        names: list[LayerKey] = []
        saved = saved_names_of(self.top_layers)
        for layer in self.top_layers:
            cls, name, config = layer_parts(layer)
            node = make_node(cls, name, config, self.artifact.keras_major)
            handler = handler_for(node)
            if cls in MODEL_CLASSES:
                names.append((name, saved.get(name, name)))
            if handler is None:
                continue
            try:
                parse_node(node, self.artifact.keras_major)
                if handler.weight_names(node):
                    names.append((name, saved.get(name, name)))
            except (KeyError, TypeError, ValueError, UnsupportedLayerError):
                continue  # a layer that cannot be converted is reported on its own; it cannot be matched
        return names


def _has_group(source: LegacyH5Weights, name: str) -> bool:
    """A group for the layer; a damaged entry (a dataset in its place) counts as none here, so the full
    match decides, reading the weighted layers only, as it always did."""
    try:
        return source.has_layer(name)
    except FormatError:
        return False


def _keras1_evidence(artifact: KerasArtifact) -> str:
    """Why the file reads as Keras 1: its recorded version, a 'th' ordering, or Keras 1 argument names."""
    if artifact.keras_version:
        return f"keras_version {artifact.keras_version}"
    stack: list[Any] = [artifact.model_config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("dim_ordering") == "th":
                return "dim_ordering 'th'"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return "Keras 1 argument names such as nb_filter or border_mode"
