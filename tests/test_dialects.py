"""Keras 1 configs (Merge, TimeDistributedDense, renamed arguments), config files with odd encodings, and
weights files whose layer names differ from the config's, against numpy references."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_close
from k1models import k1layer, k1model, k1sequential, save_keras1_h5
from kmodels import layer, run_onnx, save_legacy_h5, sequential

import converter
from converter.errors import UnsupportedLayerError
from converter.keras.dialects import canonical_config, upgrade_model_config


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))


MERGE_REFERENCES = {
    "sum": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "ave": lambda a, b: (a + b) / 2,
    "max": np.maximum,
    "concat": lambda a, b: np.concatenate([a, b], -1),
    "dot": lambda a, b: (a * b).sum(-1, keepdims=True),
    "cos": lambda a, b: (_l2n(a) * _l2n(b)).sum(-1, keepdims=True),
}


@pytest.mark.parametrize("mode", sorted(MERGE_REFERENCES))
@pytest.mark.parametrize("batch", [1, 3])
def test_keras1_functional_merge(tmp_path: Path, rng: np.random.Generator, mode: str, batch: int) -> None:
    w1, w2 = (rng.normal(size=(3, 4)).astype("float32") for _ in range(2))
    inp = k1layer("InputLayer", "input_1", batch_input_shape=[None, 3], input_dtype="float32", sparse=False)
    d1 = k1layer("Dense", "dense_1", output_dim=4, activation="linear", bias=False, init="glorot_uniform")
    d2 = k1layer("Dense", "dense_2", output_dim=4, activation="linear", bias=False, init="glorot_uniform")
    merge = k1layer("Merge", "merge_1", mode=mode, mode_type="raw", concat_axis=-1, dot_axes=-1,
                    output_shape=None, output_shape_type="raw", output_mask=None, output_mask_type="raw",
                    arguments={}, layers=[])
    config = k1model([(inp, []), (d1, ["input_1"]), (d2, ["input_1"]), (merge, ["dense_1", "dense_2"])],
                     ["input_1"], ["merge_1"])
    path = save_keras1_h5(tmp_path / "m.h5", config, {"dense_1": [("W", w1)], "dense_2": [("W", w2)]})
    x = rng.normal(size=(batch, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, MERGE_REFERENCES[mode](x @ w1, x @ w2))


def test_keras1_sequential_merge_of_branch_models(tmp_path: Path, rng: np.random.Generator) -> None:
    w1, w2, w3 = (rng.normal(size=s).astype("float32") for s in ((3, 4), (2, 4), (8, 1)))
    left = {"class_name": "Sequential", "config": [k1layer("Dense", "dense_1", output_dim=4, bias=False,
                                                           batch_input_shape=[None, 3], activation="relu")]}
    right = {"class_name": "Sequential", "config": [k1layer("Dense", "dense_2", output_dim=4, bias=False,
                                                            batch_input_shape=[None, 2], activation="linear")]}
    merge = k1layer("Merge", "merge_1", mode="concat", concat_axis=-1, layers=[left, right])
    head = k1layer("Dense", "dense_3", output_dim=1, bias=False, activation="linear")
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([merge, head]),
                          {"dense_1": [("W", w1)], "dense_2": [("W", w2)], "dense_3": [("W", w3)]})
    # Keras 1 saved the branch layers flattened into the top level of the weights file.
    with h5py.File(path, "a") as handle:
        group = handle["model_weights"]
        group.attrs["layer_names"] = [b"dense_1", b"dense_2", b"merge_1", b"dense_3"]
        for name, array in (("dense_1", w1), ("dense_2", w2)):
            sub = group.create_group(name)
            sub.attrs["weight_names"] = [f"{name}_W".encode()]
            sub.create_dataset(f"{name}_W", data=array)
    a, b = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 2)).astype("float32")
    (y,) = run_onnx(converter.convert(path), a, b)
    assert_close(y, np.concatenate([np.maximum(a @ w1, 0), b @ w2], -1) @ w3)


def test_merge_with_python_function_mode_is_refused_by_name(tmp_path: Path) -> None:
    inp = k1layer("InputLayer", "input_1", batch_input_shape=[None, 3])
    merge = k1layer("Merge", "my_merge", mode=["4wEAAAB", None, None], mode_type="lambda", layers=[])
    config = k1model([(inp, []), (merge, ["input_1", "input_1"])], ["input_1"], ["my_merge"])
    path = save_keras1_h5(tmp_path / "m.h5", config, {})
    with pytest.raises(UnsupportedLayerError, match=r"'my_merge' \(Merge\): .*Python function"):
        converter.convert(path)


def test_time_distributed_dense(tmp_path: Path, rng: np.random.Generator) -> None:
    w, b = rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=2).astype("float32")
    tdd = k1layer("TimeDistributedDense", "tdd_1", output_dim=2, activation="tanh", input_dim=3, input_length=4)
    path = save_keras1_h5(tmp_path / "m.h5", k1sequential([tdd]), {"tdd_1": [("W", w), ("b", b)]})
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, np.tanh(x @ w + b))


@pytest.mark.parametrize("cls, config, expected", [
    ("Convolution2D", {"nb_filter": 3, "nb_row": 2, "nb_col": 5, "border_mode": "same", "subsample": [2, 1],
                       "dim_ordering": "th", "bias": False, "init": "he_normal"},
     {"filters": 3, "kernel_size": [2, 5], "padding": "same", "strides": [2, 1], "data_format": "channels_first",
      "use_bias": False, "kernel_initializer": "he_normal"}),
    ("Convolution1D", {"nb_filter": 3, "filter_length": 4, "subsample_length": 2},
     {"filters": 3, "kernel_size": [4], "strides": [2]}),
    ("AtrousConvolution1D", {"filter_length": 3, "atrous_rate": 2}, {"kernel_size": [3], "dilation_rate": [2]}),
    ("MaxPooling1D", {"pool_length": 3, "stride": 2}, {"pool_size": [3], "strides": [2]}),
    ("Convolution3D", {"kernel_dim1": 1, "kernel_dim2": 2, "kernel_dim3": 3, "dim_ordering": "tf"},
     {"kernel_size": [1, 2, 3], "data_format": "channels_last"}),
    ("LSTM", {"output_dim": 5, "inner_activation": "hard_sigmoid", "consume_less": "gpu", "dropout_W": 0.1,
              "dropout_U": 0.2, "forget_bias_init": "one"},
     {"units": 5, "recurrent_activation": "hard_sigmoid", "dropout": 0.1, "recurrent_dropout": 0.2}),
    ("GRU", {"output_dim": 5}, {"units": 5, "reset_after": False}),
    ("Dropout", {"p": 0.3}, {"rate": 0.3}),
    ("Embedding", {"input_dim": 10, "output_dim": 4, "init": "uniform", "W_regularizer": None},
     {"input_dim": 10, "output_dim": 4, "embeddings_initializer": "uniform", "embeddings_regularizer": None}),
    ("BatchNormalization", {"mode": 0, "axis": 1}, {"axis": 1}),
    ("LeakyReLU", {"alpha": {"type": "ndarray", "value": 0.3}}, {"negative_slope": 0.3}),
])
def test_keras1_arguments_are_canonical(cls: str, config: dict, expected: dict) -> None:
    raw = {"class_name": "Sequential", "config": [{"class_name": cls, "config": {"name": "x", **config}}]}
    entry = upgrade_model_config(raw, "1.2.2")["config"][0]
    from converter.keras.dialects import canonical_class

    out = canonical_config(canonical_class(entry["class_name"]), entry["config"], keras_major=1)
    assert {k: out[k] for k in expected} == expected
    assert not {"consume_less", "forget_bias_init", "nb_row", "mode", "p"} & set(out)


def test_spatial_layers_without_dim_ordering_follow_the_model(rng: np.random.Generator) -> None:
    raw = [{"class_name": "Convolution2D", "config": {"name": "c", "dim_ordering": "th"}},
           {"class_name": "UpSampling2D", "config": {"name": "u", "size": [2, 2]}}]
    upgraded = upgrade_model_config(raw, "1.0.5")
    assert upgraded[1]["config"]["dim_ordering"] == "th"
    assert "dim_ordering" not in raw[1]["config"]  # the caller's config is not modified


def test_keras2_configs_are_left_alone() -> None:
    raw = {"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 2}}]}}
    assert upgrade_model_config(raw, "2.15.0") is raw


def test_json_written_as_a_json_string(tmp_path: Path, rng: np.random.Generator) -> None:
    kernel = rng.normal(size=(3, 2)).astype("float32")
    config = sequential([layer("Dense", "dense", units=2, use_bias=False)], (3,))
    weights = save_legacy_h5(tmp_path / "w.h5", config, {"dense": [kernel]})
    (tmp_path / "model.json").write_text(json.dumps(json.dumps(config)))
    x = rng.normal(size=(2, 3)).astype("float32")
    (y,) = run_onnx(converter.convert(tmp_path / "model.json", weights=weights), x)
    assert_close(y, x @ kernel)


def test_weights_saved_under_other_layer_names_match_by_order(tmp_path: Path, rng: np.random.Generator) -> None:
    k1, k2 = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    config = sequential([layer("Dense", "dense_1", units=4, use_bias=False), layer("Dropout", "drop", rate=0.1),
                         layer("Dense", "dense_2", units=2, use_bias=False)], (3,))
    saved = sequential([layer("Dense", "dense_7", units=4, use_bias=False), layer("Dropout", "drop_3", rate=0.1),
                        layer("Dense", "dense_8", units=2, use_bias=False)], (3,))
    weights = save_legacy_h5(tmp_path / "w.h5", saved, {"dense_7": [k1], "dense_8": [k2]})
    (tmp_path / "model.json").write_text(json.dumps(config))
    x = rng.normal(size=(2, 3)).astype("float32")
    with pytest.warns(UserWarning, match="matched the 2 weighted layers by order"):
        model = converter.convert(tmp_path / "model.json", weights=weights)
    assert_close(run_onnx(model, x)[0], x @ k1 @ k2)


@pytest.mark.parametrize("dropout_group", [True, False])
def test_weights_found_by_name_parse_no_layer_twice(tmp_path: Path, rng: np.random.Generator,
                                                    monkeypatch: pytest.MonkeyPatch, dropout_group: bool) -> None:
    """Where every top-level layer has a group of its name, no pairing by order can follow: the layers
    are not parsed a second time to list the weighted ones. A file without a group for an unweighted
    layer (here the Dropout) still takes the full match, which finds every weighted layer by name."""
    from converter.keras.attach import WeightAttacher

    k1, k2 = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    config = sequential([layer("Dense", "dense_1", units=4, use_bias=False), layer("Dropout", "drop", rate=0.1),
                         layer("Dense", "dense_2", units=2, use_bias=False)], (3,))
    path = save_legacy_h5(tmp_path / "m.h5", config, {"dense_1": [k1], "dense_2": [k2]})
    if not dropout_group:
        with h5py.File(path, "r+") as handle:
            del handle["model_weights/drop"]
    listed: list[int] = []
    full_match = WeightAttacher._weighted_top_layers
    monkeypatch.setattr(WeightAttacher, "_weighted_top_layers", lambda self: listed.append(1) or full_match(self))
    x = rng.normal(size=(2, 3)).astype("float32")
    assert_close(run_onnx(converter.convert(path), x)[0], x @ k1 @ k2)
    assert len(listed) == (0 if dropout_group else 1)


def test_tf_keras_zip_layout_with_renamed_layers(tmp_path: Path, rng: np.random.Generator) -> None:
    """tf.keras 2.13-2.15 `.keras`: `_layer_checkpoint_dependencies/<creation name>/vars/<i>`."""
    k1, k2 = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    config = sequential([layer("Dense", "head_a", units=4, use_bias=False),
                         layer("Dense", "head_b", units=2, use_bias=False)], (3,))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:  # created as dense_4 and dense_10, renamed afterwards
        handle.create_dataset("_layer_checkpoint_dependencies/dense_4/vars/0", data=k1)
        handle.create_dataset("_layer_checkpoint_dependencies/dense_10/vars/0", data=k2)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "2.14.0"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    x = rng.normal(size=(2, 3)).astype("float32")
    with pytest.warns(UserWarning, match="creation order"):
        model = converter.convert(path)
    assert_close(run_onnx(model, x)[0], x @ k1 @ k2)


def test_inspect_describes_an_architecture_without_weights(tmp_path: Path) -> None:
    config = k1sequential([k1layer("Dense", "dense_1", output_dim=4, input_dim=3, bias=True)])
    (tmp_path / "model.json").write_text(json.dumps(config))
    summary = converter.inspect(tmp_path / "model.json")
    assert [(r["name"], r["class_name"], r["output_shape"]) for r in summary["layers"]] == [
        ("dense_1", "Dense", "(None, 4)")]
    with pytest.raises(converter.errors.WeightsError, match="holds only the architecture"):
        converter.convert(tmp_path / "model.json")
