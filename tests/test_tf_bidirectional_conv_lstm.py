"""Live cross-checks of Bidirectional(ConvLSTM1D/2D/3D) against Keras 3 (.keras, .h5) and tf_keras (.h5).

channels_first models run in Keras through runtime/reference.py (XLA where TensorFlow lacks the NCHW CPU
kernels, e.g. with TF_ENABLE_ONEDNN_OPTS=0), as `kconvert --check` runs them."""

from __future__ import annotations

import os
from typing import Any

import pytest
from test_tf_conv_lstm import WRITERS, compare_live

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
pytestmark = pytest.mark.tf


def _bi(k: Any, inner: Any, mode: str | None, shape: tuple[int, ...], backward: Any = None) -> Any:
    inp = k.Input(shape)
    out = k.layers.Bidirectional(inner, merge_mode=mode, backward_layer=backward)(inp)
    return k.Model(inp, out)


def _concat_seq_2d(k: Any) -> Any:
    return _bi(k, k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True), "concat", (4, 6, 5, 2))


def _sum_last_1d(k: Any) -> Any:
    return _bi(k, k.layers.ConvLSTM1D(3, 3, dilation_rate=2, activation="relu"), "sum", (5, 9, 2))


def _ave_states_1d(k: Any) -> Any:
    layer = k.layers.ConvLSTM1D(2, 2, strides=2, return_sequences=True, return_state=True)
    return _bi(k, layer, "ave", (4, 9, 3))


def _mul_seq_3d(k: Any) -> Any:
    return _bi(k, k.layers.ConvLSTM3D(2, 2, padding="same", return_sequences=True), "mul", (3, 4, 5, 3, 2))


def _none_last_3d(k: Any) -> Any:
    return _bi(k, k.layers.ConvLSTM3D(2, 2, return_state=True), None, (3, 4, 4, 3, 2))


def _channels_first_concat_seq_2d(k: Any) -> Any:
    layer = k.layers.ConvLSTM2D(3, 3, data_format="channels_first", return_sequences=True, use_bias=False)
    return _bi(k, layer, "concat", (3, 2, 6, 5))


def _channels_first_concat_last_1d(k: Any) -> Any:
    return _bi(k, k.layers.ConvLSTM1D(3, 2, data_format="channels_first"), "concat", (4, 2, 7))


def _channels_first_sum_states_3d(k: Any) -> Any:
    layer = k.layers.ConvLSTM3D(2, 2, data_format="channels_first", padding="same", return_sequences=True,
                                return_state=True)
    return _bi(k, layer, "sum", (3, 2, 4, 3, 4))


def _backward_layer_2d(k: Any) -> Any:
    forward = k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True)
    backward = k.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True, go_backwards=True,
                                   recurrent_activation="hard_sigmoid")
    return _bi(k, forward, "concat", (3, 5, 4, 2), backward)


def _initial_state_2d(k: Any) -> Any:
    inp = k.Input((3, 5, 4, 2))
    states = [k.Input((5, 4, 3)) for _ in range(4)]  # forward h, c, then backward h, c
    layer = k.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True, return_state=True)
    out = k.layers.Bidirectional(layer, merge_mode="ave")(inp, initial_state=states)
    return k.Model([inp, *states], out)


MODELS: dict[str, tuple[Any, ...]] = {  # the builder, then each input's sample shape
    "concat_seq_2d": (_concat_seq_2d, (4, 6, 5, 2)),
    "sum_last_1d": (_sum_last_1d, (5, 9, 2)),
    "ave_states_1d": (_ave_states_1d, (4, 9, 3)),
    "mul_seq_3d": (_mul_seq_3d, (3, 4, 5, 3, 2)),
    "none_last_3d": (_none_last_3d, (3, 4, 4, 3, 2)),
    "channels_first_concat_seq_2d": (_channels_first_concat_seq_2d, (3, 2, 6, 5)),
    "channels_first_concat_last_1d": (_channels_first_concat_last_1d, (4, 2, 7)),
    "channels_first_sum_states_3d": (_channels_first_sum_states_3d, (3, 2, 4, 3, 4)),
    "backward_layer_2d": (_backward_layer_2d, (3, 5, 4, 2)),
    "initial_state_2d": (_initial_state_2d, (3, 5, 4, 2), (5, 4, 3), (5, 4, 3), (5, 4, 3), (5, 4, 3)),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_bidirectional_conv_lstm_matches_keras(tmp_path: Any, rng: Any, writer: str, model_name: str) -> None:
    module, suffix = WRITERS[writer]
    k = pytest.importorskip(module)
    build, *shapes = MODELS[model_name]
    compare_live(k, build, shapes, tmp_path / f"m{suffix}", rng)
