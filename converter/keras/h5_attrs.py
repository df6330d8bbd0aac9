"""HDF5 attributes and group members, read strictly: a damaged or wrong-typed value is a FormatError
that names the attribute (or member) and the layer, never an exception from h5py or numpy.

Keras writes `model_config`, `keras_version` and `backend` as text (str, or bytes from older h5py),
and name lists (`layer_names`, `weight_names`) as arrays of bytes or str, split over `name0`,
`name1`, ... when they exceed the HDF5 attribute size limit; an empty list comes back as an empty
float array.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from converter.errors import FormatError
from converter.keras.h5_safety import H5_ERRORS

# Keras starts a new chunk every 64 KiB of names; 64 MiB of weight names is no Keras file.
MAX_NAME_CHUNKS = 1024
_HINT = "is this a Keras file, and is it complete?"


def read_attr(obj: h5py.HLObject, key: str, what: str, layer: str | None = None) -> Any:
    """The raw value of attribute `key`, or None where there is none. Its stored type is checked first:
    HDF5 reads a damaged type description (a variable-length sequence where Keras wrote a string)
    past the end of its buffers, which crashes the process instead of raising."""
    try:
        stored = h5py.h5a.open(obj.id, key.encode()).get_type()
    except KeyError:  # no such attribute
        return None
    except H5_ERRORS as err:
        raise FormatError(f"{what}: attribute '{key}' cannot be read: {err}", layer=layer, hint=_HINT) from None
    if not _plain_type(stored):
        raise FormatError(f"{what}: attribute '{key}' has HDF5 type class {stored.get_class()}, not text or "
                          "numbers", layer=layer, hint=_HINT)
    try:
        return obj.attrs[key]
    except H5_ERRORS as err:
        raise FormatError(f"{what}: attribute '{key}' cannot be read: {err}", layer=layer, hint=_HINT) from None


def _plain_type(stored: Any) -> bool:
    """Strings (ASCII or UTF-8, fixed or variable length), integers, floats, or fixed arrays of them."""
    kind = stored.get_class()
    if kind == h5py.h5t.ARRAY:
        return _plain_type(stored.get_super())
    if kind == h5py.h5t.STRING:
        return stored.get_cset() in (h5py.h5t.CSET_ASCII, h5py.h5t.CSET_UTF8)
    return kind in (h5py.h5t.INTEGER, h5py.h5t.FLOAT)


def to_text(value: Any, what: str, layer: str | None = None) -> str:
    """One text value: str, or UTF-8 bytes (a one-element array of either is unwrapped)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "SUO":
        value = value.reshape(-1)[0]
    try:
        if isinstance(value, (str, np.str_)):
            str(value).encode("utf-8")  # h5py hands undecodable bytes back as lone surrogates
            return str(value)
        if isinstance(value, (bytes, np.bytes_)):
            return bytes(value).decode("utf-8")
    except UnicodeError:
        raise FormatError(f"{what} is not UTF-8 text", layer=layer, hint=_HINT) from None
    kind = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
    raise FormatError(f"{what} is a {kind}, not text", layer=layer, hint=_HINT)


def attr_text(obj: h5py.HLObject, key: str, what: str) -> str | None:
    """A text attribute (`model_config`, `keras_version`, `backend`), or None where there is none."""
    value = read_attr(obj, key, what)
    return None if value is None else to_text(value, f"{what}: attribute '{key}'")


def name_list(group: h5py.Group, name: str, what: str, layer: str | None = None) -> list[str]:
    """A list of names (`layer_names`, `weight_names`), whole or chunked over `name0`, `name1`, ..."""
    value = read_attr(group, name, what, layer)
    if value is not None:
        return _texts(value, f"{what}: attribute '{name}'", layer)
    if read_attr(group, f"{name}{MAX_NAME_CHUNKS}", what, layer) is not None:  # one look-up, not a thousand
        raise FormatError(f"{what}: attribute '{name}' is split into more than {MAX_NAME_CHUNKS} chunks",
                          layer=layer, hint="refusing a damaged or hostile file")
    names: list[str] = []
    for chunk in range(MAX_NAME_CHUNKS):
        value = read_attr(group, f"{name}{chunk}", what, layer)
        if value is None:
            break
        names.extend(_texts(value, f"{what}: attribute '{name}{chunk}'", layer))
    return names


def _texts(value: Any, what: str, layer: str | None) -> list[str]:
    if isinstance(value, np.ndarray) and value.size == 0:
        return []  # h5py stores an empty list as an empty float array
    if isinstance(value, np.ndarray) and value.dtype.kind in "SUO":
        return [to_text(item, f"{what} item {i}", layer) for i, item in enumerate(value.reshape(-1))]
    return [to_text(value, what, layer)]


def member(group: h5py.Group, key: str, what: str, layer: str | None = None) -> Any:
    """`group[key]` (a Group or Dataset), or None where there is none; damaged links are a FormatError."""
    try:
        return group[key]
    except KeyError:  # no such member (one look-up, where `get` makes two)
        return None
    except H5_ERRORS as err:
        raise FormatError(f"{what}: '{key}' cannot be opened: {err}", layer=layer, hint=_HINT) from None


def subgroup(group: h5py.Group, key: str, what: str, layer: str | None = None) -> h5py.Group | None:
    """`group[key]` where it is a group; a dataset in its place is a FormatError."""
    found = member(group, key, what, layer)
    if found is not None and not isinstance(found, h5py.Group):
        raise FormatError(f"{what}: '{found.name}' is a dataset where Keras writes a group", layer=layer,
                          hint=_HINT)
    return found


def keys(group: h5py.Group, what: str, layer: str | None = None) -> list[str]:
    """The member names of a group, in h5py's (alphabetical) order."""
    try:
        return list(group.keys())
    except H5_ERRORS as err:
        raise FormatError(f"{what}: the members of '{group.name}' cannot be listed: {err}", layer=layer,
                          hint=_HINT) from None
