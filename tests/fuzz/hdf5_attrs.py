"""HDF5 attribute mutations: the name lists that tie weights to layers (layer_names, weight_names,
Keras 3's `name`), the version and backend strings, and the config stored as an attribute."""

from __future__ import annotations

import random
from typing import Any

import h5py
import numpy as np

from .hdf5_objects import Hdf5Op, holders, pick, strings
from .mutant import Skip

NAME_LISTS = ("layer_names", "weight_names")
SCALARS = ("keras_version", "backend", "model_config", "training_config", "name")


def _decoded(value: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def _name_list_variants(names: list[str]) -> list[tuple[str, Any]]:
    return [
        ("an int", 7), ("an int array", np.arange(3)), ("empty", strings([])), ("reversed", strings(names[::-1])),
        ("plus a ghost", strings([*names, "ghost"])), ("duplicated", strings(names + names)),
        ("one string", ", ".join(names)), ("float array", np.ones(2)),
        ("2-D", strings([names, names] if names else [["a"], ["b"]])),
        ("undecodable bytes", np.array([b"\xff\xfe"] * max(len(names), 1))),
    ]


def name_list(handle: h5py.File, rng: random.Random) -> str:
    attribute = rng.choice(NAME_LISTS)
    where = pick(rng, holders(handle, attribute), attribute)
    owner = handle[where]
    if rng.random() < 0.2:
        del owner.attrs[attribute]
        return f"{where}@{attribute} deleted"
    what, value = rng.choice(_name_list_variants(_decoded(owner.attrs[attribute])))
    owner.attrs[attribute] = value
    return f"{where}@{attribute} {what}"


def scalar_attribute(handle: h5py.File, rng: random.Random) -> str:
    attribute = rng.choice(SCALARS)
    where = pick(rng, holders(handle, attribute), attribute)
    value = rng.choice((3, np.array([2, 1]), strings(["3.0"]), b"\xff\xfe", "", "99.0", "theano", "{}", "[1]",
                        np.float64("nan"), np.zeros((2, 2))))
    handle[where].attrs[attribute] = value
    return f"{where}@{attribute} = {value!r}"


def chunked_names(handle: h5py.File, rng: random.Random) -> str:
    """Keras splits long name lists into `layer_names0`, `layer_names1`, ...: add such parts, half wrong."""
    attribute = rng.choice(NAME_LISTS)
    where = pick(rng, holders(handle, attribute), attribute)
    owner = handle[where]
    owner.attrs[f"{attribute}0"] = strings(["ghost"])
    if rng.random() < 0.5:
        owner.attrs[f"{attribute}2"] = 5
    return f"{where}@{attribute}0.. chunks added beside {attribute}"


def stray_attribute(handle: h5py.File, rng: random.Random) -> str:
    names: list[str] = ["/"]
    handle.visit(names.append)
    where = rng.choice(names)
    if "keras_version" in handle[where].attrs:
        raise Skip("would overwrite")
    handle[where].attrs["keras_version"] = rng.choice(("1.2.2", "2.0.0", "3.0.0", "0"))
    return f"{where}@keras_version added"


BREAKING_OPS: dict[str, Hdf5Op] = {
    "name_list": name_list, "scalar_attribute": scalar_attribute, "chunked_names": chunked_names,
    "stray_attribute": stray_attribute,
}


def names_as_bytes(handle: h5py.File, rng: random.Random) -> str:
    """Name lists as fixed-length byte strings, as older Keras and h5py wrote them: must convert."""
    attribute = rng.choice(NAME_LISTS)
    where = pick(rng, holders(handle, attribute), attribute)
    encoded = [name.encode("utf-8") for name in _decoded(handle[where].attrs[attribute])]
    handle[where].attrs[attribute] = np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}")
    return f"{where}@{attribute} as fixed-length bytes"


VALID_OPS: dict[str, Hdf5Op] = {"names_as_bytes": names_as_bytes}
