"""Transposed convolutions: Conv1DTranspose, Conv2DTranspose, Conv3DTranspose -> ONNX ConvTranspose.

Keras runs tf.nn.conv_transpose with an output length O from its own rule (Keras 2's
deconv_output_length, Keras 3's compute_conv_transpose_output_shape; they agree):
  valid: O = (n - 1) s + k' + p, p = output_padding or max(k', s) - k'
  same:  O = n s without output_padding, else (n - 1) s + k' % 2 + p
(k' = dilated kernel). TensorFlow then takes O values of the full transposed result, of length
(n - 1) s + k', starting at the 'same' padding TF would give the forward conv of an O-long input:
max(full - O, 0) // 2. full - O does not depend on n, so the pads are static for any input length.
"""

from __future__ import annotations

from converter.errors import FormatError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.layers.builder import OpBuilder
from converter.layers.conv import ConvBase, channels_first_io, keras_to_onnx_kernel
from converter.layers.limits import check_output
from converter.layers.registry import LAYERS
from converter.layers.windows import activate, ints, join_shape, split_shape, static


def excess(kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None) -> int:
    """full - O: how much longer the full transposed result is than Keras' output (may be negative)."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return -(max(span, stride) - span if output_padding is None else output_padding)
    if output_padding is None:
        return span - stride
    return span - span % 2 - output_padding


def transpose_length(length: Dim, kernel: int, stride: int, dilation: int, padding: str,
                     output_padding: int | None) -> Dim:
    span = (kernel - 1) * dilation + 1
    extra = excess(kernel, stride, dilation, padding, output_padding)
    if isinstance(length, int):
        return (length - 1) * stride + span - extra
    # a symbolic length survives only where the output length equals it ('same', stride 1)
    return length if stride == 1 and extra == span - 1 else None


class ConvTranspose(ConvBase):
    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if node.attr("use_bias", True) else ["kernel"]

    def output_padding(self, node: Node) -> list[int | None]:
        if node.attrs.get("output_padding") is None:
            return [None] * self.rank
        return list(ints(node, "output_padding", self.rank, None))

    def check(self, node: Node) -> None:
        super().check(node)
        given = self.output_padding(node)
        if any(p is not None and p >= s for p, s in zip(given, self.strides(node))):
            raise FormatError(f"layer '{node.layer_name}': output_padding={node.attrs['output_padding']!r} must be "
                              f"less than the strides {self.strides(node)}", layer=node.layer_name,
                              hint="Keras refuses an output_padding that is not below the stride on every axis")

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        channels, _ = split_shape(node, input_shapes[0], self.rank, self.meaning())
        filters = int(node.attrs["filters"])
        return {"kernel": (*self.kernel(node), filters, static(channels)), "bias": (filters,)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[0]
        _, spatial = split_shape(node, shape, self.rank, self.meaning())
        padding = str(node.attr("padding", "valid"))
        out = [transpose_length(n, k, s, d, padding, p) for n, k, s, d, p in
               zip(spatial, self.kernel(node), self.strides(node), self.dilations(node), self.output_padding(node))]
        out_shape = join_shape(node, shape[0], int(node.attrs["filters"]), out)
        return [check_output(node, out_shape, "strides and kernel_size")]

    def pads(self, node: Node) -> tuple[list[int], list[int], list[int]]:
        """ONNX begins, ends and output_padding: crop `before` at the start, the rest (or extend) at the end."""
        padding = str(node.attr("padding", "valid"))
        begins, ends, extend = [], [], []
        for k, s, d, p in zip(self.kernel(node), self.strides(node), self.dilations(node), self.output_padding(node)):
            extra = excess(k, s, d, padding, p)
            before = max(extra, 0) // 2 if padding == "same" else 0
            begins.append(before)
            ends.append(max(extra - before, 0))
            extend.append(max(before - extra, 0))
        return begins, ends, extend

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        # Keras stores (k..., out, in); ONNX ConvTranspose wants (in, out, k...): the same permutation as Conv.
        weight = b.weight("kernel", keras_to_onnx_kernel(node.weights["kernel"]))
        bias = b.weight("bias") if "bias" in node.weights else None
        begins, ends, extend = self.pads(node)

        def body(x: str, lengths: list[Dim]) -> str:
            args = [x, weight] if bias is None else [x, weight, bias]
            return b.op("ConvTranspose", *args, kernel_shape=list(self.kernel(node)),
                        strides=list(self.strides(node)), dilations=list(self.dilations(node)),
                        pads=begins + ends, output_padding=extend if any(extend) else None)

        return [activate(node, b, channels_first_io(node, b, inputs[0], body))]


@LAYERS.register("Conv1DTranspose")
class Conv1DTranspose(ConvTranspose):
    rank = 1


@LAYERS.register("Conv2DTranspose")
class Conv2DTranspose(ConvTranspose):
    rank = 2


@LAYERS.register("Conv3DTranspose")
class Conv3DTranspose(ConvTranspose):
    rank = 3
