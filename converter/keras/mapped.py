"""HDF5 weights read as views of a memory map of the file, not copied through h5py.

Keras writes every weight as a contiguous, unfiltered dataset. Its bytes sit at a fixed offset in
the file (or, in a `.keras` zip, in the stored `model.weights.h5` entry), so an array can be a
read-only view of a map of those bytes: no h5py read call, no fresh buffer for every weight, and the
page cache's pages are what the writer later copies into the ONNX file. Anything else (chunked or
compressed datasets, odd dtypes, an offset outside the mapped bytes) is read by h5py as before.
Which datasets may be viewed is decided by `h5_safety.DatasetReader`, which checks every dataset
(external storage, virtual layout, filters, sizes) before either path reads it.

Opt-in (`load(..., mapped=True)`): a view reads the file when used, so the file must not be truncated
or rewritten while the graph is alive. The CLI, convert() and save_keras() finish with the weights
before they return; the plain `load()` API hands out arrays of their own.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import h5py
import numpy as np

# Plain numeric element types only: a view of string/compound/opaque data would not be an array.
_MAPPABLE_KINDS = frozenset("fiub")


class MappedImage:
    """The bytes of one HDF5 file image: `length` bytes from `start` of the file at `path`."""

    def __init__(self, path: Path, start: int = 0, length: int | None = None) -> None:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            # The map outlives the handle (it holds its own descriptor) and every view keeps it alive.
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._start = start
        self._end = size if length is None else min(size, start + length)

    def view(self, dataset: h5py.Dataset, as_dtype: np.dtype | None = None) -> np.ndarray | None:
        """A view of a dataset the caller found contiguous and stored in this file (h5_safety.py checks
        that), or None where a view would be wrong: non-numeric elements, storage never allocated
        (h5py returns the fill value), bytes outside the mapped image. `as_dtype` reads the elements as
        another type of the same size (bfloat16's opaque elements as their uint16 bits)."""
        dtype = dataset.dtype if as_dtype is None or as_dtype.itemsize != dataset.dtype.itemsize else as_dtype
        if self._map is None or dtype.kind not in _MAPPABLE_KINDS or dtype.fields is not None or dataset.size == 0:
            return None
        offset = dataset.id.get_offset()
        if offset is None:
            return None
        begin = self._start + offset
        if begin + dataset.size * dtype.itemsize > self._end:
            return None
        array = np.frombuffer(self._map, dtype=dtype, count=dataset.size, offset=begin)
        result: np.ndarray = array.reshape(dataset.shape)
        return result

    def close(self) -> None:
        """Unmap, where no view is alive any more (after a failed open); views keep the map otherwise."""
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view still exports the map's buffer: it is freed with the last view
                return


def release_pages(array: np.ndarray) -> None:
    """Drop the pages under a mapped weight from this process' memory once it has been replaced (a
    folded kernel): they stay in the page cache and fault back in if the array is read again, so this
    is always safe, and peak memory stays near one copy of the weights instead of two."""
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):  # np.frombuffer holds the map through a memoryview
        owner = owner.obj
    if not isinstance(owner, mmap.mmap) or array.size == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = array.ctypes.data - np.frombuffer(owner, np.uint8, count=1).ctypes.data
    first = start - start % mmap.PAGESIZE
    end = min(len(owner), start + array.nbytes)
    owner.madvise(mmap.MADV_DONTNEED, first, end - first)
