"""ConvLSTM1D / 2D / 3D as an ONNX Scan over time (ONNX has no convolutional recurrent op).

Keras' cell (`keras/src/layers/rnn/conv_lstm.py`), gates i, f, c, o split along the kernels' last axis:
    z = conv(x_t, kernel, strides, padding, dilation) + bias + conv(h, recurrent_kernel, 1, "same")
    i, f, o = recurrent_activation(z_i, z_f, z_o);  c = f * c + i * activation(z_c);  h = o * activation(c)
The input convolution does not depend on the state, so it runs once for every step at the same time
(batch and time merged into one Conv batch) before the loop; the Scan body holds only the recurrent
convolution and the gate arithmetic. Everything inside runs channels-first, (batch, channels, *space);
a channels_last layer transposes its input once and its outputs back. The layout pass leaves this
node alone: its time axis sits between batch and space, which the pass's channel-axis rule does not model.

Outputs follow Keras: the sequence (return_sequences) or the last h, then with return_state h and c.
go_backwards walks time from the end and returns the outputs in that (reversed) order, which is how a
Scan with a reversed scan input writes its scan outputs. `initial_state` tensors (h, c in the layer's
data_format) are read; masks are refused (Keras' ConvLSTM masks are rare and need a per-step select).
With `--streaming` (passes/streaming.py) those two states are graph inputs `<layer>/h_in`, `<layer>/c_in`
and the final ones outputs `<layer>/h_out`, `<layer>/c_out`, in Keras' state layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, OpGraph, Shape
from converter.ir.ops import ValueInfo
from converter.ir.shape import Dim
from converter.layers.activations import AXIS_ACTIVATIONS, apply_activation, parse_activation
from converter.layers.builder import OpBuilder
from converter.layers.conv import keras_to_onnx_kernel
from converter.layers.limits import check_elements
from converter.layers.recurrent import state_inputs
from converter.layers.registry import LAYERS, LayerHandler, expect_rank
from converter.layers.spec import Config, LayerSpec, parse_fields
from converter.layers.windows import (
    CHANNELS_FIRST,
    CHANNELS_LAST,
    parse_data_format,
    parse_padding,
    window_lengths,
    window_pads,
)

INT64_MAX = 2**63 - 1
PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class ConvLSTMSpec(LayerSpec):
    rank: int  # spatial axes: 1, 2 or 3
    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation_rate: tuple[int, ...]
    padding: str = "valid"
    data_format: str = CHANNELS_LAST
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    use_bias: bool = True
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False  # zero initial states, or states as graph inputs with --streaming

    @property
    def channels_first(self) -> bool:
        return self.data_format == CHANNELS_FIRST


def _activation(config: Config, key: str, default: str) -> str:
    """Known and elementwise (the gates are per element); a missing one is the layer's default."""
    name = parse_activation(config, key) if key in config.raw else default
    if name in AXIS_ACTIVATIONS:
        raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' uses {key}={name!r}",
                                    layer=config.ctx.layer_name, hint="use an elementwise activation")
    return name


def parse_conv_lstm(config: Config, rank: int) -> ConvLSTMSpec:
    data_format, padding = parse_data_format(config), parse_padding(config, PADDINGS)
    geometry = {"kernel_size": config.ints("kernel_size", rank), "strides": config.ints("strides", rank, 1),
                "dilation_rate": config.ints("dilation_rate", rank, 1)}
    activations = {key: _activation(config, key, default)
                   for key, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid"))}
    return parse_fields(ConvLSTMSpec, config, rank=rank, data_format=data_format, padding=padding,
                        **geometry, **activations)


def _split_input(node: Node, spec: ConvLSTMSpec, shape: Shape) -> tuple[int, list[int]]:
    """(channels, spatial dims) of the (batch, time, ...) input; Keras needs them all static."""
    axes = ", ".join(f"dim{i + 1}" for i in range(spec.rank))
    meaning = f"(batch, time, channels, {axes})" if spec.channels_first else f"(batch, time, {axes}, channels)"
    expect_rank(node, shape, spec.rank + 3, meaning)
    channels, spatial = (shape[2], shape[3:]) if spec.channels_first else (shape[-1], shape[2:-1])
    dims = [d for d in (channels, *spatial) if isinstance(d, int)]
    if len(dims) != len(spatial) + 1:
        raise ShapeError(f"{node.kind} '{node.layer_name}' needs static channel and spatial dims, got {meaning} = "
                         f"{tuple(shape)}", layer=node.layer_name, hint="give the input a fully static sample shape")
    return dims[0], dims[1:]


def _out_spatial(node: Node, spec: ConvLSTMSpec, spatial: list[int]) -> list[int]:
    lengths = window_lengths(node, "kernel_size", spatial, spec.kernel_size, spec.strides, spec.dilation_rate,
                             spec.padding)
    return [n for n in lengths if isinstance(n, int)]  # all of them: static lengths give static outputs


def _keras_state_shape(spec: ConvLSTMSpec, batch: Dim, spatial: list[int]) -> Shape:
    return (batch, spec.filters, *spatial) if spec.channels_first else (batch, *spatial, spec.filters)


class ConvLSTM(LayerHandler[ConvLSTMSpec]):
    """An ONNX Scan whose body holds one Conv and the LSTM gates; see the module docstring."""

    keras3_args = ("filters kernel_size strides padding data_format dilation_rate activation "
                   "recurrent_activation use_bias kernel_initializer recurrent_initializer "
                   "bias_initializer unit_forget_bias kernel_regularizer recurrent_regularizer "
                   "bias_regularizer kernel_constraint recurrent_constraint bias_constraint dropout "
                   "recurrent_dropout seed return_sequences return_state go_backwards stateful unroll "
                   "zero_output_for_mask")
    recurrent_gates = ("recurrent_activation", "recurrent_activation", "activation", "recurrent_activation")
    affine_activations = ("recurrent_activation",)
    legacy_kernel_rank = {
        "ConvLSTM2D": 4,
    }

    required_arguments = ("filters", "kernel_size")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        # ConvLSTM1D reads (batch, steps, features)-like sequences an input_dim shorthand may spell.
        self.consumes_sequence = rank == 1

    def parse(self, config: Config) -> ConvLSTMSpec:
        return parse_conv_lstm(config, self.rank)

    def check(self, node: Node) -> None:
        if "mask" in node.call.tensor_kwargs:
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called with a mask",
                                        layer=node.layer_name, hint="masked ConvLSTM layers do not convert")

    # layers/traits.StreamsState: h and c, each shaped as Keras' state (the layer's data_format)
    def state_slots(self, node: Node) -> tuple[str, ...]:
        return ("h", "c")

    def state_shapes(self, node: Node) -> list[Shape]:
        spec, shape = self.spec(node), node.inputs[0].shape or ()
        _, spatial = _split_input(node, spec, shape)
        return [_keras_state_shape(spec, shape[0], _out_spatial(node, spec, spatial))] * 2

    def is_stateful(self, node: Node) -> bool:
        return self.spec(node).stateful

    def has_initial_states(self, node: Node) -> bool:
        return bool(state_inputs(node, [t.name for t in node.inputs]))

    def return_states(self, node: Node) -> None:
        node.spec = self.spec(node).replace(return_state=True)

    def weight_names(self, node: Node) -> list[str]:
        names = ["kernel", "recurrent_kernel", "bias"]
        return names if self.spec(node).use_bias else names[:2]

    def weight_shapes(self, node: Node, input_shapes: list[Shape]) -> dict[str, tuple[int | None, ...]]:
        spec = self.spec(node)
        channels, _ = _split_input(node, spec, input_shapes[0])
        kernel, filters = spec.kernel_size, spec.filters
        return {"kernel": (*kernel, channels, 4 * filters), "recurrent_kernel": (*kernel, filters, 4 * filters),
                "bias": (4 * filters,)}

    def num_outputs(self, node: Node) -> int:
        # A node whose parse was refused keeps a bare spec; the graph builder still asks (one output then).
        spec = node.spec
        return 3 if isinstance(spec, ConvLSTMSpec) and spec.return_state else 1

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        spec, shape = self.spec(node), input_shapes[0]
        _, spatial = _split_input(node, spec, shape)
        out_spatial = _out_spatial(node, spec, spatial)
        check_elements(node, (spec.filters, *out_spatial), "a zero initial state", "filters and input shape")
        state = _keras_state_shape(spec, shape[0], out_spatial)
        _check_initial_states(node, input_shapes[1:], state)
        out = (state[0], shape[1], *state[1:]) if spec.return_sequences else state
        return [out] + [state] * (self.num_outputs(node) - 1)

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        spec = self.spec(node)
        rank, filters = spec.rank, spec.filters
        channels, spatial = _split_input(node, spec, node.inputs[0].shape or ())
        out_spatial = _out_spatial(node, spec, spatial)
        last = not spec.channels_first
        x = b.transpose(inputs[0], [0, 1, rank + 2, *range(2, rank + 2)]) if last else inputs[0]
        gates = _input_convolution(node, spec, b, x, channels, spatial, out_spatial)
        given = state_inputs(node, inputs)
        to_cf = [0, rank + 1, *range(1, rank + 1)]
        init = [b.transpose(s, to_cf) if last else s for s in given] or _zero_states(b, x, filters, out_spatial)
        outs = _scan(node, spec, b, gates, init, out_spatial)
        to_cl = [0, *range(2, rank + 2), 1]
        seq_to_cl = [0, 1, *range(3, rank + 3), 2]
        if spec.return_sequences:
            y = b.transpose(outs[2], seq_to_cl) if last else outs[2]
        else:  # an Identity keeps the output and the h state two values (each becomes a graph output)
            y = b.transpose(outs[0], to_cl) if last else b.op("Identity", outs[0])
        if not spec.return_state:
            return [y]
        return [y, *(b.transpose(s, to_cl) if last else s for s in outs[:2])]


# By rank: Bidirectional(ConvLSTM) (bidirectional_conv.py) emits each direction with the same handler.
CONV_LSTM = {rank: ConvLSTM(rank=rank) for rank in (1, 2, 3)}
for _rank, _handler in CONV_LSTM.items():
    LAYERS.add(f"ConvLSTM{_rank}D", _handler)


def _check_initial_states(node: Node, given: list[Shape], state: Shape) -> None:
    """`initial_state` is [h, c], each of the state's shape (masks are refused, so every extra input is one)."""
    fits = all(len(g) == len(state) and all(not isinstance(a, int) or not isinstance(b, int) or a == b
                                            for a, b in zip(g[1:], state[1:])) for g in given)
    if given and (len(given) != 2 or not fits):
        raise ShapeError(f"{node.kind} '{node.layer_name}' gets initial states of shapes {[tuple(g) for g in given]}; "
                         f"it needs [h, c], each of shape {tuple(state)}", layer=node.layer_name,
                         hint="pass initial_state=[h, c] shaped like the layer's output state")


def _input_convolution(node: Node, spec: ConvLSTMSpec, b: OpBuilder, x: str, channels: int, spatial: list[int],
                       out_spatial: list[int]) -> str:
    """(batch, time, C, *space) -> (batch, time, 4 * filters, *out_space): every step's input gates."""
    kernel, strides, dilations = spec.kernel_size, spec.strides, spec.dilation_rate
    filters = spec.filters
    merged = b.reshape(x, [-1, channels, *spatial])
    pads = window_pads(spatial, kernel, strides, dilations, spec.padding)
    args = [merged, b.weight("kernel", keras_to_onnx_kernel(node.weights["kernel"]))]
    if spec.use_bias:
        args.append(b.weight("bias"))
    conv = b.op("Conv", *args, kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                pads=pads)
    lead = b.slice(b.op("Shape", x), [0], [2], [0])
    shape = b.op("Concat", lead, b.ints([4 * filters, *out_spatial], "gate_dims"), axis=0)
    return b.op("Reshape", conv, shape)


def _zero_states(b: OpBuilder, x: str, filters: int, out_spatial: list[int]) -> list[str]:
    batch = b.slice(b.op("Shape", x), [0], [1], [0])
    shape = b.op("Concat", batch, b.ints([filters, *out_spatial], "state_dims"), axis=0)
    zeros = b.const(np.zeros((1, filters, *out_spatial), np.float32), "zero_state")
    state = b.op("Expand", zeros, shape)
    return [state, state]


def _scan(node: Node, spec: ConvLSTMSpec, b: OpBuilder, gates: str, init: list[str],
          out_spatial: list[int]) -> list[str]:
    """Scan over axis 1 of `gates`; returns [h_T, c_T, (h sequence (batch, time, F, *space))]."""
    sequences = spec.return_sequences
    body = _body(node, spec, b, out_spatial)
    return list(b.multi("Scan", *init, gates, outputs=3 if sequences else 2, num_scan_inputs=1, scan_input_axes=[1],
                     body=body, scan_input_directions=[1] if spec.go_backwards else None,
                     scan_output_axes=[1] if sequences else None))


def _body(node: Node, spec: ConvLSTMSpec, b: OpBuilder, out_spatial: list[int]) -> OpGraph:
    """One step: (h, c, input gates) -> (h, c[, h]). Shares the outer graph's names (ONNX forbids a
    subgraph to shadow an outer name) and reads the recurrent kernel from the outer graph's initializers."""
    rank, kernel, filters, sequences = spec.rank, spec.kernel_size, spec.filters, spec.return_sequences
    recurrent = b.weight("recurrent_kernel", keras_to_onnx_kernel(node.weights["recurrent_kernel"]))
    graph = OpGraph(name=b.graph.unique(f"{b.scope}/step"), opset=b.opset, names=b.graph.names)
    s = OpBuilder(graph)
    s.enter(node)
    state_shape: Shape = (None, filters, *out_spatial)
    h, c, x = (graph.unique(f"{b.scope}/step/{n}") for n in ("h_in", "c_in", "gates_in"))
    graph.inputs = [ValueInfo(h, state_shape, "float32"), ValueInfo(c, state_shape, "float32"),
                    ValueInfo(x, (None, 4 * filters, *out_spatial), "float32")]
    pads = window_pads(out_spatial, kernel, [1] * rank, [1] * rank, "same")
    z = s.op("Add", x, s.op("Conv", h, recurrent, kernel_shape=list(kernel), pads=pads))
    zi, zf, zc, zo = s.split(z, [filters] * 4, axis=1)
    rec, act = spec.recurrent_activation, spec.activation
    i, f, o = (apply_activation(s, g, rec) for g in (zi, zf, zo))
    c_new = s.op("Add", s.op("Mul", f, c), s.op("Mul", i, apply_activation(s, zc, act)))
    h_new = s.op("Mul", o, apply_activation(s, c_new, act))
    outs = [s.op("Identity", h_new, name="h_out"), s.op("Identity", c_new, name="c_out")]
    if sequences:
        outs.append(s.op("Identity", h_new, name="y_out"))
    graph.outputs = [ValueInfo(name, state_shape, "float32") for name in outs]
    b.graph.initializers.update(graph.initializers)  # constants live in the outer graph (float16 casts them)
    graph.initializers.clear()
    return graph
