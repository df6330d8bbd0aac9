"""Activation functions (by Keras name) and the Activation layer.

Every layer with an `activation=` argument emits it through `apply_activation`, so the whole
activation vocabulary lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converter.errors import UnsupportedLayerError
from converter.ir import Node
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec

ActivationFn = Callable[[OpBuilder, str, dict[str, Any]], str]
ACTIVATIONS: dict[str, ActivationFn] = {}
# Activations whose every output is >= 0 (the ZeroPadding -> MaxPooling fold relies on it).
NON_NEGATIVE = frozenset({"relu", "relu6", "sigmoid", "softplus", "softmax", "exponential"})


def activation(*names: str) -> Callable[[ActivationFn], ActivationFn]:
    def decorate(fn: ActivationFn) -> ActivationFn:
        for name in names:
            if name in ACTIVATIONS:
                raise ValueError(f"activation {name!r} registered twice")
            ACTIVATIONS[name] = fn
        return fn

    return decorate


@activation("linear", "identity")
def _linear(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return x


@activation("relu")
def _relu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    slope = float(kw.get("negative_slope") or 0.0)
    max_value, threshold = kw.get("max_value"), float(kw.get("threshold") or 0.0)
    if slope == 0.0 and threshold == 0.0:
        y = b.op("Relu", x)
        return y if max_value is None else b.op("Min", y, b.scalar(float(max_value), "max_value"))
    return relu_general(b, x, slope, max_value, threshold)


def relu_general(b: OpBuilder, x: str, slope: float, max_value: float | None, threshold: float) -> str:
    """Keras relu: x >= max -> max; threshold <= x < max -> x; else slope * (x - threshold)."""
    t = b.scalar(threshold, "threshold")
    below = b.op("Mul", b.op("Sub", x, t), b.scalar(slope, "negative_slope"))
    y = b.op("Where", b.op("Less", x, t), below, x)
    return y if max_value is None else b.op("Min", y, b.scalar(float(max_value), "max_value"))


@activation("relu6")
def _relu6(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Clip", x, b.scalar(0.0, "min"), b.scalar(6.0, "max"))


@activation("sigmoid")
def _sigmoid(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Sigmoid", x)


@activation("tanh")
def _tanh(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Tanh", x)


@activation("softmax")
def _softmax(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Softmax", x, axis=int(kw.get("axis", -1)))


@activation("log_softmax")
def _log_softmax(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("LogSoftmax", x, axis=int(kw.get("axis", -1)))


@activation("softplus")
def _softplus(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Softplus", x)


@activation("softsign")
def _softsign(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Softsign", x)


@activation("elu")
def _elu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Elu", x, alpha=float(kw.get("alpha", 1.0)))


@activation("selu")
def _selu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    # Keras' constants, written out so ONNX's float defaults cannot drift from them.
    return b.op("Selu", x, alpha=1.6732632423543772, gamma=1.0507009873554805)


@activation("exponential")
def _exponential(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Exp", x)


# Keras 2 defined hard_sigmoid as clip(0.2x + 0.5); Keras 3 as relu6(x + 3) / 6 = clip(x / 6 + 0.5).
# `parse_activation` decides which one a file means, from its Keras major, and names the decision:
# "hard_sigmoid" is Keras 3's, "hard_sigmoid_keras2" Keras 1/2's (a name no Keras config spells, so
# `apply_activation(b, x, spec.activation)` keeps its signature and needs no version).
HARD_SIGMOID = "hard_sigmoid"
HARD_SIGMOID_KERAS2 = "hard_sigmoid_keras2"
HARD_SIGMOID_SLOPE = {HARD_SIGMOID: 1.0 / 6.0, HARD_SIGMOID_KERAS2: 0.2}
# Names only `parse_activation` gives, never accepted from a config; each maps to Keras' spelling.
DECIDED_NAMES = {HARD_SIGMOID_KERAS2: HARD_SIGMOID}


@activation(HARD_SIGMOID)
def _hard_sigmoid(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("HardSigmoid", x, alpha=HARD_SIGMOID_SLOPE[HARD_SIGMOID], beta=0.5)


@activation(HARD_SIGMOID_KERAS2)
def _hard_sigmoid_keras2(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("HardSigmoid", x, alpha=HARD_SIGMOID_SLOPE[HARD_SIGMOID_KERAS2], beta=0.5)


@activation("hard_silu", "hard_swish")
def _hard_silu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Mul", x, b.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5))


@activation("swish", "silu")
def _swish(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Mul", x, b.op("Sigmoid", x))


@activation("mish")
def _mish(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    if b.opset >= 18:
        return b.op("Mish", x)
    return b.op("Mul", x, b.op("Tanh", b.op("Softplus", x)))


@activation("gelu")
def _gelu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    approximate = bool(kw.get("approximate", False))
    if b.opset >= 20:
        return b.op("Gelu", x, approximate="tanh" if approximate else "none")
    half_x = b.op("Mul", x, b.scalar(0.5, "half"))
    if approximate:
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = b.op("Pow", x, b.scalar(3.0, "three"))  # onnxruntime fuses this form (FastGelu), not x*x*x
        inner = b.op("Add", x, b.op("Mul", cube, b.scalar(0.044715, "coef")))
        t = b.op("Tanh", b.op("Mul", inner, b.scalar(0.7978845608028654, "sqrt_2_over_pi")))
    else:
        # x / sqrt(2), as Keras writes it: the form onnxruntime fuses into Gelu
        t = b.op("Erf", b.op("Div", x, b.scalar(1.4142135623730951, "sqrt2")))
    return b.op("Mul", half_x, b.op("Add", t, b.scalar(1.0, "one")))


@activation("keras_hub>gelu_approximate")
def _gelu_approximate(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    """Keras Hub's BERT and GPT-2 blocks: gelu's tanh form, saved under Keras Hub's registered name."""
    return _gelu(b, x, {"approximate": True})


@activation("leaky_relu")
def _leaky_relu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("LeakyRelu", x, alpha=float(kw.get("negative_slope", 0.2)))


@activation("log_sigmoid")
def _log_sigmoid(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    # log(sigmoid(x)) = -softplus(-x), stable for large |x|.
    return b.op("Neg", b.op("Softplus", b.op("Neg", x)))


@activation("tanh_shrink")
def _tanh_shrink(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Sub", x, b.op("Tanh", x))


@activation("hard_tanh")
def _hard_tanh(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Clip", x, b.scalar(-1.0, "min"), b.scalar(1.0, "max"))


@activation("soft_shrink")
def _soft_shrink(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Shrink", x, lambd=float(kw.get("threshold", 0.5)), bias=float(kw.get("threshold", 0.5)))


@activation("hard_shrink")
def _hard_shrink(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Shrink", x, lambd=float(kw.get("threshold", 0.5)), bias=0.0)


@activation("squareplus")
def _squareplus(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    # (x + sqrt(x^2 + b)) / 2 with Keras' default b = 4
    root = b.op("Sqrt", b.op("Add", b.op("Mul", x, x), b.scalar(float(kw.get("b", 4.0)), "b")))
    return b.op("Mul", b.op("Add", x, root), b.scalar(0.5, "half"))


@activation("sparse_plus")
def _sparse_plus(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    # 0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 between
    quad = b.op("Mul", b.op("Mul", b.op("Add", x, b.scalar(1.0, "one")), b.op("Add", x, b.scalar(1.0, "one2"))),
                b.scalar(0.25, "quarter"))
    mid = b.op("Where", b.op("Greater", x, b.scalar(1.0, "hi")), x, quad)
    return b.op("Where", b.op("Less", x, b.scalar(-1.0, "lo")), b.scalar(0.0, "zero"), mid)


@activation("celu")
def _celu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    return b.op("Celu", x, alpha=float(kw.get("alpha", 1.0)))


@activation("glu")
def _glu(b: OpBuilder, x: str, kw: dict[str, Any]) -> str:
    axis = int(kw.get("axis", -1))
    a, gate = b.multi("Split", x, axis=axis, outputs=2, num_outputs=2) if b.opset >= 18 else \
        b.multi("Split", x, axis=axis, outputs=2)
    return b.op("Mul", a, b.op("Sigmoid", gate))


def activation_name(value: Any) -> str:
    """Config value -> canonical activation name (None and '' mean linear)."""
    if value is None or value == "":
        return "linear"
    if isinstance(value, dict):
        value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    return str(value).lower()


def keras_activation_name(name: str) -> str:
    """The Keras spelling of a parsed activation name ("hard_sigmoid_keras2" is Keras' "hard_sigmoid"),
    for families that compare names with Keras' vocabulary."""
    return DECIDED_NAMES.get(name, name)


def decide_activation(name: str, keras_major: int) -> str:
    """A known Keras activation name as the computation the file's Keras means by it."""
    return HARD_SIGMOID_KERAS2 if name == HARD_SIGMOID and keras_major < 3 else name


def parse_activation(config: Config, key: str = "activation") -> str:
    """The canonical name of an activation argument, refused here when kconvert does not know it, and
    decided for the file's Keras major (see HARD_SIGMOID above): store it in the spec and hand it to
    `apply_activation`."""
    name = _known_activation(activation_name(config.value(key)), config.ctx.kind, config.ctx.layer_name)
    return decide_activation(name, config.ctx.keras_major)


def _known_activation(name: str, kind: str, layer: str) -> str:
    if name not in ACTIVATIONS or name in DECIDED_NAMES:
        raise UnsupportedLayerError(
            f"{kind} '{layer}' uses activation {name!r}, which kconvert does not know",
            layer=layer,
            hint="supported activations: " + ", ".join(sorted(set(ACTIVATIONS) - set(DECIDED_NAMES))),
        )
    return name


def apply_activation(b: OpBuilder, x: str, name: str, **kw: Any) -> str:
    """Emit the activation `name`, as `parse_activation` decided it for the file's Keras major."""
    return ACTIVATIONS[name](b, x, kw)


@dataclass(frozen=True)
class ActivationSpec(LayerSpec):
    activation: str = "linear"


@LAYERS.register("Activation")
class Activation(LayerHandler[ActivationSpec]):
    keras3_args = "activation"
    layout_agnostic = True
    passes_mask = True

    def parse(self, config: Config) -> ActivationSpec:
        return ActivationSpec(activation=parse_activation(config))

    def is_layout_agnostic(self, node: Node) -> bool:
        return self.spec(node).activation not in AXIS_ACTIVATIONS

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        return [apply_activation(b, inputs[0], self.spec(node).activation)]


# These act along the last axis, so they are not elementwise for the layout pass.
AXIS_ACTIVATIONS = frozenset({"softmax", "log_softmax", "glu"})
