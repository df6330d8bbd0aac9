"""`x[...]`: tf.keras `__operators__.getitem` (SlicingOpLambda) and Keras 3 `GetItem`, every basic index form.

A key is one item or a list of items: slices (tf.keras `{start, stop, step}`, Keras 3 `__slice__` objects;
bounds negative or None, any non-zero step), integers (take one position and drop the axis), None (a new
axis of size 1) and one ellipsis (`__ellipsis__`: the axes no other item names). A bound or index held in a
tensor, a boolean mask and an index list are refused by name. Emission: one Slice over the sliced and
indexed axes, a Squeeze of the indexed ones, an Unsqueeze of the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.errors import ShapeError
from converter.ir import Dim, Node, Shape
from converter.layers.builder import OpBuilder
from converter.layers.op_functions import Bound, TensorFunction

END = 2**63 - 1  # ONNX Slice's open bound; clamped to the axis


@dataclass(frozen=True)
class Item:
    """One normalised key item: kind is "slice", "index", "newaxis" or "ellipsis"."""

    kind: str
    start: int | None = None
    stop: int | None = None
    step: int = 1


def _bound(args: Bound, value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise args.refuse("slice_spec", f"has the bound {value!r}; only constant integer bounds convert")


def _item(args: Bound, raw: Any) -> Item:
    if raw is None:
        return Item("newaxis")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Item("index", raw)
    if isinstance(raw, dict) and raw.get("class_name") == "__ellipsis__":
        return Item("ellipsis")
    fields = raw.get("config") if isinstance(raw, dict) and raw.get("class_name") == "__slice__" else raw
    if isinstance(fields, dict) and set(fields) <= {"start", "stop", "step"}:
        step = _bound(args, fields.get("step"))
        if step == 0:
            raise args.refuse("slice_spec", "has a slice step of 0")
        return Item("slice", _bound(args, fields.get("start")), _bound(args, fields.get("stop")), step or 1)
    raise args.refuse("slice_spec", "holds an index kconvert does not convert (a tensor, a mask or a list)")


def key_items(args: Bound, rank: int) -> list[Item]:
    """The key as items with the ellipsis expanded to full slices (an implicit one closes the key)."""
    raw = args.values.get("slice_spec")
    items = [_item(args, r) for r in (raw if isinstance(raw, list) else [raw])]
    if sum(i.kind == "ellipsis" for i in items) > 1:
        raise args.refuse("slice_spec", "has more than one ellipsis")
    if not any(i.kind == "ellipsis" for i in items):
        items.append(Item("ellipsis"))
    named = sum(i.kind in ("slice", "index") for i in items)
    if named > rank:
        raise args.refuse("slice_spec", f"indexes {named} axes of a rank-{rank} tensor")
    at = next(n for n, i in enumerate(items) if i.kind == "ellipsis")
    return items[:at] + [Item("slice")] * (rank - named) + items[at + 1:]


def _sliced_dim(node: Node, axis: int, dim: Dim, item: Item) -> Dim:
    if item.kind == "slice" and item.start is None and item.stop is None and item.step == 1:
        return dim
    if not isinstance(dim, int):
        return f"{node.name}_d{axis}"
    if item.kind == "index":
        if not -dim <= (item.start or 0) < dim:
            raise ShapeError(f"'{node.layer_name}' takes index {item.start} of an axis of size {dim}",
                             layer=node.layer_name, hint="an index must lie in [-size, size)")
        return 1
    return len(range(*slice(item.start, item.stop, item.step).indices(dim)))


def _onnx_bounds(item: Item) -> tuple[int, int, int]:
    """ONNX Slice's (start, end, step) for a slice or index item."""
    if item.kind == "index":
        start = item.start or 0
        return start, (END if start == -1 else start + 1), 1
    if item.step > 0:
        return item.start or 0, END if item.stop is None else item.stop, item.step
    return (END if item.start is None else item.start), (-END if item.stop is None else item.stop), item.step


class GetItem(TensorFunction):
    parameters = ("tensor", "slice_spec")

    def check(self, node: Node, args: Bound) -> None:
        shape = node.inputs[args.tensor("tensor")].shape
        key_items(args, 64 if shape is None else len(shape))  # the items' forms; the rank is checked later

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("tensor")]
        dims: list[Dim] = []
        axis = 0
        for item in key_items(args, len(shape)):
            if item.kind == "newaxis":
                dims.append(1)
                continue
            dim = _sliced_dim(node, len(dims), shape[axis], item)
            if item.kind == "slice":
                dims.append(dim)
            axis += 1
        return [tuple(dims)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        x = inputs[args.tensor("tensor")]
        items = key_items(args, len(node.inputs[args.tensor("tensor")].shape or ()))
        sliced = [(axis, _onnx_bounds(i)) for axis, i in enumerate(i for i in items if i.kind != "newaxis")
                  if i.kind == "index" or (i.start, i.stop, i.step) != (None, None, 1)]
        if sliced:
            x = b.slice(x, [s[1][0] for s in sliced], [s[1][1] for s in sliced], [s[0] for s in sliced],
                        [s[1][2] for s in sliced])
        dropped = [axis for axis, i in enumerate(i for i in items if i.kind != "newaxis") if i.kind == "index"]
        if dropped:
            x = b.squeeze(x, dropped)
        kept = [i for i in items if i.kind != "index"]
        added = [axis for axis, i in enumerate(kept) if i.kind == "newaxis"]
        if added:
            x = b.unsqueeze(x, added)
        return [x if sliced or dropped or added else b.op("Identity", x)]


class SliceBySize(TensorFunction):
    """`tf.slice(input_, begin, size)`: `size[i]` values from `begin[i]` on each axis (-1: to the end)."""

    parameters = ("input_", "begin", "size")

    def bounds(self, node: Node, args: Bound, rank: int) -> tuple[list[int], list[int]]:
        begin, size = args.constant("begin"), args.constant("size")
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in [*_listed(begin), *_listed(size)])
        if not ints or len(_listed(begin)) != rank or len(_listed(size)) != rank:
            raise args.refuse("begin", f"and size must be {rank} integers each (one per axis)")
        if any(b < 0 for b in begin) or any(s < -1 for s in size):
            raise args.refuse("begin", "and size must be >= 0 (size -1: to the end)")
        return list(begin), list(size)

    def output_shapes(self, node: Node, args: Bound, input_shapes: list[Shape]) -> list[Shape]:
        shape = input_shapes[args.tensor("input_")]
        begin, size = self.bounds(node, args, len(shape))
        dims: list[Dim] = []
        for axis, (dim, start, count) in enumerate(zip(shape, begin, size)):
            if isinstance(dim, int) and start + max(count, 0) > dim:
                raise ShapeError(f"{args.function} '{node.layer_name}' slices past the end of axis {axis} "
                                 f"(size {dim})", layer=node.layer_name, hint="begin + size must fit the axis")
            if count >= 0:
                dims.append(count)
            else:
                dims.append(dim - start if isinstance(dim, int) else dim if start == 0 else f"{node.name}_d{axis}")
        return [tuple(dims)]

    def emit(self, node: Node, b: OpBuilder, args: Bound, inputs: list[str]) -> list[str]:
        begin, size = self.bounds(node, args, len(node.inputs[args.tensor("input_")].shape or ()))
        ends = [END if count == -1 else start + count for start, count in zip(begin, size)]
        return [b.slice(inputs[args.tensor("input_")], begin, ends, list(range(len(begin))))]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


GETITEM, SLICE = GetItem(), SliceBySize()
