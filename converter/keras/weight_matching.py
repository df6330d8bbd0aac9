"""Weights whose layer names differ from the config's: match weighted layers by order, as Keras does.

Keras' own `load_weights` on a legacy HDF5 file pairs the model's weighted layers with the file's
weighted layers by position, not by name; files written by a model built twice (`dense_2` vs
`dense_5`) or an architecture JSON saved from a different session rely on that. kconvert matches by
name when every name is found and falls back to that positional rule otherwise, with a warning, and
only when both sides hold the same number of weighted layers with the same array counts.
"""

from __future__ import annotations

import warnings

import numpy as np

from converter.errors import KconvertWarning
from converter.keras.weights import LayerKey, LegacyH5Weights, TfKerasZipWeights, WeightSource


class RenamedWeights:
    """A weight source seen through a config-name -> file-name map for top-level layers."""

    def __init__(self, source: WeightSource, mapping: dict[str, str]) -> None:
        self.source = source
        self.mapping = mapping

    def layer_names(self) -> list[str]:
        return self.source.layer_names()

    def layer_weights(self, path: tuple[LayerKey, ...]) -> list[np.ndarray] | None:
        name, saved = path[0]
        if name in self.mapping:
            target = self.mapping[name]
            path = ((target, target), *path[1:])
        return self.source.layer_weights(path)


def match_by_order(source: WeightSource, weighted_keys: list[LayerKey]) -> WeightSource:
    """`weighted_keys`: the config's top-level layers that hold weights, in model order.

    Returns `source` itself when every layer is found (or the layout is not ordered: Keras 3 files
    list layers alphabetically), else a RenamedWeights pairing the i-th weighted config layer with
    the i-th weighted file layer.
    """
    file_names = source.layer_names()
    if isinstance(source, TfKerasZipWeights) and any(name not in file_names for name, _ in weighted_keys):
        source.by_rank = True
        warnings.warn("layer names in the .keras weights differ from the model config; matched each layer "
                      "with the file's layer of the same class in creation order", KconvertWarning, stacklevel=3)
        return source
    if not isinstance(source, LegacyH5Weights) or not file_names:
        return source
    if all(source.has_layer(name) for name, _ in weighted_keys):
        return source
    weighted = [name for name, _ in weighted_keys]
    file_weighted = [name for name in file_names if source.weight_count(name)]
    if len(file_weighted) != len(weighted):
        return source  # no positional pairing exists; each missing layer is reported by name
    mapping = dict(zip(weighted, file_weighted))
    renamed = {c: f for c, f in mapping.items() if c != f}
    warnings.warn(
        f"layer names in the weights file differ from the model config; matched the {len(weighted)} weighted "
        f"layers by order instead, as Keras does ({', '.join(f'{c} <- {f}' for c, f in renamed.items())})",
        KconvertWarning, stacklevel=3)
    return RenamedWeights(source, mapping)
