"""Weights read as views of a memory map of the HDF5 bytes (converter/keras/mapped.py), and h5py's
own read wherever a view would be wrong: chunked or compressed datasets, bytes outside the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from kmodels import layer, save_keras, save_legacy_h5, sequential

import converter
from converter.keras.artifacts import open_artifact
from converter.keras.h5_safety import DatasetReader
from converter.keras.mapped import MappedImage, release_pages


def _dense(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    config = sequential([layer("Dense", "dense", units=3, activation="linear", use_bias=True)], (4,))
    return config, {"dense": [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]}


@pytest.mark.parametrize("saver", [save_legacy_h5, save_keras], ids=["h5", "keras"])
def test_contiguous_weights_are_read_only_views_of_the_file(tmp_path: Path, rng: np.random.Generator,
                                                            saver: Any) -> None:
    config, weights = _dense(rng)
    path = saver(tmp_path / ("m.h5" if saver is save_legacy_h5 else "m.keras"), config, weights)
    artifact = open_artifact(path, mapped=True)
    assert artifact.weights is not None
    kernel, bias = artifact.weights.layer_weights((("dense", "dense"),)) or []
    assert np.array_equal(kernel, weights["dense"][0]) and np.array_equal(bias, weights["dense"][1])
    assert not kernel.flags.writeable and not kernel.flags.owndata  # a view of the map: no copy was made
    artifact.close()
    copied = open_artifact(path)  # the default, for callers that keep the graph: arrays of their own
    assert copied.weights is not None
    assert all(a.flags.owndata for a in copied.weights.layer_weights((("dense", "dense"),)) or [])
    copied.close()


def test_chunked_compressed_and_out_of_image_datasets_are_read_by_h5py(tmp_path: Path,
                                                                       rng: np.random.Generator) -> None:
    data = rng.normal(size=(64, 8)).astype("float32")
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("plain", data=data)
        handle.create_dataset("gzip", data=data, chunks=(16, 8), compression="gzip")
        handle.create_dataset("big_endian", data=data.astype(">f4"))
        handle.create_dataset("empty", shape=(0, 8), dtype="float32")
    size = path.stat().st_size
    image = DatasetReader("w.h5", size, MappedImage(path))
    short = DatasetReader("w.h5", size, MappedImage(path, length=1024))  # `short` ends before the data
    with h5py.File(path, "r") as handle:
        plain = image.read(handle["plain"], "dense")
        assert not plain.flags.owndata and np.array_equal(plain, data)
        gzip = image.read(handle["gzip"], "dense")
        assert gzip.flags.owndata and np.array_equal(gzip, data)
        big = image.read(handle["big_endian"], "dense")
        assert not big.flags.owndata and big.dtype == np.dtype(">f4") and np.array_equal(big, data)
        assert image.read(handle["empty"], "dense").shape == (0, 8)
        outside = short.read(handle["plain"], "dense")
        assert outside.flags.owndata and np.array_equal(outside, data)


def test_renamed_layer_check_reads_no_weight_data(tmp_path: Path, rng: np.random.Generator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Deciding whether to match layers by order looks at names and counts only: each weight is read once."""
    config, weights = _dense(rng)
    path = save_legacy_h5(tmp_path / "m.h5", config, weights)
    reads: list[str] = []
    original = DatasetReader.read
    monkeypatch.setattr(DatasetReader, "read",
                        lambda self, ds, layer: reads.append(ds.name) or original(self, ds, layer))
    converter.load(path, mapped=True).artifact.close()
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 2


def _file_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssFile:")))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from Linux /proc")
def test_released_pages_leave_memory_and_read_back_unchanged(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(2048, 1024)).astype("float32")  # 8 MiB
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("kernel", data=data)
    with h5py.File(path, "r") as handle:
        view = DatasetReader("w.h5", path.stat().st_size, MappedImage(path)).read(handle["kernel"], "dense")
    assert float(view.sum()) == pytest.approx(float(data.sum()), rel=1e-5)  # touch every page
    before = _file_rss_kib()
    release_pages(view)
    assert before - _file_rss_kib() > 6 * 1024
    assert np.array_equal(view, data)  # the pages fault back in from the page cache
    release_pages(np.ones(4))  # an array of its own: nothing to release


def test_folding_releases_the_replaced_kernel(tmp_path: Path, rng: np.random.Generator) -> None:
    config = sequential([layer("Dense", "dense", units=3, activation="linear", use_bias=True),
                         layer("BatchNormalization", "bn", axis=-1, momentum=0.99, epsilon=1e-3, center=True,
                               scale=True)], (4,))
    weights = {"dense": [rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32")],
               "bn": [np.ones(3, "float32"), np.zeros(3, "float32"), np.zeros(3, "float32"), np.ones(3, "float32")]}
    released: list[np.ndarray] = []
    loaded = converter.load(save_legacy_h5(tmp_path / "m.h5", config, weights), mapped=True, optimize=False)
    loaded.graph.release_weight = released.append
    from converter.passes import cleanup, fold_batch_norm

    fold_batch_norm.run(cleanup.run(loaded.graph))
    loaded.artifact.close()
    assert len(released) == 1 and np.array_equal(released[0], weights["dense"][0])
