"""The Keras 3 archive writer (`kconvert FILE -o model.keras`), without TensorFlow: the archive's layout
(config.json in Keras 3 spelling, model.weights.h5 in the `layers/<saved name>/vars` layout), and round
trips: the written archive, read back by kconvert, converts to an ONNX model with the source's outputs."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_close
from k1models import k1layer, k1sequential, save_keras1_h5
from kmodels import functional, input_layer, layer, run_onnx, save_keras, save_legacy_h5, sequential

import converter
from application.cli import main
from converter.errors import UnsupportedLayerError
from converter.export.keras_args import BASE_ARGS, keras3_args, op_args, op_module
from converter.export.keras_weights import KERAS2_HARD_SIGMOID_GAIN

SAVERS = {"keras": save_keras, "h5": save_legacy_h5}
F32 = np.float32


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape).astype(F32)


def _archive(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(config, metadata, {h5 dataset path: array}) of a written archive."""
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        config, meta = json.loads(archive.read("config.json")), json.loads(archive.read("metadata.json"))
        data = archive.read("model.weights.h5")
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(data), "r") as handle:
        handle.visititems(lambda name, obj: arrays.__setitem__(name, np.asarray(obj))
                          if isinstance(obj, h5py.Dataset) else None)
    return config, meta, arrays


def _layers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in config["config"]["layers"]}


def _round_trip(tmp_path: Path, source: Path, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    written = converter.save_keras(source, tmp_path / "upgraded.keras").path
    return run_onnx(converter.convert(source), *inputs), run_onnx(converter.convert(written), *inputs)


def _lstm_model(rng: np.random.Generator, units: int = 3, features: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    config = sequential([
        layer("LSTM", "lstm", units=units, return_sequences=True, input_dim=features, implementation=2),
        layer("Bidirectional", "bidi", merge_mode="concat",
              layer=layer("GRU", "gru", units=2, return_sequences=True, reset_after=True)),
        layer("TimeDistributed", "td", layer=layer("Dense", "dense", units=2)),
        layer("BatchNormalization", "bn", center=False, axis=[2], fused=False),
    ], (5, features))
    lstm = [_w(rng, features, 4 * units), _w(rng, units, 4 * units), _w(rng, 4 * units)]
    gru = [[_w(rng, units, 6), _w(rng, 2, 6), _w(rng, 2, 6)] for _ in range(2)]
    weights = {"lstm": {"cell": lstm}, "bidi": {"forward_layer/cell": gru[0], "backward_layer/cell": gru[1]},
               "td": {"layer": [_w(rng, 4, 2), _w(rng, 2)]},
               "bn": [np.abs(_w(rng, 2)) + 0.5, _w(rng, 2), np.abs(_w(rng, 2)) + 0.5]}
    return config, weights


@pytest.mark.parametrize("fmt", SAVERS)
def test_archive_layout_follows_keras3(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    config, weights = _lstm_model(rng)
    source = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)
    written = converter.save_keras(source, tmp_path / "out.keras")
    model, meta, arrays = _archive(written.path)
    assert meta["keras_version"].startswith("3.")
    assert (model["module"], model["class_name"]) == ("keras.src.models.functional", "Functional")
    entries = _layers(model)
    assert list(entries) == ["input_layer", "lstm", "bidi", "td", "bn"]
    assert entries["input_layer"]["config"]["batch_shape"] == [None, 5, 4]
    lstm = entries["lstm"]
    assert (lstm["module"], lstm["registered_name"]) == ("keras.layers", None)
    assert not {"input_dim", "implementation"} & set(lstm["config"])  # Keras 3 rejects them
    assert entries["bn"]["config"]["axis"] == 2 and "fused" not in entries["bn"]["config"]
    assert entries["bidi"]["config"]["layer"]["class_name"] == "GRU"
    (call,) = lstm["inbound_nodes"]
    assert call["args"][0]["class_name"] == "__keras_tensor__"
    assert call["args"][0]["config"]["keras_history"] == ["input_layer", 0, 0]
    assert model["config"]["input_layers"] == ["input_layer", 0, 0]
    assert model["config"]["output_layers"] == ["bn", 0, 0]
    assert_close(arrays["layers/lstm/cell/vars/1"], weights["lstm"]["cell"][1])
    assert_close(arrays["layers/bidirectional/backward_layer/cell/vars/2"], weights["bidi"]["backward_layer/cell"][2])
    assert_close(arrays["layers/time_distributed/layer/vars/0"], weights["td"]["layer"][0])
    assert sorted(k for k in arrays if k.startswith("layers/batch_normalization/")) == [
        f"layers/batch_normalization/vars/{i}" for i in range(3)]
    assert_close(arrays["layers/batch_normalization/vars/2"], weights["bn"][2])


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_recurrent_wrapped_model_round_trips(tmp_path: Path, rng: np.random.Generator, fmt: str, batch: int) -> None:
    config, weights = _lstm_model(rng)
    source = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)
    (want,), (got,) = _round_trip(tmp_path, source, [_w(rng, batch, 5, 4)])
    assert_close(got, want)


def _branches(order: list[str]) -> dict[str, Any]:
    """Two Dense branches listed in `order`; Keras orders layers by depth, so `deep_*` come first."""
    cfgs = {"x": (input_layer("x", (3,)), []),
            "deep_a": (layer("Dense", "deep_a", units=4), ["x"]),
            "deep_b": (layer("Dense", "deep_b", units=4), ["deep_a"]),
            "short": (layer("Dense", "short", units=4), ["x"]),
            "add": (layer("Add", "add"), ["deep_b", "short"])}
    return functional([cfgs[n] for n in order], ["x"], ["add"])


@pytest.mark.parametrize("fmt", SAVERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_layers_are_listed_and_numbered_in_keras_order(tmp_path: Path, rng: np.random.Generator, fmt: str,
                                                      batch: int) -> None:
    config = _branches(["x", "short", "deep_a", "deep_b", "add"])
    weights = {n: [_w(rng, 3 if n != "deep_b" else 4, 4), _w(rng, 4)] for n in ("deep_a", "deep_b", "short")}
    source = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)
    written = converter.save_keras(source, tmp_path / "out.keras")
    model, _, arrays = _archive(written.path)
    # Keras 3's map_graph: depth from the output, deepest first, ties by first visit from the output.
    assert list(_layers(model)) == ["x", "deep_a", "deep_b", "short", "add"]
    assert_close(arrays["layers/dense_2/vars/0"], weights["short"][0])
    x = _w(rng, batch, 3)
    (want,), (got,) = _round_trip(tmp_path, source, [x])
    assert_close(got, want)


@pytest.mark.parametrize("fmt", SAVERS)
def test_shared_layer_is_one_entry_with_two_calls(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    config = functional([(input_layer("a", (3,)), []), (input_layer("b", (3,)), []),
                         (layer("Dense", "shared", units=2), ["a"]),
                         (layer("Concatenate", "cat", axis=-1), ["shared"])], ["a", "b"], ["cat"])
    shared = config["config"]["layers"][2]
    shared["inbound_nodes"].append({"args": [{"class_name": "__keras_tensor__", "config": {
        "shape": None, "dtype": "float32", "keras_history": ["b", 0, 0]}}], "kwargs": {}})
    cat = config["config"]["layers"][3]
    cat["inbound_nodes"][0]["args"] = [[cat["inbound_nodes"][0]["args"][0],
                                        {"class_name": "__keras_tensor__", "config": {
                                            "shape": None, "dtype": "float32", "keras_history": ["shared", 1, 0]}}]]
    source = SAVERS[fmt](tmp_path / f"m.{fmt}", config, {"shared": [_w(rng, 3, 2), _w(rng, 2)]})
    written = converter.save_keras(source, tmp_path / "out.keras")
    model, _, _ = _archive(written.path)
    entries = _layers(model)
    assert len(entries["shared"]["inbound_nodes"]) == 2
    (cat_call,) = entries["cat"]["inbound_nodes"]
    assert [t["config"]["keras_history"] for t in cat_call["args"][0]] == [["shared", 0, 0], ["shared", 1, 0]]
    a, b = _w(rng, 3, 3), _w(rng, 3, 3)
    (want,), (got,) = _round_trip(tmp_path, source, [a, b])
    assert_close(got, want)


@pytest.mark.parametrize("fmt", SAVERS)
def test_nested_model_is_flattened_without_slashes(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    inner = sequential([layer("Dense", "inner_dense", units=3, activation="relu")], (4,), name="inner")
    config = sequential([inner, layer("Dense", "head", units=2)], (4,), name="outer")
    weights = {"inner_dense": [_w(rng, 4, 3), _w(rng, 3)], "head": [_w(rng, 3, 2), _w(rng, 2)]}
    source = SAVERS[fmt](tmp_path / f"m.{fmt}", config, weights)
    written = converter.save_keras(source, tmp_path / "out.keras")
    names = list(_layers(_archive(written.path)[0]))
    assert "inner_inner_dense" in names and not any("/" in n for n in names)
    (want,), (got,) = _round_trip(tmp_path, source, [_w(rng, 3, 4)])
    assert_close(got, want)


@pytest.mark.parametrize("batch", [1, 3])
def test_keras1_file_upgrades(tmp_path: Path, rng: np.random.Generator, batch: int) -> None:
    """Keras 1 spellings and per-gate LSTM weights become a Keras 3 config and merged kernels."""
    config = k1sequential([
        k1layer("LSTM", "lstm_1", output_dim=3, input_dim=2, input_length=4, batch_input_shape=[None, 4, 2],
                inner_activation="sigmoid", activation="tanh", consume_less="gpu", W_regularizer=None,
                init="glorot_uniform", inner_init="orthogonal", return_sequences=False),
        k1layer("Dense", "dense_1", output_dim=2, init="uniform", activation="softmax",
                W_regularizer={"name": "WeightRegularizer", "l1": 0.0, "l2": 0.01}),
    ])
    gates = [(f"{p}_{g}", _w(rng, *shape)) for g in "icfo" for p, shape in (("W", (2, 3)), ("U", (3, 3)), ("b", (3,)))]
    source = save_keras1_h5(tmp_path / "k1.h5", config, {"lstm_1": gates,
                                                        "dense_1": [("W", _w(rng, 3, 2)), ("b", _w(rng, 2))]})
    written = converter.save_keras(source, tmp_path / "out.keras")
    model, _, arrays = _archive(written.path)
    dense = _layers(model)["dense_1"]["config"]
    assert dense["units"] == 2 and "output_dim" not in dense and "init" not in dense
    assert dense["kernel_regularizer"]["class_name"] == "L1L2" and dense["kernel_regularizer"]["config"]["l2"] == 0.01
    assert dense["kernel_initializer"]["class_name"] == "RandomUniform"
    assert arrays["layers/lstm/cell/vars/0"].shape == (2, 12)
    (want,), (got,) = _round_trip(tmp_path, source, [_w(rng, batch, 4, 2)])
    assert_close(got, want)


@pytest.mark.parametrize("kind", ["Dense", "LSTM", "GRU"])
@pytest.mark.parametrize("batch", [1, 3])
def test_keras2_hard_sigmoid_is_rescaled_for_keras3(tmp_path: Path, rng: np.random.Generator, kind: str,
                                                    batch: int) -> None:
    """Keras 2's hard_sigmoid is clip(0.2x + 0.5), Keras 3's clip(x/6 + 0.5): the pre-activation is scaled by 1.2."""
    if kind == "Dense":
        cfg, shape = layer("Dense", "d", units=3, activation="hard_sigmoid"), (5,)
        weights: dict[str, Any] = {"d": [_w(rng, 5, 3) * 3, _w(rng, 3)]}
    else:
        gates = 4 if kind == "LSTM" else 3
        cfg, shape = layer(kind, "d", units=3, recurrent_activation="hard_sigmoid", reset_after=False), (4, 5)
        weights = {"d": {"cell": [_w(rng, 5, 3 * gates) * 3, _w(rng, 3, 3 * gates), _w(rng, 3 * gates)]}}
    source = save_legacy_h5(tmp_path / "m.h5", sequential([cfg], shape), weights)
    written = converter.save_keras(source, tmp_path / "out.keras")
    arrays = _archive(written.path)[2]
    stored = arrays["layers/dense/vars/0"] if kind == "Dense" else arrays[f"layers/{kind.lower()}/cell/vars/0"]
    original = weights["d"][0] if kind == "Dense" else weights["d"]["cell"][0]
    assert_close(stored[:, :3], original[:, :3] * KERAS2_HARD_SIGMOID_GAIN)  # the first gate is a sigmoid gate
    (want,), (got,) = _round_trip(tmp_path, source, [_w(rng, batch, *shape) * 2])
    assert_close(got, want)


def test_keras2_lstm_hard_sigmoid_activation_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    cfg = layer("LSTM", "lstm", units=2, activation="hard_sigmoid")
    source = save_legacy_h5(tmp_path / "m.h5", sequential([cfg], (3, 2)),
                            {"lstm": {"cell": [_w(rng, 2, 8), _w(rng, 2, 8), _w(rng, 8)]}})
    with pytest.raises(UnsupportedLayerError, match="'lstm'.*hard_sigmoid"):
        converter.save_keras(source, tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.parametrize("batch", [1, 3])
def test_keras2_mask_with_initial_state_is_made_explicit(tmp_path: Path, rng: np.random.Generator,
                                                          batch: int) -> None:
    """Keras 3 ignores an implicit mask on an RNN given initial_state; the writer passes it as `mask=`."""
    def tensor(name: str) -> list[Any]:
        return [name, 0, 0, {}]
    entries = [input_layer("ids", (5,)), input_layer("h", (3,)),
               layer("Embedding", "emb", input_dim=6, output_dim=4, mask_zero=True),
               layer("LSTM", "lstm", units=3, return_sequences=True)]
    entries[2]["inbound_nodes"] = [[tensor("ids")]]
    entries[3]["inbound_nodes"] = [[tensor("emb"), tensor("h"), tensor("h")]]
    for entry in entries[:2]:
        entry["inbound_nodes"] = []
    config = {"class_name": "Model", "config": {"name": "m", "layers": entries, "output_layers": [["lstm", 0, 0]],
                                                "input_layers": [["ids", 0, 0], ["h", 0, 0]]}}
    weights = {"emb": [_w(rng, 6, 4)], "lstm": {"cell": [_w(rng, 4, 12), _w(rng, 3, 12), _w(rng, 12)]}}
    source = save_legacy_h5(tmp_path / "m.h5", config, weights)
    written = converter.save_keras(source, tmp_path / "out.keras")
    entries_out = _layers(_archive(written.path)[0])
    (call,) = entries_out["lstm"]["inbound_nodes"]
    assert call["kwargs"]["mask"]["config"]["keras_history"] == ["emb_not_equal", 0, 0]
    assert len(call["kwargs"]["initial_state"]) == 2
    assert entries_out["emb_not_equal"]["module"] == "keras.src.ops.numpy"
    ids = rng.integers(1, 6, size=(batch, 5)).astype(F32)
    ids[:, 3:] = 0
    (want,), (got,) = _round_trip(tmp_path, source, [ids, _w(rng, batch, 3)])
    assert_close(got, want)


@pytest.mark.parametrize("fmt", SAVERS)
def test_unexpressible_layers_are_refused_by_name(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    from converter.extensions import register_layer, unregister_layer

    register_layer("MyScale", lambda b, inputs, node: b.op("Mul", inputs[0], b.scalar(2.0)))
    try:
        source = SAVERS[fmt](tmp_path / f"m.{fmt}", sequential([layer("MyScale", "scale")], (3,)), {})
        assert converter.convert(source) is not None  # converts to ONNX with the user's handler
        with pytest.raises(UnsupportedLayerError, match="'scale' \\(MyScale\\) has no Keras 3 built-in"):
            converter.save_keras(source, tmp_path / "out.keras")
    finally:
        unregister_layer("MyScale")


def test_cli_writes_a_keras_archive(tmp_path: Path, rng: np.random.Generator) -> None:
    source = save_legacy_h5(tmp_path / "m.h5", sequential([layer("Dense", "d", units=2)], (3,)),
                            {"d": [_w(rng, 3, 2), _w(rng, 2)]})
    out = tmp_path / "upgraded.keras"
    result = CliRunner().invoke(main, [str(source), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "keras" and Path(report["output"]) == out
    assert _archive(out)[0]["class_name"] == "Functional"
    refused = CliRunner().invoke(main, [str(source), "-o", str(tmp_path / "x.keras"), "--check"])
    assert refused.exit_code == 2 and "do not apply" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "upgraded.keras"]  # no temporary files left


def test_keras3_arguments_come_from_the_handlers_traits() -> None:
    # One value for every class of a family, a mapping by class where they differ, none: no built-in.
    assert keras3_args("Conv2D") == keras3_args("Conv3D") and "groups" in (keras3_args("Conv2D") or ())
    assert keras3_args("UpSampling1D") == BASE_ARGS | {"size"}
    assert keras3_args("LSTM") - keras3_args("GRU") == {"unit_forget_bias"}  # type: ignore[operator]
    assert keras3_args("SpatialDropout1D") == {"rate", "seed", "name", "dtype"}  # no **kwargs: no trainable
    assert keras3_args("LocallyConnected2D") is None and keras3_args("ReversibleEmbedding") is None
    assert keras3_args("NoSuchLayer") is None
    assert op_module("Any") == "keras.src.ops.numpy" and op_args("Any") == {"axis", "keepdims"}
    assert op_module("Dense") is None

