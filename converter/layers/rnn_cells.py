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
cannot express (swish, gelu, selu, ...) is refused by `check_cell`, never approximated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converter.errors import UnsupportedLayerError
from converter.ir import Node
from converter.layers.activations import activation_name

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


def cell_weight_names(node: Node) -> list[str]:
    return CELL_WEIGHTS if node.attr("use_bias", True) else CELL_WEIGHTS[:2]


def reset_after(node: Node) -> bool:
    # Keras < 2.1.3 GRUs predate the argument and all behave as reset_after=False.
    return node.kind == "GRU" and bool(node.attr("reset_after", False))


def cell_weight_shapes(node: Node, features: int | None) -> dict[str, tuple[int | None, ...]]:
    units = int(node.attrs["units"])
    width = GATES[node.kind] * units
    bias: tuple[int | None, ...] = (2, width) if reset_after(node) else (width,)
    return {"kernel": (features, width), "recurrent_kernel": (units, width), "bias": bias}


def _activation_names(node: Node) -> list[tuple[str, str]]:
    """(config key, Keras name) in ONNX order: f (gates), g (candidate), h (LSTM output)."""
    act = activation_name(node.attrs.get("activation", "tanh"))
    rec = activation_name(node.attrs.get("recurrent_activation", "sigmoid"))
    if node.kind == "SimpleRNN":
        return [("activation", act)]
    if node.kind == "GRU":
        return [("recurrent_activation", rec), ("activation", act)]
    return [("recurrent_activation", rec), ("activation", act), ("activation", act)]


def check_cell(node: Node) -> None:
    if node.kind not in ONNX_OP:
        raise UnsupportedLayerError(f"'{node.layer_name}' wraps a {node.kind}, not a SimpleRNN, GRU or LSTM",
                                    layer=node.layer_name, hint="only the built-in recurrent layers convert")
    if "units" not in node.attrs:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has no units", layer=node.layer_name,
                                    hint="the config is incomplete")
    for key, name in _activation_names(node):
        if name not in _FIXED and name != "hard_sigmoid":
            raise UnsupportedLayerError(
                f"{node.kind} '{node.layer_name}' uses {key}={name!r}, which the ONNX {ONNX_OP[node.kind]} op "
                "cannot express", layer=node.layer_name,
                hint="recurrent activations ONNX supports: " + ", ".join(SUPPORTED_ACTIVATIONS))


def _onnx_activation(name: str, keras_major: int) -> tuple[str, float | None, float | None]:
    if name == "hard_sigmoid":
        # Keras 2: clip(0.2 x + 0.5); Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 0.5).
        return ("HardSigmoid", 0.2 if keras_major < 3 else 1.0 / 6.0, 0.5)
    return _FIXED[name]


def _gates_to_onnx(matrix: np.ndarray, kind: str) -> np.ndarray:
    """(rows, gates * units) Keras matrix -> (gates * units, rows) in ONNX gate order."""
    parts = np.split(np.asarray(matrix, dtype=np.float32), GATES[kind], axis=-1)
    return np.concatenate([parts[g] for g in GATE_ORDER[kind]], axis=-1).T


def cell_params(node: Node, weights: dict[str, np.ndarray], keras_major: int) -> CellParams:
    """`weights` holds this cell's kernel / recurrent_kernel / bias (already unprefixed)."""
    kind, units = node.kind, int(node.attrs["units"])
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
        linear_before_reset=int(reset_after(node)) if kind == "GRU" else None)
    for _, name in _activation_names(node):
        onnx_name, alpha, beta = _onnx_activation(name, keras_major)
        params.activations.append(onnx_name)
        if alpha is not None:
            params.alphas.append(alpha)
        if beta is not None:
            params.betas.append(beta)
    return params
