"""Finding and rebuilding objects in an open HDF5 file: the datasets and groups mutators aim at."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from .mutant import Skip

Hdf5Op = Callable[[h5py.File, random.Random], str]  # edits an open file, returns what it did


def datasets(handle: h5py.File) -> list[str]:
    found: list[str] = []
    handle.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def float_datasets(handle: h5py.File) -> list[str]:
    return [name for name in datasets(handle) if handle[name].dtype.kind == "f" and handle[name].size > 0]


def groups(handle: h5py.File) -> list[str]:
    found: list[str] = []
    handle.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group) else None)
    return found


def pick(rng: random.Random, names: list[str], what: str) -> str:
    if not names:
        raise Skip(f"no {what}")
    return rng.choice(names)


def strings(values: list[str] | list[list[str]]) -> np.ndarray:
    """A string array h5py can store (numpy's '<U' arrays have no HDF5 conversion)."""
    return np.array(values, dtype=h5py.string_dtype())


def holders(handle: h5py.File, attribute: str) -> list[str]:
    """Paths of the objects (root included, as "/") that carry `attribute`."""
    found = ["/"] if attribute in handle.attrs else []
    handle.visititems(lambda name, obj: found.append(name) if attribute in obj.attrs else None)
    return found


def replace(handle: h5py.File, name: str, data: Any, **options: Any) -> None:
    """Put `data` where dataset `name` was (its attributes kept, so only the data is wrong)."""
    attrs = dict(handle[name].attrs)
    del handle[name]
    created = handle.create_dataset(name, data=data, **options)
    for key, value in attrs.items():
        created.attrs[key] = value
