"""Keras recurrent cells -> the parameters of one ONNX RNN / GRU / LSTM direction.

Keras stores kernels as (features, gates * units) with gates side by side; ONNX wants
(gates * units, features) with its own gate order:
- LSTM: Keras i, f, c, o  ->  ONNX i, o, f, c;
- GRU:  Keras z, r, h     ->  ONNX z, r, h (same order);
- SimpleRNN: one gate.
ONNX splits the bias into an input part `Wb` and a recurrent part `Rb`. Keras has one bias, except
GRU with `reset_after=True`, whose (2, 3 * units) bias is [input bias, recurrent bias]: exactly ONNX
GRU with `linear_before_reset=1` (the recurrent bias sits inside r * (h @ R + Rb)). With
`reset_after=False` Keras applies r before the recurrent matmul and has no recurrent bias, which is
`linear_before_reset=0` with Rb = 0.

Activations map onto ONNX's recurrent activation vocabulary; a Keras activation that vocabulary
cannot express (swish, gelu, selu, ...) is refused by `parse_cell`, never approximated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.layers.activations import activation_name
from converter.layers.spec import Config, LayerSpec, parse_fields

ONNX_OP = {"SimpleRNN": "RNN", "GRU": "GRU", "LSTM": "LSTM"}
GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}
# Keras gate index for each ONNX gate position.
GATE_ORDER = {"SimpleRNN": (0,), "GRU": (0, 1, 2), "LSTM": (0, 3, 1, 2)}
CELL_WEIGHTS = ["kernel", "recurrent_kernel", "bias"]

# Keras activation -> (ONNX name, alpha, beta); None means the function takes no parameter.
_FIXED: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
}
SUPPORTED_ACTIVATIONS = sorted([*_FIXED, "hard_sigmoid"])
# hard_sigmoid's slope: Keras 2 clip(0.2 x + 0.5); Keras 3 relu6(x + 3) / 6 = clip(x / 6 + 0.5).
KERAS2_HARD_SIGMOID_SLOPE = 0.2
KERAS3_HARD_SIGMOID_SLOPE = 1.0 / 6.0


@dataclass(frozen=True)
class RecurrentSpec(LayerSpec):
    """SimpleRNN / GRU / LSTM, or one cell of `RNN(cell)` with the RNN's flags folded in."""

    cell_kind: str  # "SimpleRNN", "GRU" or "LSTM": which ONNX op and gate layout
    units: int
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    use_bias: bool = True
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False  # zero initial states, or states as graph inputs with --streaming (recurrent.py)
    unroll: bool = False  # a speed hint for Keras; the ONNX op is the same
    zero_output_for_mask: bool = False
    # GRU only; Keras < 2.1.3 GRUs predate the argument and all behave as reset_after=False.
    reset_after: bool = False
    time_major: bool = False
    hard_sigmoid_slope: float = KERAS2_HARD_SIGMOID_SLOPE

    @property
    def num_states(self) -> int:
        return 2 if self.cell_kind == "LSTM" else 1


@dataclass
class CellParams:
    """One direction of an ONNX recurrent op, in ONNX layout and gate order."""

    op: str
    units: int
    W: np.ndarray
    R: np.ndarray
    B: np.ndarray
    activations: list[str] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)
    linear_before_reset: int | None = None

    @property
    def num_states(self) -> int:
        return 2 if self.op == "LSTM" else 1


def _activation_arg(config: Config, key: str, default: str) -> str:
    """A missing activation is the layer's default; an explicit null is linear, as in Keras."""
    value: Any = config.raw.get(key, default)
    return activation_name(value)


def parse_cell(config: Config) -> RecurrentSpec:
    """The spec of a SimpleRNN / GRU / LSTM layer or cell config (`config.ctx.kind` names the layer class)."""
    kind, layer = config.ctx.kind, config.ctx.layer_name
    if not config.has("units"):
        raise UnsupportedLayerError(f"{kind} '{layer}' has no units", layer=layer, hint="the config is incomplete")
    spec = parse_fields(
        RecurrentSpec, config, cell_kind=kind,
        activation=_activation_arg(config, "activation", "tanh"),
        recurrent_activation=_activation_arg(config, "recurrent_activation", "sigmoid"),
        reset_after=kind == "GRU" and config.flag("reset_after", False),
        hard_sigmoid_slope=KERAS3_HARD_SIGMOID_SLOPE if config.ctx.keras3 else KERAS2_HARD_SIGMOID_SLOPE)
    for key, name in _activation_names(spec):
        if name not in _FIXED and name != "hard_sigmoid":
            raise UnsupportedLayerError(
                f"{kind} '{layer}' uses {key}={name!r}, which the ONNX {ONNX_OP[kind]} op cannot express",
                layer=layer, hint="recurrent activations ONNX supports: " + ", ".join(SUPPORTED_ACTIVATIONS))
    return spec


def cell_weight_names(spec: RecurrentSpec) -> list[str]:
    return CELL_WEIGHTS if spec.use_bias else CELL_WEIGHTS[:2]


def cell_weight_shapes(spec: RecurrentSpec, features: int | None) -> dict[str, tuple[int | None, ...]]:
    width = GATES[spec.cell_kind] * spec.units
    bias: tuple[int | None, ...] = (2, width) if spec.reset_after else (width,)
    return {"kernel": (features, width), "recurrent_kernel": (spec.units, width), "bias": bias}


def _activation_names(spec: RecurrentSpec) -> list[tuple[str, str]]:
    """(config key, Keras name) in ONNX order: f (gates), g (candidate), h (LSTM output)."""
    act, rec = spec.activation, spec.recurrent_activation
    if spec.cell_kind == "SimpleRNN":
        return [("activation", act)]
    if spec.cell_kind == "GRU":
        return [("recurrent_activation", rec), ("activation", act)]
    return [("recurrent_activation", rec), ("activation", act), ("activation", act)]


def _onnx_activation(name: str, hard_sigmoid_slope: float) -> tuple[str, float | None, float | None]:
    if name == "hard_sigmoid":
        return ("HardSigmoid", hard_sigmoid_slope, 0.5)
    return _FIXED[name]


def _gates_to_onnx(matrix: np.ndarray, kind: str) -> np.ndarray:
    """(rows, gates * units) Keras matrix -> (gates * units, rows) in ONNX gate order."""
    parts = np.split(np.asarray(matrix, dtype=np.float32), GATES[kind], axis=-1)
    result: np.ndarray = np.concatenate([parts[g] for g in GATE_ORDER[kind]], axis=-1).T
    return result


def cell_params(spec: RecurrentSpec, weights: dict[str, np.ndarray]) -> CellParams:
    """`weights` holds this cell's kernel / recurrent_kernel / bias (already unprefixed)."""
    kind, units = spec.cell_kind, spec.units
    width = GATES[kind] * units
    bias = weights.get("bias")
    if bias is None:
        wb, rb = np.zeros(width, np.float32), np.zeros(width, np.float32)
    elif np.ndim(bias) == 2:
        wb, rb = bias[0], bias[1]
    else:
        wb, rb = bias, np.zeros(width, np.float32)
    params = CellParams(
        op=ONNX_OP[kind], units=units, W=_gates_to_onnx(weights["kernel"], kind),
        R=_gates_to_onnx(weights["recurrent_kernel"], kind),
        B=np.concatenate([_gates_to_onnx(wb[None, :], kind)[:, 0], _gates_to_onnx(rb[None, :], kind)[:, 0]]),
        linear_before_reset=int(spec.reset_after) if kind == "GRU" else None)
    for _, name in _activation_names(spec):
        onnx_name, alpha, beta = _onnx_activation(name, spec.hard_sigmoid_slope)
        params.activations.append(onnx_name)
        if alpha is not None:
            params.alphas.append(alpha)
        if beta is not None:
            params.betas.append(beta)
    return params
