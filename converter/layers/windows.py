"""Sliding-window arithmetic shared by convolution, pooling and spatial resampling layers.

Keras' rules (TensorFlow's, which Keras 3 reproduces on every backend): 'valid' keeps only full
windows; 'same' gives ceil(n / stride) outputs and pads the odd element at the end (ONNX SAME_UPPER);
'causal' (Conv1D) pads dilation * (kernel - 1) at the start only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Node, Shape
from converter.ir.shape import Dim, to_channels_first, to_channels_last
from converter.layers.activations import AXIS_ACTIVATIONS, apply_activation
from converter.layers.builder import OpBuilder
from converter.layers.registry import expect_rank
from converter.layers.spec import Config

CHANNELS_LAST, CHANNELS_FIRST = "channels_last", "channels_first"
# A config key kconvert once wrote (the file's data_format, before the layout pass switched it); nothing
# writes it now (specs keep `keras_data_format`), but the Keras writer still strips it from a config.
KERAS_FORMAT = "keras_data_format"


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


# --------------------------------------------------------------------------------------------------
# Config parsing (once, in a family's `parse`) and spec-based layout helpers: the spatial families
# (convolutions, pooling, adaptive pooling, ZeroPadding/Cropping/UpSampling, locally connected,
# ConvLSTM, image preprocessing) share these and pass spec values, never the node's config.
# --------------------------------------------------------------------------------------------------


def parse_data_format(config: Config) -> str:
    """`data_format`, refused unless it is one of Keras' two layouts."""
    value = config.value("data_format", CHANNELS_LAST)
    if value not in (CHANNELS_LAST, CHANNELS_FIRST):
        raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has data_format={value!r}",
                                    layer=config.ctx.layer_name, hint="use channels_last or channels_first")
    return str(value)


def parse_padding(config: Config, allowed: Sequence[str]) -> str:
    """`padding`, lower-cased, refused unless it is one of `allowed`."""
    padding = config.text("padding", "valid").lower()
    if padding not in allowed:
        raise UnsupportedLayerError(
            f"{config.ctx.kind} '{config.ctx.layer_name}' has padding={padding!r}", layer=config.ctx.layer_name,
            hint="supported: " + ", ".join(allowed))
    return padding


def parse_window(config: Config, key: str, rank: int, default: int | None) -> tuple[int, ...]:
    """An int-or-tuple window argument (pool_size, strides, size) as `rank` non-negative ints."""
    value = config.value(key, default)
    values = [value] * rank if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1 and rank > 1:
        values = values * rank
    if len(values) != rank or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise config.refuse(key, value, f"expected {rank} ints")
    return tuple(int(v) for v in values)


def parse_pairs(config: Config, key: str, n: int, default: int) -> tuple[tuple[int, int], ...]:
    """ZeroPadding / Cropping amounts: int, n ints (symmetric), or n (before, after) pairs."""
    value = config.value(key, default)
    items = [value] * n if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else [value]
    if n == 1 and len(items) == 2 and all(isinstance(v, int) for v in items):
        items = [items]
    if len(items) != n:
        raise config.refuse(key, value, f"expected {n} entries")
    out = []
    for item in items:
        pair = [item, item] if isinstance(item, int) else list(item) if isinstance(item, (list, tuple)) else [item]
        if len(pair) != 2 or not all(isinstance(v, int) and v >= 0 for v in pair):
            raise UnsupportedLayerError(f"{config.ctx.kind} '{config.ctx.layer_name}' has {key}={value!r}",
                                        layer=config.ctx.layer_name, hint="amounts must be non-negative ints")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def spatial_meaning(rank: int) -> str:
    """How a channels_last input of spatial rank `rank` reads, for rank errors."""
    axes = ["steps"] if rank == 1 else [f"dim{i + 1}" for i in range(rank)]
    return f"(batch, {', '.join(axes)}, channels)"


def split_spatial(node: Node, fmt: str, shape: Shape, rank: int) -> tuple[Dim, list[Dim]]:
    """(channels, spatial dims) of a (batch, ..., channels) or (batch, channels, ...) input in format `fmt`."""
    expect_rank(node, shape, rank + 2, spatial_meaning(rank))
    if fmt == CHANNELS_FIRST:
        return shape[1], list(shape[2:])
    return shape[-1], list(shape[1:-1])


def join_spatial(fmt: str, batch: Dim, channels: Dim, spatial: Sequence[Dim]) -> Shape:
    """The shape with these parts in format `fmt`."""
    return (batch, channels, *spatial) if fmt == CHANNELS_FIRST else (batch, *spatial, channels)


def spatial_axes(fmt: str, rank: int) -> list[int]:
    """The spatial axes of a rank-`rank` layer's input in format `fmt`."""
    return list(range(2, rank + 2)) if fmt == CHANNELS_FIRST else list(range(1, rank + 1))


def channels_first_io(node: Node, fmt: str, b: OpBuilder, x: str, body: Callable[[str, list[Dim]], str]) -> str:
    """Run `body` (ONNX ops that exist only channels-first) on the NC... view of `x`.

    After the layout pass every such node computes channels_first (`fmt`), so `body` runs on `x` as it
    is. The one other path: a graph lowered without the passes (`load(optimize=False)`; the tests
    lower one as the reference an optimised graph must match) keeps channels_last nodes, which run
    between two Transposes here, in this one place, for every channels-first-only family."""
    shape = node.inputs[0].shape or ()
    if fmt == CHANNELS_FIRST:
        return body(x, list(shape[2:]))
    inner = body(b.transpose(x, list(to_channels_first(len(shape)))), list(shape[1:-1]))
    return b.transpose(inner, list(to_channels_last(len(shape))))


def activate_in(b: OpBuilder, y: str, activation: str, keras_format: str, fmt: str) -> str:
    """The fused `activation=`: an axis activation (softmax) acts on Keras' last axis, which is axis 1
    once the layout pass has moved a channels_last layer (`keras_format`) to channels_first (`fmt`)."""
    if activation not in AXIS_ACTIVATIONS:
        return apply_activation(b, y, activation)
    return apply_activation(b, y, activation, axis=1 if keras_format != fmt else -1)
