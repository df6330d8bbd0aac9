"""Sliding-window arithmetic shared by convolution, pooling and spatial resampling layers.

Keras' rules (TensorFlow's, which Keras 3 reproduces on every backend): 'valid' keeps only full
windows; 'same' gives ceil(n / stride) outputs and pads the odd element at the end (ONNX SAME_UPPER);
'causal' (Conv1D) pads dilation * (kernel - 1) at the start only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim
from converter.ir.spec import S
from converter.layers.activations import AXIS_ACTIVATIONS, activation_name, apply_activation, check_activation
from converter.layers.builder import OpBuilder
from converter.layers.registry import expect_rank
from converter.layers.spec import Config

CHANNELS_LAST, CHANNELS_FIRST = "channels_last", "channels_first"
# Where check() records the format the file asked for; the layout pass later rewrites `data_format`.
KERAS_FORMAT = "keras_data_format"


def data_format(node: Node) -> str:
    value = node.attr("data_format", CHANNELS_LAST)
    if value not in (CHANNELS_LAST, CHANNELS_FIRST):
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has data_format={value!r}",
                                    layer=node.layer_name, hint="use channels_last or channels_first")
    return str(value)


def record_format(node: Node) -> None:
    """Remember the file's data_format before the layout pass switches the node to channels_first."""
    node.attrs.setdefault(KERAS_FORMAT, data_format(node))


def ints(node: Node, key: str, n: int, default: Any) -> tuple[int, ...]:
    """An int-or-tuple argument (kernel_size, strides, ...) as n ints."""
    value = node.attr(key, default)
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) == 1 and n > 1:
        values = values * n
    if len(values) != n or not all(isinstance(v, int) and v >= 0 for v in values):
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has {key}={value!r}; expected {n} ints",
                                    layer=node.layer_name, hint="fix the layer config")
    return tuple(int(v) for v in values)


def pairs(node: Node, key: str, n: int, default: Any) -> tuple[tuple[int, int], ...]:
    """ZeroPadding / Cropping amounts: int, n ints (symmetric), or n (before, after) pairs."""
    value = node.attr(key, default)
    if isinstance(value, int):
        value = [value] * n
    items = list(value)
    if n == 1 and len(items) == 2 and all(isinstance(v, int) for v in items):
        items = [items]
    if len(items) != n:
        raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has {key}={value!r}; expected {n} entries",
                                    layer=node.layer_name, hint="fix the layer config")
    out = []
    for item in items:
        pair = [item, item] if isinstance(item, int) else list(item)
        if len(pair) != 2 or not all(isinstance(v, int) and v >= 0 for v in pair):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has {key}={value!r}",
                                        layer=node.layer_name, hint="amounts must be non-negative ints")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def split_shape(node: Node, shape: Shape, rank: int, meaning: str) -> tuple[Dim, list[Dim]]:
    """(channels, spatial dims) of a (batch, ..., channels) or (batch, channels, ...) input."""
    expect_rank(node, shape, rank + 2, meaning)
    if data_format(node) == CHANNELS_FIRST:
        return shape[1], list(shape[2:])
    return shape[-1], list(shape[1:-1])


def join_shape(node: Node, batch: Dim, channels: Dim, spatial: Sequence[Dim]) -> Shape:
    if data_format(node) == CHANNELS_FIRST:
        return (batch, channels, *spatial)
    return (batch, *spatial, channels)


def static(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) else None


def out_length(length: Dim, kernel: int, stride: int, dilation: int, padding: str) -> Dim:
    """Keras' output length of a window op; a symbolic length stays symbolic where it is unchanged."""
    span = (kernel - 1) * dilation + 1
    if padding in ("same", "causal") and stride == 1:
        return length
    if not isinstance(length, int):
        return None
    if padding in ("same", "causal"):
        return -(-length // stride)
    return max((length - span) // stride + 1, 0)


def window_lengths(node: Node, key: str, lengths: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int], padding: str) -> list[Dim]:
    """`out_length` per axis; a window that does not fit the input (no output step) is refused, as Keras
    refuses it when building the layer (ONNX would get a zero-sized tensor)."""
    out = [out_length(n, k, s, d, padding) for n, k, s, d in zip(lengths, kernel, strides, dilations)]
    if any(isinstance(n, int) and n <= 0 for n in out):
        raise ShapeError(f"{node.kind} '{node.layer_name}': its {key} {tuple(kernel)} (dilation "
                         f"{tuple(dilations)}) does not fit its input of spatial size {tuple(lengths)}",
                         layer=node.layer_name, hint="the input is smaller than the kernel: use padding='same' or "
                         "a larger input")
    return out


def window_pads(lengths: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], padding: str) -> list[int] | None:
    """ONNX `pads` (all begins, then all ends); None when 'same' needs the runtime length (SAME_UPPER)."""
    begins, ends = [], []
    for length, k, s, d in zip(lengths, kernel, strides, dilations):
        span = (k - 1) * d + 1
        if padding == "valid":
            total, before = 0, 0
        elif padding == "causal":
            total, before = span - 1, span - 1
        elif s == 1:
            total, before = span - 1, (span - 1) // 2
        elif isinstance(length, int):
            total = max((-(-length // s) - 1) * s + span - length, 0)
            before = total // 2
        else:
            return None
        begins.append(before)
        ends.append(total - before)
    return begins + ends


def pad_attrs(pads: list[int] | None) -> dict[str, Any]:
    return {"auto_pad": "SAME_UPPER"} if pads is None else {"pads": pads}


def check_padding(node: Node, allowed: Sequence[str]) -> str:
    padding = str(node.attr("padding", "valid")).lower()
    if padding not in allowed:
        raise UnsupportedLayerError(
            f"{node.kind} '{node.layer_name}' has padding={padding!r}", layer=node.layer_name,
            hint="supported: " + ", ".join(allowed))
    return padding


def check_conv_common(node: Node) -> None:
    """Config checks every convolution shares; also records the file's data_format."""
    record_format(node)
    check_activation(node)


def activate(node: Node, b: OpBuilder, y: str) -> str:
    """The fused `activation=`; axis activations (softmax) act on Keras' last axis, wherever it now is."""
    name = activation_name(node.attrs.get("activation"))
    if name not in AXIS_ACTIVATIONS:
        return apply_activation(b, y, node.attrs.get("activation"))
    moved = node.attr(KERAS_FORMAT, data_format(node)) != data_format(node)
    return apply_activation(b, y, node.attrs.get("activation"), axis=1 if moved else -1)


# --------------------------------------------------------------------------------------------------
# Spec-based helpers: families with a typed spec parse these once and pass the values, never the node.
# --------------------------------------------------------------------------------------------------


def parse_data_format(config: Config) -> str:
    """`data_format`, refused (with `data_format`'s words) unless Keras knows it."""
    value = config.value("data_format", CHANNELS_LAST)
    if value not in (CHANNELS_LAST, CHANNELS_FIRST):
        raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has data_format={value!r}",
                                    layer=config.ctx.layer_name, hint="use channels_last or channels_first")
    return str(value)


def parse_padding(config: Config, allowed: Sequence[str]) -> str:
    """`padding`, lower-cased, refused (with `check_padding`'s words) unless it is one of `allowed`."""
    padding = config.text("padding", "valid").lower()
    if padding not in allowed:
        raise UnsupportedLayerError(
            f"{config.ctx.kind} '{config.ctx.layer_name}' has padding={padding!r}", layer=config.ctx.layer_name,
            hint="supported: " + ", ".join(allowed))
    return padding


def node_data_format(node: Node) -> str:
    """The format a node computes in now: its spec's `data_format` when its family has a typed one
    (the layout pass rewrites it there), else the config's (families not yet on specs)."""
    value = getattr(with_switched_format(node, node.spec), "data_format", None)
    return str(value) if value is not None else data_format(node)


def with_switched_format(node: Node, spec: S) -> S:
    """`spec`, channels_first when the node's config was switched to channels_first after parse.

    Transitional: a wrapper's channels-first twin of its child (layers/wrappers.runnable_child) still
    switches the config only, not the spec; the layout pass's switch changes both, so otherwise the
    two agree and the spec is returned unchanged."""
    switched = node.attrs.get("data_format") == CHANNELS_FIRST and getattr(spec, "data_format", None) == CHANNELS_LAST
    return spec.replace(data_format=CHANNELS_FIRST) if switched else spec


def split_spatial(node: Node, fmt: str, shape: Shape, rank: int, meaning: str) -> tuple[Dim, list[Dim]]:
    """`split_shape` for a known format: (channels, spatial dims)."""
    expect_rank(node, shape, rank + 2, meaning)
    if fmt == CHANNELS_FIRST:
        return shape[1], list(shape[2:])
    return shape[-1], list(shape[1:-1])


def join_spatial(fmt: str, batch: Dim, channels: Dim, spatial: Sequence[Dim]) -> Shape:
    """`join_shape` for a known format."""
    return (batch, channels, *spatial) if fmt == CHANNELS_FIRST else (batch, *spatial, channels)


def activate_in(b: OpBuilder, y: str, activation: str, keras_format: str, fmt: str) -> str:
    """`activate` from spec values: an axis activation (softmax) acts on Keras' last axis, which is axis 1
    once the layout pass has moved a channels_last layer (`keras_format`) to channels_first (`fmt`)."""
    if activation not in AXIS_ACTIVATIONS:
        return apply_activation(b, y, activation)
    return apply_activation(b, y, activation, axis=1 if keras_format != fmt else -1)
