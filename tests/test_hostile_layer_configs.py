"""Malformed layer arguments (issue 9): every one ends in a KconvertError naming the layer and the argument,
with a hint, never a TypeError from deep inside a handler; values Keras itself accepts (integral floats,
Keras 1's 0/1 flags) convert to the right numbers. The table is `converter/keras/config_fields.py`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from k1models import k1layer, k1sequential, save_keras1_h5
from kmodels import functional, input_layer, layer, run_onnx, save_keras, sequential

import converter
from converter.errors import FormatError, KconvertError, ShapeError, UnsupportedLayerError, WeightsError

NAME = "victim"
DELETE = object()


def _w(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


# class -> (a valid config, the input shape without batch, the layer's weights)
BASES: dict[str, tuple[dict[str, Any], tuple[int, ...], list[np.ndarray]]] = {
    "Dense": ({"units": 4}, (3,), [_w(3, 4), _w(4)]),
    "Conv2D": ({"filters": 2, "kernel_size": [3, 3]}, (6, 6, 2), [_w(3, 3, 2, 2), _w(2)]),
    "Conv2DTranspose": ({"filters": 2, "kernel_size": [3, 3], "strides": [2, 2]}, (4, 4, 2), [_w(3, 3, 2, 2), _w(2)]),
    "LSTM": ({"units": 3}, (5, 2), [_w(2, 12), _w(3, 12), _w(12)]),
    "Embedding": ({"input_dim": 10, "output_dim": 4}, (5,), [_w(10, 4)]),
    "Reshape": ({"target_shape": [6, 2]}, (12,), []),
    "MaxPooling2D": ({"pool_size": [2, 2]}, (6, 6, 2), []),
    "ZeroPadding2D": ({"padding": [1, 1]}, (4, 4, 2), []),
    "Cropping2D": ({"cropping": [[1, 1], [1, 1]]}, (6, 6, 2), []),
    "UpSampling2D": ({"size": [2, 2]}, (4, 4, 2), []),
    "UpSampling3D": ({"size": [2, 2, 2]}, (2, 2, 2, 1), []),
    "Permute": ({"dims": [2, 1]}, (3, 4), []),
    "RepeatVector": ({"n": 3}, (4,), []),
    "BatchNormalization": ({"axis": -1}, (4,), [_w(4), _w(4), _w(4), np.ones(4, np.float32)]),
    "LayerNormalization": ({"axis": -1}, (4,), [_w(4), _w(4)]),
    "GroupNormalization": ({"groups": 2, "axis": -1}, (4,), [_w(4), _w(4)]),
    "Dropout": ({"rate": 0.5}, (4,), []),
    "Softmax": ({"axis": -1}, (4,), []),
    "Activation": ({"activation": "relu"}, (4,), []),
    "Rescaling": ({"scale": 0.5}, (4, 4, 3), []),
    "CategoryEncoding": ({"num_tokens": 4, "output_mode": "one_hot"}, (1,), []),
    "Resizing": ({"height": 4, "width": 4}, (8, 8, 3), []),
    "AdaptiveAveragePooling2D": ({"output_size": [2, 2]}, (4, 4, 2), []),
    "MelSpectrogram": ({"fft_length": 64, "sequence_length": 64, "sequence_stride": 32, "num_mel_bins": 8},
                       (256,), []),
    "Normalization": ({"axis": -1, "mean": [0.0, 1.0, 2.0], "variance": [1.0, 1.0, 1.0]}, (4, 3), []),
    "Flatten": ({"data_format": "channels_last"}, (2, 3), []),
    "LocallyConnected1D": ({"filters": 2, "kernel_size": [2]}, (5, 2), [_w(4, 4, 2), _w(4, 2)]),
}

NAN, INF = float("nan"), float("inf")
# (class, argument, value, error): one bad value per row
BAD = [
    *[("Dense", "units", v, FormatError) for v in (DELETE, None, "abc", [], {}, 0, -1, 2**40, NAN, 2.5, True, [[1]])],
    ("Dense", "activation", 5, FormatError),
    ("Dense", "activation", "no_such_activation", UnsupportedLayerError),
    ("Dense", "use_bias", "yes", FormatError),
    ("Dense", "use_bias", 2, FormatError),
    *[("Conv2D", "kernel_size", v, FormatError) for v in (DELETE, "abc", 0, [3, -1], [3, NAN], {}, [3.5, 3])],
    ("Conv2D", "kernel_size", [3, 3, 3], UnsupportedLayerError),  # the count does not fit the layer's rank
    ("Conv2D", "filters", "two", FormatError),
    ("Conv2D", "strides", 0, FormatError),
    ("Conv2D", "dilation_rate", 2.5, FormatError),
    ("Conv2D", "padding", 3, FormatError),
    ("Conv2D", "padding", "middle", UnsupportedLayerError),
    ("Conv2D", "data_format", 1, FormatError),
    ("Conv2D", "groups", 0, FormatError),
    ("Conv2DTranspose", "output_padding", [2, 2], FormatError),  # Keras: below the strides
    ("Conv2DTranspose", "strides", [70000, 70000], FormatError),  # an output no model has
    ("LSTM", "units", "x", FormatError),
    ("LSTM", "return_sequences", 2, FormatError),
    ("LSTM", "recurrent_activation", [], FormatError),
    ("LSTM", "dropout", 1.5, FormatError),
    ("Embedding", "input_dim", 0, FormatError),
    ("Embedding", "output_dim", "a", FormatError),
    ("Reshape", "target_shape", "abc", FormatError),
    ("Reshape", "target_shape", [2.5, 4], FormatError),
    ("Reshape", "target_shape", [5, 2], ShapeError),  # 12 values do not make 10
    ("MaxPooling2D", "pool_size", NAN, FormatError),
    ("MaxPooling2D", "pool_size", 0, FormatError),
    ("MaxPooling2D", "strides", [0, 0], FormatError),
    ("MaxPooling2D", "pool_size", [7, 7], ShapeError),  # larger than the 6x6 input: no output step
    ("ZeroPadding2D", "padding", -1, FormatError),
    ("ZeroPadding2D", "padding", [[1, 2, 3], [1, 1]], FormatError),
    ("ZeroPadding2D", "padding", "same", FormatError),
    ("ZeroPadding2D", "padding", [70000, 70000], FormatError),
    ("Cropping2D", "cropping", [[1, -1], [0, 0]], FormatError),
    ("UpSampling2D", "size", 0, FormatError),
    ("UpSampling2D", "size", "x", FormatError),
    ("UpSampling3D", "interpolation", "bilinear", UnsupportedLayerError),  # only UpSampling2D interpolates
    ("Permute", "dims", "ab", FormatError),
    ("Permute", "dims", [0, 1], FormatError),
    ("RepeatVector", "n", 0, FormatError),
    ("RepeatVector", "n", 2**31, FormatError),
    ("BatchNormalization", "epsilon", NAN, FormatError),
    ("BatchNormalization", "axis", "x", FormatError),
    ("BatchNormalization", "axis", 5, ShapeError),
    ("BatchNormalization", "center", "no", FormatError),
    ("LayerNormalization", "axis", [1, 1], ShapeError),
    ("GroupNormalization", "axis", [1, 1], ShapeError),
    ("GroupNormalization", "groups", 0, FormatError),
    ("Softmax", "axis", 5, ShapeError),
    ("Activation", "activation", {"no": "class"}, FormatError),
    ("Rescaling", "scale", [1.0, 2.0, 3.0, 4.0, 5.0], ShapeError),  # 5 values for 3 channels
    ("Rescaling", "offset", [[1.0], [1.0, 2.0]], ShapeError),  # ragged
    ("CategoryEncoding", "num_tokens", 2**30, FormatError),  # a one-hot range no model has
    ("CategoryEncoding", "num_tokens", INF, FormatError),
    ("Resizing", "height", 0, FormatError),
    ("Resizing", "height", 2**30, FormatError),
    ("AdaptiveAveragePooling2D", "output_size", [2**30, 2], FormatError),
    ("MelSpectrogram", "fft_length", 70000, FormatError),  # a DFT kernel of 70000 x 70002
    ("MelSpectrogram", "fft_length", 1024, ShapeError),  # reflecting 512 samples of a 256-sample input
    ("Normalization", "mean", [[0.0, 1.0], [0.0]], FormatError),  # ragged
    ("Normalization", "mean", [0.0, 1.0], FormatError),  # 2 values for 3 channels
    ("Normalization", "axis", 0, ShapeError),  # the batch axis
    ("Flatten", "data_format", "channels_middle", UnsupportedLayerError),
    ("Flatten", "data_format", ["channels_last"], FormatError),
    ("LocallyConnected1D", "implementation", 4, FormatError),
    ("LocallyConnected1D", "kernel_size", [9], ShapeError),  # wider than the 5 steps
    ("UpSampling2D", "interpolation", 7, FormatError),
]


def _build(tmp_path: Path, kind: str, field: str, value: Any) -> Path:
    config, shape, weights = BASES[kind]
    config = {**config, field: value}
    if value is DELETE:
        del config[field]
    return save_keras(tmp_path / "m.keras", sequential([layer(kind, NAME, **config)], shape), {NAME: weights})


def _refused(path: Path, error: type[KconvertError]) -> KconvertError:
    with pytest.raises(KconvertError) as info:
        converter.convert(path)
    assert type(info.value) is error, str(info.value)
    assert info.value.hint, "every refusal says what to do"
    return info.value


@pytest.mark.parametrize("kind, field, value, error", BAD,
                         ids=[f"{k}-{f}-{'deleted' if v is DELETE else repr(v)}" for k, f, v, _ in BAD])
def test_a_bad_argument_is_refused_by_name(tmp_path: Path, kind: str, field: str, value: Any,
                                           error: type[KconvertError]) -> None:
    err = _refused(_build(tmp_path, kind, field, value), error)
    assert NAME in str(err)
    if error is not WeightsError:
        assert field in str(err) or "values per sample" in str(err)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_every_base_config_converts(tmp_path: Path, kind: str) -> None:
    """The rows above change one argument of a config that converts."""
    config, shape, weights = BASES[kind]
    path = save_keras(tmp_path / "m.keras", sequential([layer(kind, NAME, **config)], shape), {NAME: weights})
    converter.convert(path)


def test_units_that_do_not_match_the_kernel_name_both_shapes(tmp_path: Path) -> None:
    err = _refused(_build(tmp_path, "Dense", "units", 5), WeightsError)
    assert "(3, 5)" in str(err) and "(3, 4)" in str(err)


def test_a_wrapped_layers_arguments_are_checked(tmp_path: Path) -> None:
    inner = layer("Dense", "inner", units="many")
    path = save_keras(tmp_path / "m.keras", sequential([layer("TimeDistributed", "td", layer=inner)], (5, 3)), {})
    err = _refused(path, FormatError)
    assert "inner" in str(err) and "units" in str(err)


def test_a_wrapper_without_a_layer_config_is_refused(tmp_path: Path) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("TimeDistributed", "td", layer="Dense")], (5, 3)), {})
    assert "layer" in str(_refused(path, FormatError))


@pytest.mark.parametrize("cell", [
    {"class_name": "LSTMCell", "config": {"name": "c", "units": "x"}},
    {"class_name": "LSTMCell", "config": {"name": "c"}},
    {"class_name": "StackedRNNCells", "config": {"cells": []}},
    {"class_name": "StackedRNNCells", "config": {"cells": [1, 2]}},
    {"class_name": "StackedRNNCells", "config": {"cells": [{"class_name": "GRUCell", "config": {"units": -2}}]}},
])
def test_rnn_cell_configs_are_checked(tmp_path: Path, cell: dict[str, Any]) -> None:
    path = save_keras(tmp_path / "m.keras", sequential([layer("RNN", "rnn", cell=cell)], (5, 2)), {})
    assert "rnn" in str(_refused(path, FormatError))


def test_grouped_query_attention_alias_needs_its_sizes(tmp_path: Path) -> None:
    """`GroupedQueryAttention` (a Keras 3 op node name) has the same required arguments as GroupQueryAttention."""
    gqa = layer("GroupedQueryAttention", NAME, num_query_heads=2, num_key_value_heads=1)
    config = functional([(input_layer("x", (3, 4)), []), (gqa, ["x", "x"])], ["x"], [NAME])
    assert "head_dim" in str(_refused(save_keras(tmp_path / "m.keras", config, {}), FormatError))


@pytest.mark.parametrize("axes, error", [(None, FormatError), (5, ShapeError), ([1, 1, 1], FormatError)])
def test_dot_axes(tmp_path: Path, axes: Any, error: type[KconvertError]) -> None:
    config = functional([(input_layer("a", (3,)), []), (input_layer("b", (3,)), []),
                         (layer("Dot", NAME, axes=axes), ["a", "b"])], ["a", "b"], [NAME])
    assert "axes" in str(_refused(save_keras(tmp_path / "m.keras", config, {}), error))


@pytest.mark.parametrize("axes", [[], [0], [5], [1, 1]])
def test_attention_axes_must_name_query_axes(tmp_path: Path, axes: list[int]) -> None:
    mha = layer("MultiHeadAttention", NAME, num_heads=1, key_dim=2, attention_axes=axes)
    weights = [_w(4, 1, 2), _w(1, 2), _w(4, 1, 2), _w(1, 2), _w(4, 1, 2), _w(1, 2), _w(1, 2, 4), _w(4)]
    config = functional([(input_layer("x", (3, 4)), []), (mha, ["x", "x"])], ["x"], [NAME])
    assert "attention_axes" in str(_refused(save_keras(tmp_path / "m.keras", config, {NAME: weights}), ShapeError))


@pytest.mark.parametrize("mode, kernel", [(1, (4, 6, 2)), (2, (5, 2, 3, 2)), (3, (9,))])
def test_locally_connected_weights_must_fit(tmp_path: Path, mode: int, kernel: tuple[int, ...]) -> None:
    """The stored kernel of each implementation mode is checked against its shape (it was indexed blindly)."""
    cfg = layer("LocallyConnected1D", NAME, filters=2, kernel_size=[2], implementation=mode)
    path = save_keras(tmp_path / "m.keras", sequential([cfg], (5, 2)), {NAME: [_w(*kernel), _w(4, 2)]})
    assert "kernel" in str(_refused(path, WeightsError))


def test_batch_normalization_axis_null_is_the_last_axis(tmp_path: Path) -> None:
    config, shape, weights = BASES["BatchNormalization"]
    path = save_keras(tmp_path / "m.keras", sequential([layer("BatchNormalization", NAME, axis=None)], shape),
                      {NAME: weights})
    x = _w(2, 4)
    (y,) = run_onnx(converter.convert(path), x)
    gamma, beta, mean, var = weights
    assert_close(y, (x - mean) / np.sqrt(var + 1e-3) * gamma + beta)


# ------------------------------------------------------------------ values Keras accepts, converted right


def test_integral_floats_are_ints(tmp_path: Path) -> None:
    """Old files write `units: 64.0` and `pool_size: [2.0, 2.0]`; Keras converts them with int()."""
    kernel, bias = _w(3, 4), _w(4)
    layers = [layer("Reshape", "r", target_shape=[1.0, 1.0, 3.0]), layer("Dense", "d", units=4.0),
              layer("UpSampling2D", "up", size=[2.0, 2.0]), layer("MaxPooling2D", "pool", pool_size=[2.0, 2.0],
                                                                   strides=2.0)]
    path = save_keras(tmp_path / "m.keras", sequential(layers, (3,)), {"d": [kernel, bias]})
    x = _w(2, 3)
    (y,) = run_onnx(converter.convert(path), x)
    assert y.shape == (2, 1, 1, 4)
    assert_close(y[:, 0, 0], x @ kernel + bias)


@pytest.mark.parametrize("flag", [0, 1])
def test_keras1_zero_one_flags_are_bools(tmp_path: Path, flag: int) -> None:
    """Keras 1 wrote some flags as 0 / 1: use_bias=0 stores no bias, return_sequences=1 returns every step."""
    kernel, recurrent = _w(2, 12), _w(3, 12)
    bias = [_w(12)] if flag else []
    lstm = layer("LSTM", NAME, units=3, use_bias=flag, return_sequences=flag)
    path = save_keras(tmp_path / "m.keras", sequential([lstm], (5, 2)), {NAME: [kernel, recurrent, *bias]})
    (y,) = run_onnx(converter.convert(path), _w(2, 5, 2))
    assert y.shape == ((2, 5, 3) if flag else (2, 3))


def test_normalised_values_reach_the_keras_writer(tmp_path: Path) -> None:
    """The upgrade path writes what the handlers read: ints, not the file's floats."""
    config = sequential([layer("Dense", "d", units=4.0)], (3,))
    path = save_keras(tmp_path / "m.keras", config, {"d": [_w(3, 4), _w(4)]})
    converter.save_keras(path, tmp_path / "out.keras")
    with zipfile.ZipFile(tmp_path / "out.keras") as archive:
        config = json.loads(archive.read("config.json"))
    (dense,) = [e for e in config["config"]["layers"] if e["class_name"] == "Dense"]
    assert dense["config"]["units"] == 4 and isinstance(dense["config"]["units"], int)


@pytest.mark.parametrize("kind, config", [("RandomErasing", {"scale": [0.02, 0.33]}),
                                          ("RandomPerspective", {"scale": 1.0}), ("Dropout", {"rate": 2.0})])
def test_inference_identity_arguments_are_not_read(tmp_path: Path, kind: str, config: dict[str, Any]) -> None:
    """Dropout and the Random* augmentations pass their input through at inference; their arguments (a
    `scale` that is a range in one, a number in another) are never read, so never refused."""
    path = save_keras(tmp_path / "m.keras", sequential([layer(kind, NAME, **config)], (4, 4, 3)), {})
    x = _w(2, 4, 4, 3)
    (y,) = run_onnx(converter.convert(path), x)
    assert_close(y, x)


def test_custom_layer_arguments_are_not_checked(tmp_path: Path) -> None:
    """A custom class's `units` means what its author says: it is reported unsupported, not malformed."""
    path = save_keras(tmp_path / "m.keras", sequential([layer("MyDense", NAME, units="many")], (3,)), {})
    with pytest.raises(UnsupportedLayerError, match="MyDense"):
        converter.convert(path)


def test_keras1_zero_padding_spellings(tmp_path: Path) -> None:
    """Keras 1.2's ZeroPadding2D took (top, bottom, left, right) or a dict of them; both pad as written."""
    pads = {"top_pad": 1, "bottom_pad": 0, "left_pad": 2, "right_pad": 3}
    config = k1sequential([
        k1layer("ZeroPadding2D", "zp_tuple", padding=[1, 0, 2, 3], batch_input_shape=[None, 2, 2, 1],
                dim_ordering="tf"),
        k1layer("ZeroPadding2D", "zp_dict", padding=pads, dim_ordering="tf"),
    ])
    x = _w(2, 2, 2, 1)
    (y,) = run_onnx(converter.convert(save_keras1_h5(tmp_path / "k1.h5", config, {})), x)
    once = np.pad(x, [(0, 0), (1, 0), (2, 3), (0, 0)])
    assert_close(y, np.pad(once, [(0, 0), (1, 0), (2, 3), (0, 0)]))


def test_keras1_dense_with_float_size_and_int_flag(tmp_path: Path) -> None:
    """`output_dim: 4.0` and `bias: 0` (a Keras 1 file's spellings) are units=4 and use_bias=False."""
    kernel = _w(3, 4)
    config = k1sequential([k1layer("Dense", "d", output_dim=4.0, bias=0, input_dim=3, batch_input_shape=[None, 3])])
    x = _w(2, 3)
    (y,) = run_onnx(converter.convert(save_keras1_h5(tmp_path / "k1.h5", config, {"d": [("W", kernel)]})), x)
    assert_close(y, x @ kernel)


def test_a_bicubic_upsampling_matrix_is_capped(tmp_path: Path) -> None:
    """TF's bicubic weights are built as (out, in) matrices here: a size that makes them absurd is refused."""
    cfg = layer("UpSampling2D", NAME, size=[70000, 70000], interpolation="bicubic")
    path = save_keras(tmp_path / "m.keras", sequential([cfg], (300, 4, 1)), {})
    assert "size" in str(_refused(path, FormatError))


@pytest.mark.parametrize("entry", [3, {"class_name": 5, "config": {}}, {"config": {"units": 2}}])
def test_a_layer_entry_without_a_class_name_is_refused(tmp_path: Path, entry: Any) -> None:
    """A layer entry that is not a `{"class_name": ..., "config": ...}` object (the layer list is rewritten
    after the archive is written: the test writers need well-formed entries)."""
    config = functional([(input_layer("x", (3,)), []), (layer("Dense", "d", units=2), ["x"])], ["x"], ["d"])
    save_keras(tmp_path / "ok.keras", config, {"d": [_w(3, 2), _w(2)]})
    config["config"]["layers"].append(entry)
    with zipfile.ZipFile(tmp_path / "ok.keras") as source, zipfile.ZipFile(tmp_path / "m.keras", "w") as target:
        for info in source.infolist():
            data = json.dumps(config).encode() if info.filename == "config.json" else source.read(info.filename)
            target.writestr(info.filename, data)
    _refused(tmp_path / "m.keras", FormatError)


def test_transpose_op_axes_are_a_permutation_not_a_dot_pair(tmp_path: Path) -> None:
    """`axes` means a contracted pair in Dot but a whole permutation in the Keras 3 op node ops.transpose."""
    config = functional([(input_layer("x", (2, 3, 4)), []), (layer("Transpose", NAME, axes=[0, 3, 1, 2]), ["x"])],
                        ["x"], [NAME])
    x = _w(2, 2, 3, 4)
    (y,) = run_onnx(converter.convert(save_keras(tmp_path / "m.keras", config, {})), x)
    assert_close(y, np.transpose(x, (0, 3, 1, 2)))


@pytest.mark.parametrize("kind, config", [
    ("LSTM", {"units": 3, "activation": "no_such_activation", "return_state": True}),
    ("Bidirectional", {"layer": layer("GRU", "g", units=3, activation="no_such_activation"), "merge_mode": None}),
])
def test_a_refused_multi_output_layer_is_listed_not_a_crash(tmp_path: Path, kind: str, config: dict[str, Any]) -> None:
    """Its spec never parsed, so its output count is unknown: the build goes on with one output and the
    refusal is reported with the others (exit 3), never as a kconvert bug."""
    model = functional([(input_layer("x", (4, 2)), []), (layer(kind, "rnn", **config), ["x"]),
                        (layer("Dense", "d", units=1), ["rnn"])], ["x"], ["d"])
    error = _refused(save_keras(tmp_path / "m.keras", model, {}), UnsupportedLayerError)
    assert "rnn" in str(error) and "no_such_activation" in str(error)
