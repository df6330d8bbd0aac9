"""Family `hdf5`: the weights file (the full-model .h5, the weights .h5 beside a model.json, or the
archive's model.weights.h5) edited with h5py: datasets deleted, retyped or reshaped, attributes of
the wrong type, groups added or renamed, and links inside the file."""

from __future__ import annotations

import random
from collections.abc import Callable

import h5py
import numpy as np

from . import hdf5_attrs
from .containers import edit_hdf5
from .hdf5_objects import Hdf5Op, datasets, float_datasets, groups, pick, replace
from .mutant import EXPECT_OK, Mutant, Mutator, Skip, apply_one

RETYPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "int32": lambda a: a.astype(np.int32), "int64": lambda a: a.astype(np.int64),
    "uint8": lambda a: a.astype(np.uint8), "bool": lambda a: a != 0, "float16": lambda a: a.astype(np.float16),
    "float64": lambda a: a.astype(np.float64), "complex64": lambda a: a.astype(np.complex64),
    "string": lambda a: np.array([str(v) for v in a.ravel()], dtype=h5py.string_dtype()).reshape(a.shape),
    "bytes": lambda a: a.astype("S8"),
    "compound": lambda a: np.zeros(a.shape, dtype=[("a", "<f4"), ("b", "<i4")]),
    "enum": lambda a: np.zeros(a.shape, dtype=h5py.enum_dtype({"RED": 0, "GREEN": 1}, basetype="i1")),
}
RESHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "scalar": lambda a: np.asarray(a.ravel()[0] if a.size else 1.0, dtype=a.dtype),
    "extra_dim": lambda a: a[..., None], "leading_dim": lambda a: a[None],
    "empty": lambda a: np.zeros((0,), a.dtype), "flat": lambda a: a.ravel(), "transposed": lambda a: a.T,
    "grown": lambda a: np.concatenate([a, a[:1]]) if a.ndim else a[None],
}
HUGE_SHAPES = ((2**20, 2**20), (2**31,), (2**16, 2**16, 2**8), (2**62,))
FILTERS = ({"compression": "gzip"}, {"compression": "lzf"}, {"shuffle": True, "compression": "gzip"},
           {"fletcher32": True}, {"chunks": True}, {"compression": "gzip", "compression_opts": 9})


def delete_dataset(handle: h5py.File, rng: random.Random) -> str:
    name = pick(rng, datasets(handle), "datasets")
    del handle[name]
    return f"delete dataset {name}"


def delete_group(handle: h5py.File, rng: random.Random) -> str:
    name = pick(rng, groups(handle), "groups")
    del handle[name]
    return f"delete group {name}"


def retype_dataset(handle: h5py.File, rng: random.Random) -> str:
    name, kind = pick(rng, datasets(handle), "datasets"), rng.choice(sorted(RETYPES))
    replace(handle, name, RETYPES[kind](np.asarray(handle[name][()])))
    return f"dataset {name} as {kind}"


def reshape_dataset(handle: h5py.File, rng: random.Random) -> str:
    name, kind = pick(rng, datasets(handle), "datasets"), rng.choice(sorted(RESHAPES))
    replace(handle, name, RESHAPES[kind](np.asarray(handle[name][()])))
    return f"dataset {name} reshaped: {kind}"


def huge_dataset(handle: h5py.File, rng: random.Random) -> str:
    """A dataset that declares terabytes and stores nothing (chunks never written read as the fill value)."""
    name, shape = pick(rng, datasets(handle), "datasets"), rng.choice(HUGE_SHAPES)
    attrs = dict(handle[name].attrs)
    del handle[name]
    created = handle.create_dataset(name, shape=shape, dtype="f4", chunks=(1,) * len(shape))
    for key, value in attrs.items():
        created.attrs[key] = value
    return f"dataset {name} declared {shape}"


def nonfinite_weights(handle: h5py.File, rng: random.Random) -> str:
    name = pick(rng, float_datasets(handle), "float datasets")
    value = rng.choice((np.nan, np.inf, -np.inf, 3.4e38))
    handle[name][...] = value
    return f"dataset {name} filled with {value}"


def extra_group(handle: h5py.File, rng: random.Random) -> str:
    parent = rng.choice(["/", *groups(handle)])
    name = rng.choice(("extra", "0", "vars", "layers", "model_weights", "kernel:0", "top_level_model_weights"))
    if name in handle[parent]:
        raise Skip("name taken")
    handle[parent].create_group(name).create_dataset("0", data=np.ones((2, 2), "f4"))
    return f"extra group {parent}/{name}"


def rename(handle: h5py.File, rng: random.Random) -> str:
    """Swap the names of two siblings (kernel <-> bias) or rename one."""
    name = pick(rng, datasets(handle) + groups(handle), "objects")
    parent = handle[name].parent
    siblings = [key for key in parent if parent.name.rstrip("/") + "/" + key != "/" + name]
    base = name.rsplit("/", 1)[-1]
    if siblings and rng.random() < 0.5:
        other = rng.choice(siblings)
        parent.move(base, "__swap__")
        parent.move(other, base)
        parent.move("__swap__", other)
        return f"swap {name} with sibling {other}"
    parent.move(base, base + "_renamed")
    return f"rename {name} to {base}_renamed"


def soft_link(handle: h5py.File, rng: random.Random) -> str:
    """A dataset replaced by a soft link: to another dataset, to nowhere, or to a group."""
    found = datasets(handle)
    name = pick(rng, found, "datasets")
    target = rng.choice(["/" + rng.choice(found), "/no/such/object", "/", "/" + name])
    del handle[name]
    handle[name] = h5py.SoftLink(target)
    return f"dataset {name} -> soft link {target}"


def hard_link(handle: h5py.File, rng: random.Random) -> str:
    """A dataset replaced by a second name for another dataset, or a group holding its own ancestor."""
    if rng.random() < 0.5:
        found = datasets(handle)
        name = pick(rng, found, "datasets")
        other = pick(rng, [d for d in found if d != name], "other datasets")
        target = handle[other]
        del handle[name]
        handle[name] = target
        return f"dataset {name} hard-linked to {other}"
    group = pick(rng, groups(handle), "groups")
    ancestor = rng.choice(["/", handle[group].parent.name, "/" + group])
    handle[group]["loop"] = handle[ancestor]
    return f"group {group}/loop hard-linked to {ancestor} (a cycle)"


BREAKING_OPS: dict[str, Hdf5Op] = {
    "delete_dataset": delete_dataset, "delete_group": delete_group, "retype_dataset": retype_dataset,
    "reshape_dataset": reshape_dataset, "huge_dataset": huge_dataset, "nonfinite_weights": nonfinite_weights,
    "extra_group": extra_group, "rename": rename, "soft_link": soft_link, "hard_link": hard_link,
    **hdf5_attrs.BREAKING_OPS,
}


def recompress(handle: h5py.File, rng: random.Random) -> str:
    """The same values stored chunked, compressed or checksummed: h5py reads them, so must kconvert."""
    name, options = pick(rng, float_datasets(handle), "float datasets"), rng.choice(FILTERS)
    replace(handle, name, np.asarray(handle[name][()]), **options)
    return f"dataset {name} stored with {options}"


VALID_OPS: dict[str, Hdf5Op] = {"recompress": recompress, **hdf5_attrs.VALID_OPS}


def on_weights(op: Hdf5Op) -> Mutator:
    """An HDF5 op as a mutator of the case's weights file (wherever the case keeps it)."""
    return lambda mutant, rng: edit_hdf5(mutant, lambda handle: op(handle, rng))


def mutate(mutant: Mutant, rng: random.Random) -> None:
    if rng.random() < 0.08 and apply_one(mutant, rng, {n: on_weights(op) for n, op in VALID_OPS.items()}):
        mutant.expect = EXPECT_OK
    else:
        apply_one(mutant, rng, {name: on_weights(op) for name, op in BREAKING_OPS.items()})
