"""HDF5 files built to read outside themselves, or damaged ones, end in a KconvertError that names the
dataset and the layer (exit 2), before any of their data is read; nothing opened stays open.

Each vector is planted in the three places an HDF5 file enters: a full-model `.h5`, a `--weights`
file beside a model.json, and the model.weights.h5 inside a `.keras` zip."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from kmodels import layer, run_onnx, sequential

import converter
from application.cli import main
from converter.errors import FormatError, KconvertError, WeightsError

CONFIG = sequential([layer("Dense", "dense", units=2, use_bias=False, activation="linear")], (3,))
KERNEL = np.arange(6, dtype="float32").reshape(3, 2)
SECRET = np.array([[1.5, 2.5], [3.5, 4.5], [5.5, 6.5]], dtype="float32")  # "the server's file"
CONTAINERS = ["h5", "weights", "keras"]
# Plants the Dense kernel (or something in its place) as `name` inside `group`.
Plant = Callable[[h5py.Group, str], None]


def _plain(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, data=KERNEL)


def _legacy_layer(group: h5py.Group, plant: Plant) -> None:
    group.attrs["layer_names"] = [b"dense"]
    dense = group.create_group("dense")
    dense.attrs["weight_names"] = [b"dense/kernel:0"]
    plant(dense.create_group("dense"), "kernel:0")


def _versions(handle: h5py.File) -> None:
    handle.attrs["keras_version"] = "2.15.0"
    handle.attrs["backend"] = "tensorflow"


def build(tmp_path: Path, container: str, plant: Plant) -> tuple[Path, Path | None]:
    """(model path, weights path or None) with the kernel planted by `plant`."""
    if container == "h5":
        with h5py.File(tmp_path / "m.h5", "w") as handle:
            handle.attrs["model_config"] = json.dumps(CONFIG)
            _versions(handle)
            _legacy_layer(handle.create_group("model_weights"), plant)
        return tmp_path / "m.h5", None
    if container == "weights":
        (tmp_path / "model.json").write_text(json.dumps({**CONFIG, "keras_version": "2.15.0"}))
        with h5py.File(tmp_path / "w.h5", "w") as handle:
            _versions(handle)
            _legacy_layer(handle, plant)
        return tmp_path / "model.json", tmp_path / "w.h5"
    with h5py.File(tmp_path / "model.weights.h5", "w") as handle:
        plant(handle.create_group("layers/dense/vars"), "0")
        handle.create_group("vars")
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(CONFIG))
        archive.write(tmp_path / "model.weights.h5", "model.weights.h5")
    return tmp_path / "m.keras", None


def refused(paths: tuple[Path, Path | None], match: str, error: type[KconvertError] = FormatError,
            layer: str | None = "dense") -> None:
    """Refused by the API and by the CLI (exit 2, one message, no traceback, no output file); the error
    names `layer` (None: a fact of the whole file, such as a link or a root attribute)."""
    model, weights = paths
    with pytest.raises(error, match=match) as caught:
        converter.convert(model, weights=weights)
    assert caught.value.layer == layer
    out = model.with_name("out.onnx")
    args = [str(model), "-o", str(out)] + (["--weights", str(weights)] if weights else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET.tobytes())
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.create_dataset("k", data=SECRET)
    return path


@pytest.mark.parametrize("container", CONTAINERS)
def test_the_plain_file_converts(tmp_path: Path, container: str) -> None:
    model, weights = build(tmp_path, container, _plain)
    (y,) = run_onnx(converter.convert(model, weights=weights), np.ones((1, 3), "float32"))
    np.testing.assert_allclose(y, np.ones((1, 3)) @ KERNEL)


@pytest.mark.parametrize("container", CONTAINERS)
def test_external_storage_is_refused(tmp_path: Path, secret: Path, container: str) -> None:
    """The dataset's bytes live in another file: converting copied them into the ONNX weights."""
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, shape=(3, 2), dtype="float32", external=[(str(secret), 0, SECRET.nbytes)])

    refused(build(tmp_path, container, plant), "external file .*secret.bin")


@pytest.mark.parametrize("container", CONTAINERS)
def test_external_link_is_refused(tmp_path: Path, secret: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group[name] = h5py.ExternalLink(str(secret.with_name("other.h5")), "/k")

    refused(build(tmp_path, container, plant), "external link to .*other.h5:/k", layer=None)


def test_external_link_to_a_group_is_refused(tmp_path: Path, secret: Path) -> None:
    with h5py.File(tmp_path / "m.h5", "w") as handle:
        handle.attrs["model_config"] = json.dumps(CONFIG)
        handle["model_weights"] = h5py.ExternalLink(str(secret.with_name("other.h5")), "/")
    refused((tmp_path / "m.h5", None), "'/model_weights' is an external link", layer=None)


@pytest.mark.parametrize("container", CONTAINERS)
def test_soft_link_through_an_external_link_is_refused(tmp_path: Path, secret: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group.file["outside"] = h5py.ExternalLink(str(secret.with_name("other.h5")), "/")
        group[name] = h5py.SoftLink("/outside/k")

    refused(build(tmp_path, container, plant), "external link", layer=None)


@pytest.mark.parametrize("target", ["/nowhere/k", "/loop"], ids=["dangling", "loop"])
@pytest.mark.parametrize("container", CONTAINERS)
def test_soft_link_that_does_not_resolve_is_refused(tmp_path: Path, container: str, target: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group.file["loop"] = h5py.SoftLink("/loop")
        group[name] = h5py.SoftLink(target)

    refused(build(tmp_path, container, plant), "soft link to .* does not resolve", layer=None)


@pytest.mark.parametrize("container", CONTAINERS)
def test_soft_link_inside_the_file_still_converts(tmp_path: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group.file.create_dataset("elsewhere", data=KERNEL)
        group[name] = h5py.SoftLink("/elsewhere")

    model, weights = build(tmp_path, container, plant)
    (y,) = run_onnx(converter.convert(model, weights=weights), np.ones((1, 3), "float32"))
    np.testing.assert_allclose(y, np.ones((1, 3)) @ KERNEL)


@pytest.mark.parametrize("container", CONTAINERS)
def test_hard_link_cycle_is_refused(tmp_path: Path, container: str) -> None:
    """A group linked into itself made the Keras 3 layer walk recurse until RecursionError."""
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, data=KERNEL)
        group.parent["again"] = group.parent

    refused(build(tmp_path, container, plant), "links again to", layer=None)


@pytest.mark.parametrize("container", CONTAINERS)
def test_virtual_dataset_mapping_another_file_is_refused(tmp_path: Path, secret: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        layout = h5py.VirtualLayout(shape=(3, 2), dtype="float32")
        layout[:] = h5py.VirtualSource(str(secret.with_name("other.h5")), "k", shape=(3, 2))
        group.create_virtual_dataset(name, layout)

    refused(build(tmp_path, container, plant), "virtual dataset")


@pytest.mark.parametrize("container", CONTAINERS)
def test_filter_that_needs_a_plugin_is_refused(tmp_path: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_chunk((3, 2))
        plist.set_filter(32001, h5py.h5z.FLAG_OPTIONAL, (0, 0, 0, 0, 5, 1, 1))  # Blosc's registered id
        space = h5py.h5s.create_simple((3, 2))
        h5py.h5d.create(group.id, name.encode(), h5py.h5t.IEEE_F32LE, space, dcpl=plist).close()

    refused(build(tmp_path, container, plant), "filter 32001")


@pytest.mark.parametrize("chunks", [None, (64, 64)], ids=["contiguous", "chunked"])
@pytest.mark.parametrize("container", CONTAINERS)
def test_absurd_declared_size_is_refused_before_allocating(tmp_path: Path, container: str,
                                                          chunks: tuple[int, int] | None) -> None:
    """Storage never written reads back as fill values: 4 TiB declared in a file of a few KiB."""
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, shape=(2**20, 2**20), dtype="float32", chunks=chunks)

    refused(build(tmp_path, container, plant), "declares 4398046511104 bytes")


@pytest.mark.parametrize("container", CONTAINERS)
def test_compressed_weights_within_bounds_still_convert(tmp_path: Path, container: str) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, data=KERNEL, chunks=(3, 2), compression="gzip", shuffle=True, fletcher32=True)

    model, weights = build(tmp_path, container, plant)
    (y,) = run_onnx(converter.convert(model, weights=weights), np.ones((1, 3), "float32"))
    np.testing.assert_allclose(y, np.ones((1, 3)) @ KERNEL)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_external_storage_neither_hangs_nor_exhausts_memory(tmp_path: Path) -> None:
    """Run in a child with 2 GiB of address space: the 4 GiB read from /dev/zero must never start."""
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, shape=(2**29, 2), dtype="float32", external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])

    model, _ = build(tmp_path, "h5", plant)
    code = ("import converter\nfrom converter.errors import FormatError\ntry:\n    converter.convert("
            f"{str(model)!r})\nexcept FormatError as err:\n    print('refused:', err.message)\n")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_memory, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and "refused:" in done.stdout and "/dev/zero" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("driver", ["family", "split"])
def test_files_of_other_hdf5_drivers_are_refused(tmp_path: Path, driver: str) -> None:
    """A family or multi-file HDF5 would read its sibling files; HDF5 refuses it under the sec2 driver."""
    options = {"memb_size": 1024} if driver == "family" else {}
    name = "m%d.h5" if driver == "family" else "m.h5"
    with h5py.File(tmp_path / name, "w", driver=driver, **options) as handle:
        handle.attrs["model_config"] = json.dumps(CONFIG)
        handle.create_dataset("model_weights/dense/x", data=np.zeros(1000, "float32"))
    first = tmp_path / ("m0.h5" if driver == "family" else "m.h5-m.h5")
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        converter.convert(first)


def test_a_user_block_before_the_signature_is_not_read_as_hdf5(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "m.h5", "w", userblock_size=512) as handle:
        handle.attrs["model_config"] = json.dumps(CONFIG)
    with pytest.raises(FormatError, match="neither HDF5"):
        converter.convert(tmp_path / "m.h5")


# Damaged or mistyped weights: each ends in an error naming the dataset (or attribute) and the layer.


def _string(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, data=np.array([[b"a", b"b"]] * 3))


def _compound(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, shape=(3, 2), dtype=[("re", "f4"), ("im", "f4")])


def _complex(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, data=KERNEL.astype("complex64"))


def _bool(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, data=KERNEL > 2)


def _text(group: h5py.Group, name: str) -> None:
    group.create_dataset(name, shape=(3, 2), dtype=h5py.string_dtype())


def _group(group: h5py.Group, name: str) -> None:
    group.create_group(name)


@pytest.mark.parametrize(("plant", "error", "match"), [
    (_string, WeightsError, "holds \\|S1 values, not numbers"),
    (_compound, WeightsError, "values, not numbers"),
    (_complex, WeightsError, "holds complex64 values"),
    (_bool, WeightsError, "holds bool values"),
    (_text, WeightsError, "holds object values"),
    (_group, FormatError, "is a group, not a weight array"),
], ids=["bytes", "compound", "complex", "bool", "vlen-str", "group"])
@pytest.mark.parametrize("container", CONTAINERS)
def test_weights_that_are_not_numbers_are_refused(tmp_path: Path, container: str, plant: Plant,
                                                  error: type[KconvertError], match: str) -> None:
    refused(build(tmp_path, container, plant), match, error)


@pytest.mark.parametrize("container", ["h5", "weights"])
def test_listed_weight_without_dataset_is_refused(tmp_path: Path, container: str) -> None:
    refused(build(tmp_path, container, lambda group, name: None), "lists weight 'dense/kernel:0' .* no such dataset")


def test_damaged_compressed_bytes_are_a_format_error(tmp_path: Path) -> None:
    def plant(group: h5py.Group, name: str) -> None:
        group.create_dataset(name, data=KERNEL, chunks=(3, 2), compression="gzip")

    paths = build(tmp_path, "h5", plant)
    with h5py.File(paths[0], "r") as handle:
        chunk = handle["model_weights/dense/dense/kernel:0"].id.get_chunk_info(0)
    data = bytearray(paths[0].read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    paths[0].write_bytes(bytes(data))
    refused(paths, "kernel:0' cannot be read")


def _mutated_h5(tmp_path: Path, mutate: Callable[[h5py.File], None]) -> tuple[Path, None]:
    model, _ = build(tmp_path, "h5", _plain)
    with h5py.File(model, "a") as handle:
        mutate(handle)
    return model, None


def _set(path: str, key: str, value: object) -> Callable[[h5py.File], None]:
    def mutate(handle: h5py.File) -> None:
        handle[path].attrs[key] = value
    return mutate


def _replace(path: str, make: Callable[[h5py.File, str], object]) -> Callable[[h5py.File], None]:
    def mutate(handle: h5py.File) -> None:
        del handle[path]
        make(handle, path)
    return mutate


def _chunked_names(count: int, last: object) -> Callable[[h5py.File], None]:
    def mutate(handle: h5py.File) -> None:
        group = handle["model_weights/dense"]
        del group.attrs["weight_names"]
        for i in range(count):
            group.attrs[f"weight_names{i}"] = [b"dense/kernel:0"] if i == 0 else np.zeros(0)
        group.attrs[f"weight_names{count}"] = last
    return mutate


@pytest.mark.parametrize(("mutate", "match", "layer"), [
    (_set("/", "keras_version", 2), "m.h5: attribute 'keras_version' is a int64, not text", None),
    (_set("/", "backend", np.ones(3)), "m.h5: attribute 'backend' is a float64 array, not text", None),
    (_set("/", "model_config", 7), "m.h5: attribute 'model_config' is a int64", None),
    (_set("/", "model_config", np.bytes_(b"{\xff}")), "m.h5: attribute 'model_config' is not UTF-8", None),
    (_set("model_weights", "layer_names", np.arange(3)), "m.h5: .* attribute 'layer_names' is a int64 array", None),
    (_set("model_weights/dense", "weight_names", np.arange(2)), "attribute 'weight_names' is a int64 array", "dense"),
    (_set("model_weights/dense", "weight_names", [b"dense/\xffkernel"]), "'weight_names' item 0 is not UTF-8",
     "dense"),
    (_chunked_names(1, 5), "attribute 'weight_names1' is a int64", "dense"),
    (_chunked_names(1024, np.zeros(0)), "split into more than 1024 chunks", "dense"),
    (_replace("model_weights/dense", lambda h, p: h.create_dataset(p, data=KERNEL)), "is a dataset where Keras",
     "dense"),
    (_replace("model_weights", lambda h, p: h.create_dataset(p, data=KERNEL)), "is a dataset where Keras", None),
    (lambda handle: handle.create_group(b"\xff\xfe"), "is not UTF-8", None),
], ids=["version-int", "backend-array", "config-int", "config-bytes", "layer-names-int", "weight-names-int",
        "weight-names-bytes", "chunk-int", "chunks-absurd", "layer-dataset", "model-weights-dataset", "link-name"])
def test_mistyped_attributes_and_members_are_refused(tmp_path: Path, mutate: Callable[[h5py.File], None],
                                                     match: str, layer: str | None) -> None:
    refused(_mutated_h5(tmp_path, mutate), match, layer=layer)


def _keras3(tmp_path: Path, plant: Callable[[h5py.File], None]) -> tuple[Path, None]:
    def base(group: h5py.Group, name: str) -> None:
        _plain(group, name)
        plant(group.file)

    return build(tmp_path, "keras", base)[0], None


def _nest(handle: h5py.File) -> None:
    group = handle["layers/dense"]
    for depth in range(70):
        group = group.create_group(f"cell{depth}")


@pytest.mark.parametrize(("plant", "match"), [
    (lambda handle: handle["layers/dense/vars"].create_dataset("bias", data=KERNEL), "holds 'bias', not a numbered"),
    (_nest, "nests sub-objects more than 64 deep"),
], ids=["vars-name", "deep"])
def test_malformed_keras3_layout_is_refused(tmp_path: Path, plant: Callable[[h5py.File], None], match: str) -> None:
    refused(_keras3(tmp_path, plant), match)


def _fds_and_maps(path: Path) -> tuple[int, int]:
    maps = Path("/proc/self/maps").read_text().count(str(path))
    fds = sum(1 for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path))
    return fds, maps


def _weights_entry_not_hdf5(tmp_path: Path) -> Path:
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("config.json", json.dumps(CONFIG))
        archive.writestr("model.weights.h5", b"\x80\x04 not an HDF5 file")
    return tmp_path / "m.keras"


def _linked_weights(tmp_path: Path) -> Path:
    def plant(group: h5py.Group, name: str) -> None:
        group[name] = h5py.ExternalLink("other.h5", "/k")

    return build(tmp_path, "keras", plant)[0]


def _model_weights_dataset(tmp_path: Path) -> Path:
    """Fails after the file is mapped: the layout is read once the map exists."""
    return _mutated_h5(tmp_path, _replace("model_weights", lambda h, p: h.create_dataset(p, data=KERNEL)))[0]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux /proc")
@pytest.mark.parametrize("make", [_weights_entry_not_hdf5, _linked_weights, _model_weights_dataset],
                         ids=["zip-entry-not-hdf5", "zip-entry-linked", "h5-mapped"])
def test_a_failed_open_leaves_no_handle_or_map_behind(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    model = make(tmp_path).resolve()
    files_before = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    with pytest.raises(FormatError):
        converter.load(model, mapped=True)
    assert _fds_and_maps(model) == (0, 0)
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == files_before


# What the file leaves open: which Keras wrote it (Keras 3 model.json records no version), and which
# backend (Keras 1 files record none, and Theano flipped convolution kernels).


def _keras3_json(activation: str) -> dict[str, object]:
    """`model.to_json()` of Keras 3.15: a Sequential(Input((3,)), Dense(2, activation))."""
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    return {"module": "keras", "class_name": "Sequential", "registered_name": None, "config": {
        "name": "sequential", "trainable": True, "dtype": policy, "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, 3], "dtype": "float32", "sparse": False, "name": "input_layer"}},
            {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
             "build_config": {"input_shape": [None, 3]},
             "config": {"name": "dense", "trainable": True, "dtype": policy, "units": 2, "activation": activation,
                        "use_bias": True}}]}}


def test_keras3_model_json_is_read_with_keras3_semantics(tmp_path: Path) -> None:
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6; Keras 2's clip(0.2 x + 0.5) is up to 0.08 away."""
    from kmodels import save_keras3_weights

    config = _keras3_json("hard_sigmoid")
    (tmp_path / "model.json").write_text(json.dumps(config))
    bias = np.array([0.5, -1.0], "float32")
    weights = save_keras3_weights(tmp_path / "m.weights.h5", config, {"dense": [KERNEL, bias]})
    loaded = converter.load(tmp_path / "model.json", weights=weights)
    assert loaded.artifact.keras_version == "3"
    x = np.linspace(-4, 4, 12, dtype="float32").reshape(4, 3)
    (y,) = run_onnx(converter.convert(tmp_path / "model.json", weights=weights), x)
    np.testing.assert_allclose(y, np.clip(x @ KERNEL + bias + 3, 0, 6) / 6, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("config", "generation"), [
    (_keras3_json("relu"), "3"),
    ({"class_name": "Functional", "config": {"layers": [{"class_name": "Dense", "inbound_nodes": [
        {"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["in", 0, 0]}}]}]}]}}, "3"),
    # tf.keras 2.13+ also writes module / registered_name / build_config: not Keras 3 by themselves
    ({"class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
         "config": {"batch_input_shape": [None, 3], "dtype": "float32"}},
        {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
         "build_config": {"input_shape": [None, 3]}, "config": {"units": 2, "dtype": "float32"}}]}}, None),
    ([{"class_name": "Dense", "config": {"output_dim": 2, "input_dim": 3}}], None),
], ids=["keras3-to-json", "keras3-call-args", "tf-keras-2.15", "keras1-list"])
def test_keras_generation_by_content(config: object, generation: str | None) -> None:
    from converter.keras.config_json import keras_generation

    assert keras_generation(config) == generation


def test_keras2_json_keeps_keras2_semantics(tmp_path: Path) -> None:
    from kmodels import save_legacy_weights

    config = sequential([layer("Dense", "dense", units=2, activation="hard_sigmoid", use_bias=False)])
    config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 3]
    (tmp_path / "model.json").write_text(json.dumps({**config, "keras_version": "2.15.0", "backend": "tensorflow"}))
    weights = save_legacy_weights(tmp_path / "w.h5", config, {"dense": [KERNEL]})
    x = np.linspace(-4, 4, 12, dtype="float32").reshape(4, 3)
    (y,) = run_onnx(converter.convert(tmp_path / "model.json", weights=weights), x)
    np.testing.assert_allclose(y, np.clip(0.2 * (x @ KERNEL) + 0.5, 0, 1), rtol=1e-5, atol=1e-6)


def _keras1_conv(tmp_path: Path, rows: int, dim_ordering: str, keras_version: str | None) -> Path:
    from k1models import k1layer, k1sequential, save_keras1_h5

    conv = k1layer("Convolution2D", "convolution2d_1", nb_filter=2, nb_row=rows, nb_col=rows, border_mode="valid",
                   subsample=[1, 1], dim_ordering=dim_ordering, activation="linear", bias=True,
                   batch_input_shape=[None, 3, 5, 5] if dim_ordering == "th" else [None, 5, 5, 3])
    config = k1sequential([conv])
    if keras_version is None:
        config.pop("keras_version")
    kernel = np.ones((2, 3, rows, rows) if dim_ordering == "th" else (rows, rows, 3, 2), "float32")
    return save_keras1_h5(tmp_path / "m.h5", config, {"convolution2d_1": [("W", kernel), ("b", np.zeros(2, "f4"))]},
                          keras_version=keras_version)


@pytest.mark.parametrize(("dim_ordering", "keras_version", "evidence"), [
    ("th", None, "dim_ordering 'th'"), ("tf", "1.1.0", "keras_version 1.1.0"),
    ("tf", None, "Keras 1 argument names"),
])
def test_keras1_file_without_backend_warns_about_theano(tmp_path: Path, dim_ordering: str,
                                                         keras_version: str | None, evidence: str) -> None:
    from converter.errors import KconvertWarning

    path = _keras1_conv(tmp_path, 3, dim_ordering, keras_version)
    with pytest.warns(KconvertWarning, match=f"does not record the Keras backend.*{evidence}.*--backend theano"):
        converter.convert(path)


@pytest.mark.parametrize(("rows", "backend"), [(3, "tensorflow"), (3, "theano"), (1, None)],
                         ids=["stated-tensorflow", "stated-theano", "1x1-kernel"])
def test_no_backend_warning_where_the_answer_is_known(tmp_path: Path, rows: int, backend: str | None) -> None:
    import warnings

    from converter.errors import KconvertWarning

    path = _keras1_conv(tmp_path, rows, "th", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KconvertWarning)
        converter.convert(path, backend=backend)
