"""EinsumDense, and the einsum projection MultiHeadAttention reuses for its query/key/value/output.

An equation that is a plain matrix product in disguise (`abc,cde->abde`: the input's trailing axes
contracted with the kernel's leading axes) is emitted as Reshape + MatMul + Reshape, which every
runtime fuses well; anything else goes to ONNX Einsum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.registry import LAYERS, LayerHandler
from converter.layers.spec import Config, LayerSpec

ELLIPSIS = "..."


@dataclass(frozen=True)
class Equation:
    x: str  # input spec without "..."
    kernel: str
    out: str  # output spec without "..."
    left_elided: bool  # "..." leads the input (and output)
    right_elided: bool  # "..." trails the input (and output)
    text: str

    @classmethod
    def parse(cls, text: str) -> Equation:
        lhs, out = text.replace(" ", "").split("->")
        x, kernel = lhs.split(",")
        return cls(x.replace(ELLIPSIS, ""), kernel, out.replace(ELLIPSIS, ""), x.startswith(ELLIPSIS),
                   x.endswith(ELLIPSIS) and not x.startswith(ELLIPSIS), text.replace(" ", ""))

    def elided(self, rank: int) -> int:
        return rank - len(self.x)

    def x_dim(self, char: str, shape: Shape) -> int | str | None:
        offset = self.elided(len(shape)) if self.left_elided else 0
        return shape[offset + self.x.index(char)]

    def output_shape(self, shape: Shape, kernel_shape: tuple[int, ...]) -> Shape:
        dims = tuple(self.x_dim(c, shape) if c in self.x else kernel_shape[self.kernel.index(c)] for c in self.out)
        elided = self.elided(len(shape))
        if self.left_elided:
            return (*shape[:elided], *dims)
        if self.right_elided:
            return (*dims, *shape[len(shape) - elided:])
        return dims


def check_equation(kind: str, layer: str, text: str) -> Equation:
    """The equation of layer `layer` (a `kind`), refused unless it is one Keras accepts."""
    try:
        eq = Equation.parse(text)
    except ValueError:
        raise UnsupportedLayerError(f"{kind} '{layer}' has equation {text!r}, which is not "
                                    "of the form 'input,kernel->output'", layer=layer,
                                    hint="Keras writes equations such as 'ab,bc->ac'") from None
    if ELLIPSIS in eq.kernel or not (eq.x + eq.kernel + eq.out).isalpha():
        raise UnsupportedLayerError(f"{kind} '{layer}' has equation {text!r}, which Keras "
                                    "itself does not accept", layer=layer)
    return eq


def project(b: OpBuilder, x: str, rank: int, eq: Equation, kernel: np.ndarray, bias: np.ndarray | None,
            prefix: str) -> str:
    """einsum(eq, x, kernel) + bias, with the bias right-aligned to the output as Keras adds it."""
    y = _as_matmul(b, x, rank, eq, kernel, prefix)
    if y is None:
        y = b.op("Einsum", x, b.weight(f"{prefix}kernel", kernel), equation=eq.text)
    if bias is not None:
        y = b.op("Add", y, b.weight(f"{prefix}bias", bias))
    return y


def _as_matmul(b: OpBuilder, x: str, rank: int, eq: Equation, kernel: np.ndarray, prefix: str) -> str | None:
    """`P Q, Q R -> P R`: flatten Q on both sides, MatMul, unflatten R; None when the pattern differs."""
    contracted = "".join(c for c in eq.x if c in eq.kernel and c not in eq.out)
    if not contracted or eq.right_elided or not eq.x.endswith(contracted) or not eq.kernel.startswith(contracted):
        return None
    kept, produced = eq.x[: len(eq.x) - len(contracted)], eq.kernel[len(contracted):]
    if eq.out != kept + produced or any(c in eq.kernel for c in kept) or any(c in eq.x for c in produced):
        return None
    lead = rank - len(contracted)  # kept axes, elided ones included: copied by Reshape's 0
    q_size = int(np.prod(kernel.shape[: len(contracted)]))
    r_dims = [int(d) for d in kernel.shape[len(contracted):]]
    if len(contracted) > 1:
        x = b.reshape(x, [0] * lead + [-1])
    y = b.op("MatMul", x, b.weight(f"{prefix}kernel", np.reshape(kernel, (q_size, int(np.prod(r_dims))))))
    return b.reshape(y, [0] * lead + r_dims) if len(r_dims) != 1 else y


@dataclass(frozen=True)
class EinsumDenseSpec(LayerSpec):
    equation: Equation
    activation: str = "linear"
    has_bias: bool = False  # `bias_axes` names at least one output axis


@LAYERS.register("EinsumDense")
class EinsumDense(LayerHandler[EinsumDenseSpec]):
    """activation(einsum(equation, x, kernel) + bias); the bias covers `bias_axes` of the output."""

    keras3_args = ("equation output_shape activation bias_axes kernel_initializer bias_initializer "
                   "kernel_regularizer bias_regularizer kernel_constraint bias_constraint lora_rank "
                   "lora_alpha gptq_unpacked_column_size quantization_config")
    affine_activations = ("activation",)

    required_arguments = ("equation", "output_shape")

    def parse(self, config: Config) -> EinsumDenseSpec:
        kind, layer = config.ctx.kind, config.ctx.layer_name
        activation = parse_activation(config)
        equation = check_equation(kind, layer, str(config.value("equation")))
        if config.value("lora_rank"):
            raise UnsupportedLayerError(f"EinsumDense '{layer}' has LoRA enabled",
                                        layer=layer, hint="merge the LoRA weights before saving")
        if config.value("quantization_config") or config.value("quantization_mode"):
            raise UnsupportedLayerError(f"EinsumDense '{layer}' is quantized", layer=layer,
                                        hint="save the float model")
        return EinsumDenseSpec(equation=equation, activation=activation, has_bias=bool(config.value("bias_axes")))

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if self.spec(node).has_bias else ["kernel"]

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        eq = self.spec(node).equation
        shape = input_shapes[0]
        if eq.elided(len(shape)) < 0 or (eq.elided(len(shape)) and not (eq.left_elided or eq.right_elided)):
            raise ShapeError(f"EinsumDense '{node.layer_name}': equation {eq.text!r} does not fit an input "
                             f"of rank {len(shape)}", layer=node.layer_name,
                             hint="the equation's input term names one letter per input axis (or '...')")
        return [eq.output_shape(shape, tuple(node.weights["kernel"].shape))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        eq = self.spec(node).equation
        y = project(b, inputs[0], len(node.inputs[0].shape or ()), eq, node.weights["kernel"],
                    node.weights.get("bias"), "")
        return [apply_activation(b, y, self.spec(node).activation)]
