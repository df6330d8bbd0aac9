"""LocallyConnected1D / LocallyConnected2D (Keras 2 / tf_keras only): convolutions with unshared weights.

Each output position has its own kernel. The three `implementation` modes store that one linear map
in three layouts (tf_keras/src/layers/locally_connected/):
1. (positions, prod(kernel_size) * in_channels, filters): one patch kernel per output position, the
   patch flattened in the data format's order (`backend.local_conv`);
2. the dense (input..., output...) matrix in data-format axis order, masked by the connectivity
   (`conv_utils.conv_kernel_mask`);
3. the non-zero entries of the (output, input) matrix, in sorted `conv_utils.conv_kernel_idxs` order.
All three become one dense (input size, output size) matrix here: y = reshape(flatten(x) @ W + bias).
The bias is added in flat output order in both data formats (tf_keras reshapes it, never transposes).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.layers.activations import apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.limits import check_elements
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import CHANNELS_FIRST, CHANNELS_LAST, parse_data_format, parse_padding


@dataclass(frozen=True, kw_only=True)
class LocallyConnectedSpec(LayerSpec):
    filters: int
    kernel_size: tuple[int, ...]  # one int per spatial axis
    strides: tuple[int, ...]
    padding: str = "valid"
    data_format: str = CHANNELS_LAST
    activation: str = "linear"
    use_bias: bool = True
    implementation: int = 1  # the stored kernel's layout (module docstring)


class Geometry:
    """Static sizes of one LocallyConnected call, in Keras' terms."""

    def __init__(self, node: Node, spec: LocallyConnectedSpec, shape: Shape) -> None:
        self.first = spec.data_format == CHANNELS_FIRST
        dims = list(shape[2:]) if self.first else list(shape[1:-1])
        channels = shape[1] if self.first else shape[-1]
        if not all(isinstance(d, int) for d in [*dims, channels]):
            raise ShapeError(f"{node.kind} '{node.layer_name}' needs a static input shape, got {shape}",
                             layer=node.layer_name, hint="its weights are sized for one input shape")
        self.in_dims = tuple(int(d) for d in dims)  # type: ignore[arg-type]
        self.cin = int(channels)  # type: ignore[arg-type]
        self.kernel = spec.kernel_size
        self.strides = spec.strides
        self.padding = spec.padding
        self.filters = spec.filters
        self.out_dims = tuple(_out_length(n, k, s, self.padding)
                              for n, k, s in zip(self.in_dims, self.kernel, self.strides))

    def in_index(self, position: tuple[int, ...], channel: int) -> int:
        if self.first:
            return int(np.ravel_multi_index((channel, *position), (self.cin, *self.in_dims)))
        return int(np.ravel_multi_index((*position, channel), (*self.in_dims, self.cin)))

    def out_index(self, position: tuple[int, ...], filt: int) -> int:
        if self.first:
            return int(np.ravel_multi_index((filt, *position), (self.filters, *self.out_dims)))
        return int(np.ravel_multi_index((*position, filt), (*self.out_dims, self.filters)))

    def out_shape(self) -> tuple[int, ...]:
        return (self.filters, *self.out_dims) if self.first else (*self.out_dims, self.filters)

    def sizes(self) -> tuple[int, int]:
        return self.cin * int(np.prod(self.in_dims)), self.filters * int(np.prod(self.out_dims))


def _out_length(length: int, kernel: int, stride: int, padding: str) -> int:
    """conv_utils.conv_output_length (no dilation)."""
    size = length if padding == "same" else length - kernel + 1
    return (size + stride - 1) // stride


def _connected(g: Geometry, out_position: tuple[int, ...]) -> list[range]:
    """conv_utils.conv_connected_inputs: the input window that feeds one output position."""
    ranges = []
    for d, (length, k, s) in enumerate(zip(g.in_dims, g.kernel, g.strides)):
        left = k // 2
        center = out_position[d] * s + (left if g.padding == "valid" else 0)
        ranges.append(range(max(0, center - left), min(length, center + k - left)))
    return ranges


def _pairs(g: Geometry) -> list[tuple[int, int]]:
    """conv_utils.conv_kernel_idxs: (output index, input index) of every weight, in its loop order."""
    pairs: list[tuple[int, int]] = []
    for out_pos in itertools.product(*(range(d) for d in g.out_dims)):
        for in_pos in itertools.product(*_connected(g, out_pos)):
            for c in range(g.cin):
                pairs.extend((g.out_index(out_pos, f), g.in_index(in_pos, c)) for f in range(g.filters))
    return pairs


def dense_matrix(kernel: np.ndarray, g: Geometry, mode: int) -> np.ndarray:
    """The stored kernel of any implementation mode as the (input size, output size) matrix."""
    in_size, out_size = g.sizes()
    if mode == 2:
        mask = np.zeros((*g.in_dims, *g.out_dims), np.float32)
        for out_pos in itertools.product(*(range(d) for d in g.out_dims)):
            for in_pos in itertools.product(*_connected(g, out_pos)):
                mask[in_pos + out_pos] = 1.0
        mask = mask.reshape((1, *g.in_dims, 1, *g.out_dims)) if g.first else \
            mask.reshape((*g.in_dims, 1, *g.out_dims, 1))
        return (kernel * mask).reshape(in_size, out_size).astype(np.float32)
    matrix = np.zeros((in_size, out_size), np.float32)
    if mode == 3:
        rows, cols = zip(*sorted(_pairs(g)))
        matrix[np.asarray(cols), np.asarray(rows)] = kernel
        return matrix
    for p, out_pos in enumerate(itertools.product(*(range(d) for d in g.out_dims))):
        starts = [o * s for o, s in zip(out_pos, g.strides)]
        window = list(itertools.product(*(range(st, st + k) for st, k in zip(starts, g.kernel))))
        if g.first:
            ins = [g.in_index(pos, c) for c in range(g.cin) for pos in window]
        else:
            ins = [g.in_index(pos, c) for pos in window for c in range(g.cin)]
        outs = [g.out_index(out_pos, f) for f in range(g.filters)]
        matrix[np.ix_(ins, outs)] = kernel[p]
    return matrix


class LocallyConnected(LayerHandler[LocallyConnectedSpec]):
    keras_availability = "keras2"

    argument_kinds = {"implementation": "one_to_three"}
    required_arguments = ("filters", "kernel_size")

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def parse(self, config: Config) -> LocallyConnectedSpec:
        fmt = parse_data_format(config)
        activation = parse_activation(config)
        mode = config.integer("implementation", 1)
        if mode not in (1, 2, 3):
            raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has implementation={mode}",
                                        layer=config.ctx.layer_name, hint="Keras knows implementations 1, 2 and 3")
        padding = parse_padding(config, ("valid",) if mode == 1 else ("valid", "same"))
        return parse_fields(LocallyConnectedSpec, config, data_format=fmt, activation=activation,
                            implementation=mode, padding=padding, kernel_size=config.ints("kernel_size", self.rank),
                            strides=config.ints("strides", self.rank, 1))

    def weight_names(self, node: Node) -> list[str]:
        return ["kernel", "bias"] if self.spec(node).use_bias else ["kernel"]

    def geometry(self, node: Node, shape: Shape) -> Geometry:
        expect_rank(node, shape, self.rank + 2, "(batch, ..., channels)")
        g = Geometry(node, self.spec(node), shape)
        if len(g.kernel) != self.rank or min(g.out_dims) <= 0:
            raise ShapeError(f"{node.kind} '{node.layer_name}': the kernel_size {g.kernel} does not fit the input "
                             f"{shape}", layer=node.layer_name,
                             hint=f"kernel_size needs {self.rank} ints, each at most the input's spatial size")
        check_elements(node, g.sizes(), "a dense (input, output) matrix", "filters and input shape")
        return g

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        """tf_keras' stored shapes per implementation mode (see the module docstring)."""
        g = self.geometry(node, input_shapes[0])
        mode = self.spec(node).implementation
        if mode == 1:
            kernel: tuple[int, ...] = (math.prod(g.out_dims), math.prod(g.kernel) * g.cin, g.filters)
        elif mode == 2:
            kernel = (g.cin, *g.in_dims, g.filters, *g.out_dims) if g.first else \
                (*g.in_dims, g.cin, *g.out_dims, g.filters)
        else:
            per_axis = [sum(len(_connected(g, tuple(o if d == axis else 0 for d in range(self.rank)))[axis])
                            for o in range(g.out_dims[axis])) for axis in range(self.rank)]
            kernel = (g.cin * g.filters * math.prod(per_axis),)
        return {"kernel": kernel, "bias": (*g.out_dims, g.filters)}

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        g = self.geometry(node, input_shapes[0])
        return [(input_shapes[0][0], *g.out_shape())]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        g = Geometry(node, spec, node.inputs[0].shape or ())
        in_size, out_size = g.sizes()
        matrix = dense_matrix(np.asarray(node.weights["kernel"], np.float32), g, spec.implementation)
        y = b.op("MatMul", b.reshape(inputs[0], [-1, in_size]), b.weight("kernel", matrix))
        if "bias" in node.weights:
            y = b.op("Add", y, b.weight("bias", np.reshape(node.weights["bias"], (out_size,))))
        return [apply_activation(b, b.reshape(y, [-1, *g.out_shape()]), spec.activation)]


LAYERS.add("LocallyConnected1D", LocallyConnected(rank=1))
LAYERS.add("LocallyConnected2D", LocallyConnected(rank=2))
