"""HDF5 files are untrusted: nothing in one may make h5py read outside it, or allocate without bound.

HDF5 can point out of a file in several ways, each of which h5py follows silently: external links
(`h5py.ExternalLink`), user-defined links, datasets with external storage (raw bytes kept in any
named file: `/etc/passwd`, `/dev/zero`), and virtual datasets (mappings onto datasets of other files).
Keras writes none of them, so all are refused:
- links, once, when the file is opened (`check_links`): one walk of the link table, which reads no
  data and never follows a soft or external link; every group reachable from the root is covered.
  Soft links must resolve inside the file (after external links are refused, they can only dangle or
  loop), and no object may be linked twice (hard-link cycles would make the layer walk loop);
- storage, per dataset, right before it is read (`DatasetReader.read`): external storage, virtual
  layout, filters other than HDF5's built-in ones (an unknown filter id makes HDF5 load a plugin),
  element types that are not plain numbers, and declared sizes the file cannot hold.
Two element types are read as float32 (the converter computes in float32): float16, and Keras' bfloat16,
which HDF5 has no type for: Keras 3 stores it as 2-byte opaque values with the attribute dtype="bfloat16".
An opaque dataset without that attribute says nothing of what its bytes mean, and is refused.
The file itself is opened with the default sec2 driver (a file object with h5py's fileobj driver);
HDF5 refuses files written for its family / multi drivers.
"""

from __future__ import annotations

import math
from typing import Any

import h5py
import numpy as np

from converter.errors import FormatError, WeightsError
from converter.keras.mapped import MappedImage

# What h5py raises when a file's bytes are damaged or describe something it cannot represent.
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
# HDF5's built-in filters (and h5py's LZF): decoding them loads no plugin library.
ALLOWED_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle", h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    h5py.h5z.FILTER_SZIP: "szip", h5py.h5z.FILTER_NBIT: "nbit", h5py.h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5py.h5z.FILTER_LZF: "lzf",
}
# A filtered dataset may decode to more bytes than the file holds, but not without bound: deflate's
# best ratio is 1032:1, and no Keras array needs more than this.
MAX_INFLATION = 1100
MAX_FILTERED_BYTES = 16 * 1024**3
# Element types a weight may have: floats up to float64, integers up to 64 bits.
_NUMBER_KINDS = frozenset("fiu")
# Keras 3 (saving_lib.H5IOStore) writes a bfloat16 variable as opaque 2-byte elements with this attribute.
_BFLOAT16_ATTR, _BFLOAT16 = "dtype", "bfloat16"


def open_h5(source: Any, name: str) -> h5py.File:
    """Open `source` (a path or a seekable file object) read-only and refuse links that leave it."""
    try:
        handle = h5py.File(source, "r", driver=None if hasattr(source, "read") else "sec2")
    except H5_ERRORS as err:
        raise FormatError(f"{name} is not a readable HDF5 file: {err}", hint="is the file complete?") from None
    try:
        check_links(handle, name)
    except FormatError:
        handle.close()
        raise
    return handle


def check_links(handle: h5py.File, name: str) -> None:
    """Walk every link once (reading no data, following none) and refuse those that leave the file."""
    root = handle.id
    try:
        hard: dict[int, str] = {h5py.h5o.get_info(root).addr: "/"}
    except H5_ERRORS as err:
        raise FormatError(f"{name} is a damaged HDF5 file: {err}", hint="is the file complete?") from None
    soft: list[bytes] = []

    def visit(link: bytes, info: Any) -> str | None:
        # Raising inside h5py's visit callback is not propagated cleanly: return a reason to stop.
        path = link.decode("utf-8", "replace")
        if "\ufffd" in path:
            return f"the link name {path!r} is not UTF-8"
        if info.type == h5py.h5l.TYPE_SOFT:
            soft.append(link)
        elif info.type != h5py.h5l.TYPE_HARD:
            return _outward_link(root, link, info.type)
        elif info.u in hard:
            return f"'/{path}' links again to '{hard[info.u]}' (an object linked twice, or a cycle)"
        else:
            hard[info.u] = f"/{path}"
        return None

    try:
        problem = root.links.visit(visit, info=True)
    except H5_ERRORS as err:
        raise FormatError(f"{name} is a damaged HDF5 file: {err}", hint="is the file complete?") from None
    problem = problem or _unresolved(root, soft)  # soft links resolve only once no external link is left
    if problem is not None:
        raise FormatError(f"{name}: {problem}",
                          hint="refusing a hostile or damaged file (Keras never writes such links)")


def _outward_link(root: Any, link: bytes, kind: int) -> str:
    if kind != h5py.h5l.TYPE_EXTERNAL:
        return f"'/{link.decode()}' is a user-defined HDF5 link (type {kind}) that may point outside the file"
    try:
        target_file, target = root.links.get_val(link)
        where = f"{target_file.decode('utf-8', 'replace')}:{target.decode('utf-8', 'replace')}"
    except H5_ERRORS:
        where = "another file"
    return f"'/{link.decode()}' is an external link to {where}"


def _unresolved(root: Any, soft: list[bytes]) -> str | None:
    for link in soft:
        if not _resolves(root, link):
            return f"'/{link.decode()}' is a soft link to {_soft_target(root, link)!r}, which does not resolve"
    return None


def _soft_target(root: Any, link: bytes) -> str:
    try:
        return bytes(root.links.get_val(link)).decode("utf-8", "replace")
    except H5_ERRORS:
        return "?"


def _resolves(root: Any, link: bytes) -> bool:
    """Whether a soft link leads to an object of this file (not dangling, not a loop of soft links)."""
    try:
        h5py.h5o.open(root, link).close()
    except H5_ERRORS:
        return False
    return True


class DatasetReader:
    """Reads weight datasets of one opened HDF5 file, each checked right before it is read."""

    def __init__(self, file_name: str, file_bytes: int, image: MappedImage | None = None) -> None:
        self.file_name = file_name
        self.file_bytes = file_bytes
        self.image = image

    def read(self, dataset: Any, layer: str | None) -> np.ndarray:
        """The array of `dataset`, as a view of the mapped file where possible (see mapped.py)."""
        what = f"{self.file_name} dataset '{getattr(dataset, 'name', '?')}'"
        if not isinstance(dataset, h5py.Dataset):
            raise FormatError(f"{what} is a group, not a weight array", layer=layer,
                              hint="is this the weights file saved from this model?")
        mappable, bfloat16 = self._check(dataset, what, layer)
        try:
            # bfloat16's opaque elements are viewed (or read) as their uint16 bit patterns.
            bits = np.dtype(np.uint16) if bfloat16 else None
            view = self.image.view(dataset, bits) if mappable and self.image is not None else None
            array = np.asarray(dataset) if view is None else view
        except H5_ERRORS as err:
            raise FormatError(f"{what} cannot be read: {err}", layer=layer, hint="is the file complete?") from None
        if bfloat16:
            return bfloat16_to_float32(array.view(np.uint16))
        # float16 weights (Keras' float16 policies) are exact in float32, the precision the ONNX computes in.
        return array.astype(np.float32) if array.dtype.kind == "f" and array.dtype.itemsize == 2 else array

    def _check(self, dataset: h5py.Dataset, what: str, layer: str | None) -> tuple[bool, bool]:
        """Refuse storage that reads outside the file or cannot fit. Returns (mappable, bfloat16): mappable
        for contiguous storage of a standard type (which a view of the mapped bytes reads as h5py would),
        bfloat16 for Keras' opaque bfloat16 elements."""
        try:
            dtype, shape = dataset.dtype, dataset.shape
            plist = dataset.id.get_create_plist()  # once: h5py's properties would each fetch it again
            layout, external = plist.get_layout(), plist.get_external_count()
            chunks = plist.get_chunk() if layout == h5py.h5d.CHUNKED else None
            # A view reads the stored bytes as `dtype`: only where the file's type is exactly that one.
            native = (layout == h5py.h5d.CONTIGUOUS and dtype.kind in _NUMBER_KINDS
                      and dataset.id.get_type() == h5py.h5t.py_create(dtype))
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
            stored_in = plist.get_external(0)[0] if external else b""
        except H5_ERRORS as err:
            raise FormatError(f"{what} is damaged: {err}", layer=layer, hint="is the file complete?") from None
        refusal = _storage_refusal(layout, stored_in, filters)
        if refusal:
            raise FormatError(f"{what} {refusal}", layer=layer,
                              hint="refusing a hostile or damaged file (Keras never writes such datasets)")
        opaque = dtype.kind == "V" and dtype.fields is None  # compound types are refused below, as before
        bfloat16 = opaque and _is_bfloat16(dataset, dtype, what, layer)
        if not bfloat16 and (dtype.kind not in _NUMBER_KINDS or dtype.fields is not None or dtype.itemsize > 8):
            raise WeightsError(f"{what} holds {dtype} values, not numbers", layer=layer,
                               hint="weights are float or integer arrays; is this a Keras weights file?")
        self._check_size(what, layer, dtype.itemsize, shape, chunks, bool(filters))
        # An opaque type has no byte order: contiguous bfloat16 bytes are the bits a view reads.
        return native or (bfloat16 and layout == h5py.h5d.CONTIGUOUS), bfloat16

    def _check_size(self, what: str, layer: str | None, itemsize: int, shape: tuple[int, ...],
                    chunks: tuple[int, ...] | None, filtered: bool) -> None:
        """Unfiltered data cannot hold more bytes than the file; filtered data may inflate, boundedly."""
        limit = min(MAX_FILTERED_BYTES, MAX_INFLATION * self.file_bytes) if filtered else self.file_bytes
        declared = math.prod(shape) * itemsize
        chunk = math.prod(chunks) * itemsize if chunks else 0
        if max(declared, chunk) > limit:
            raise FormatError(f"{what} declares {max(declared, chunk)} bytes of shape {shape}, more than "
                              f"a {self.file_bytes}-byte file can hold{' compressed' if filtered else ''}",
                              layer=layer,
                              hint="refusing to allocate for a damaged or hostile file")


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns as float32, exactly: bfloat16 is float32's upper 16 bits."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _is_bfloat16(dataset: h5py.Dataset, dtype: np.dtype, what: str, layer: str | None) -> bool:
    """Whether an opaque dataset is Keras' bfloat16 (2-byte elements, attribute dtype="bfloat16"); any
    other opaque data is refused here, saying what it lacks."""
    if dtype.itemsize != 2:
        why = f"its elements are {dtype.itemsize} bytes"
    else:
        tag = _dtype_attribute(dataset, what, layer)
        if tag == _BFLOAT16:
            return True
        why = f"it has no attribute {_BFLOAT16_ATTR}={_BFLOAT16!r}" if tag is None else \
            f"its attribute {_BFLOAT16_ATTR} is {tag[:40]!r}"
    raise FormatError(f"{what} holds opaque {dtype} values, not numbers: {why}", layer=layer,
                      hint="Keras stores bfloat16 weights as 2-byte opaque values with the attribute "
                           "dtype='bfloat16'; other opaque data is no Keras weight")


def _dtype_attribute(dataset: h5py.Dataset, what: str, layer: str | None) -> str | None:
    """The dataset's `dtype` text attribute, or None where it has none or it is not text. Its stored type is
    checked before reading, as h5_attrs.read_attr does (that module imports this one)."""
    try:
        if not h5py.h5a.exists(dataset.id, _BFLOAT16_ATTR.encode()):
            return None
        stored = h5py.h5a.open(dataset.id, _BFLOAT16_ATTR.encode()).get_type()
        if stored.get_class() != h5py.h5t.STRING or stored.get_cset() not in (h5py.h5t.CSET_ASCII, h5py.h5t.CSET_UTF8):
            return None
        value = dataset.attrs[_BFLOAT16_ATTR]
    except H5_ERRORS as err:
        raise FormatError(f"{what}: attribute '{_BFLOAT16_ATTR}' cannot be read: {err}", layer=layer,
                          hint="is the file complete?") from None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _storage_refusal(layout: int, external_file: bytes, filters: list[int]) -> str:
    if external_file:
        return f"keeps its bytes in the external file {external_file.decode('utf-8', 'replace')!r}"
    if layout == h5py.h5d.VIRTUAL:
        return "is a virtual dataset (it maps data of other datasets, possibly in other files)"
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        return f"has an unknown storage layout ({layout})"
    unknown = [code for code in filters if code not in ALLOWED_FILTERS]
    if unknown:
        return f"needs HDF5 filter {unknown[0]}, which is not built into HDF5 (it would load a plugin)"
    return ""
