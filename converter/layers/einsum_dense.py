"""EinsumDense, and the einsum projection MultiHeadAttention reuses for its query/key/value/output.

An equation that is a plain matrix product in disguise (`abc,cde->abde`: the input's trailing axes
contracted with the kernel's leading axes) is emitted as Reshape + MatMul + Reshape, which every
runtime fuses well; anything else goes to ONNX Einsum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.quantized import Int8, int8_weight, parse_int8, quantize_input, rescale
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


# How a kernel array becomes an ONNX value: b.weight (float32) unless the caller keeps it int8.
KernelValue = Callable[[OpBuilder, str, np.ndarray], str]


def float_kernel(b: OpBuilder, key: str, kernel: np.ndarray) -> str:
    return b.weight(key, kernel)


def project(b: OpBuilder, x: str, rank: int, eq: Equation, kernel: np.ndarray, bias: np.ndarray | None,
            prefix: str, kernel_value: KernelValue = float_kernel,
            rescale: Callable[[str], str] | None = None) -> str:
    """einsum(eq, x, kernel) + bias, with the bias right-aligned to the output as Keras adds it;
    `rescale` (an int8 layer's) applies to the product before the bias, as in Keras' _int8_call."""
    y = _as_matmul(b, x, rank, eq, kernel, prefix, kernel_value)
    if y is None:
        y = b.op("Einsum", x, kernel_value(b, f"{prefix}kernel", kernel), equation=eq.text)
    if rescale is not None:
        y = rescale(y)
    if bias is not None:
        y = b.op("Add", y, b.weight(f"{prefix}bias", bias))
    return y


def _as_matmul(b: OpBuilder, x: str, rank: int, eq: Equation, kernel: np.ndarray, prefix: str,
               kernel_value: KernelValue) -> str | None:
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
    y = b.op("MatMul", x, kernel_value(b, f"{prefix}kernel", np.reshape(kernel, (q_size, int(np.prod(r_dims))))))
    return b.reshape(y, [0] * lead + r_dims) if len(r_dims) != 1 else y


@dataclass(frozen=True)
class EinsumDenseSpec(LayerSpec):
    equation: Equation
    activation: str = "linear"
    has_bias: bool = False  # `bias_axes` names at least one output axis
    int8: Int8 | None = None  # Keras 3 model.quantize("int8"): int8 kernel + kernel_scale (layers/quantized.py)


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
        int8 = parse_int8(config)
        if int8 is None and config.value("quantization_mode"):
            raise UnsupportedLayerError(f"EinsumDense '{layer}' is quantized in mode "
                                        f"{config.value('quantization_mode')!r}", layer=layer,
                                        hint="save the float model")
        return EinsumDenseSpec(equation=equation, activation=activation, has_bias=bool(config.value("bias_axes")),
                               int8=int8)

    def weight_names(self, node: Node) -> list[str]:
        # Keras' variable_serialization_spec: int8 saves kernel, bias (when used), kernel_scale.
        names = ["kernel", "bias"] if self.spec(node).has_bias else ["kernel"]
        return names + ["kernel_scale"] if self.spec(node).int8 else names

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        eq = self.spec(node).equation
        shape = input_shapes[0]
        if eq.elided(len(shape)) < 0 or (eq.elided(len(shape)) and not (eq.left_elided or eq.right_elided)):
            raise ShapeError(f"EinsumDense '{node.layer_name}': equation {eq.text!r} does not fit an input "
                             f"of rank {len(shape)}", layer=node.layer_name,
                             hint="the equation's input term names one letter per input axis (or '...')")
        return [eq.output_shape(shape, tuple(node.weights["kernel"].shape))]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        rank = len(node.inputs[0].shape or ())
        if spec.int8 is not None:
            y = _int8_project(node, b, inputs[0], rank, spec.equation, spec.int8)
        else:
            y = project(b, inputs[0], rank, spec.equation, node.weights["kernel"], node.weights.get("bias"), "")
        return [apply_activation(b, y, spec.activation)]


def _int8_project(node: Node, b: OpBuilder, x: str, rank: int, eq: Equation, int8: Int8) -> str:
    """EinsumDense._int8_call: x quantized over its contracted axes, einsum of the integers, divided by
    inputs_scale * kernel_scale (the kernel scale is saved already broadcastable to the output)."""
    x_labels, out_labels = _full_labels(eq, rank)
    input_scale = None
    if int8.inputs is not None:
        reduced = [i for i, label in enumerate(x_labels) if label not in out_labels]
        x, keepdims_scale = quantize_input(b, x, reduced, int8.inputs)
        input_scale = _align_to_output(b, keepdims_scale, x_labels, out_labels)
    kernel_scale = b.weight("kernel_scale")
    return project(b, x, rank, eq, node.weights["kernel"], node.weights.get("bias"), "", int8_weight,
                   lambda product: rescale(b, product, kernel_scale, input_scale))


def _full_labels(eq: Equation, rank: int) -> tuple[str, str]:
    """The input's and the output's labels with the "..." axes named (digits: never an equation letter)."""
    elided = "".join(str(i) for i in range(eq.elided(rank)))
    if eq.left_elided:
        return elided + eq.x, elided + eq.out
    if eq.right_elided:
        return eq.x + elided, eq.out + elided
    return eq.x, eq.out


def _align_to_output(b: OpBuilder, scale: str, x_labels: str, out_labels: str) -> str:
    """A scale with the input's contracted axes kept as 1, moved onto the output's axes (Keras'
    _adjust_scale_for_quant): drop the contracted axes, order the rest as the output does, and add
    a 1 for each output axis the kernel brings."""
    reduced = [i for i, label in enumerate(x_labels) if label not in out_labels]
    kept = [label for label in x_labels if label in out_labels]
    if reduced:
        scale = b.squeeze(scale, reduced)
    order = [label for label in out_labels if label in kept]
    if order != kept:
        scale = b.op("Transpose", scale, perm=[kept.index(label) for label in order])
    new_axes = [i for i, label in enumerate(out_labels) if label not in kept]
    return b.unsqueeze(scale, new_axes) if new_axes else scale
