"""Merging: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Elementwise merges follow keras/src/layers/merging/base_merge.py: inputs of lower rank get size-1
axes inserted at axis 1 until all ranks agree, then numpy broadcasting applies.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from converter.errors import ShapeError, UnsupportedLayerError
from converter.ir import Dim, Node, Shape
from converter.ir.spec import NoArgs
from converter.layers.builder import OpBuilder
from converter.layers.op_functions import broadcast_dim
from converter.layers.registry import LAYERS, LayerHandler, expect_min_rank
from converter.layers.spec import Config, LayerSpec


def _expanded(shape: Shape, rank: int) -> Shape:
    return (shape[0], *([1] * (rank - len(shape))), *shape[1:])


class ElementwiseMerge(LayerHandler[NoArgs]):
    """Shared shape rule and rank alignment; subclasses give the ONNX reduction of the aligned inputs."""

    keras3_args = ""
    keras_list_input = True
    layout_agnostic = True
    min_inputs = 1
    max_inputs: int | None = None
    # Keras 3 records `x + 3.0` / `x * c` as op nodes (module keras.src.ops.numpy) with the same class
    # names; their scalar operands arrive as `positional_constants`, without their position, so only
    # commutative merges accept them.
    takes_constants = False

    def check(self, node: Node) -> None:
        constants = _constants(node)
        if constants and not (self.takes_constants and all(_is_number(c) for c in constants)):
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' has constant operands {constants!r}",
                                        layer=node.layer_name, hint="only scalar constants of Add, Multiply, "
                                        "Maximum and Minimum op nodes convert")
        count = len(node.inputs)
        if count < self.min_inputs or (self.max_inputs is not None and count > self.max_inputs):
            exact = self.max_inputs == self.min_inputs
            wanted = f"exactly {self.max_inputs}" if exact else f"at least {self.min_inputs}"
            raise UnsupportedLayerError(f"{node.kind} '{node.layer_name}' is called on {count} input(s); it takes "
                                        f"{wanted}", layer=node.layer_name, hint="check the layer's inbound_nodes")

    def is_layout_agnostic(self, node: Node) -> bool:
        # Rank alignment inserts axes at position 1, which does not commute with a permutation.
        return len({len(t.shape or ()) for t in node.inputs}) == 1

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        rank = max(len(s) for s in input_shapes)
        shapes = [_expanded(s, rank) for s in input_shapes]
        out = list(shapes[0])
        for shape in shapes[1:]:
            out = [broadcast_dim(node, a, b) for a, b in zip(out, shape)]
        return [tuple(out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        rank = max(len(t.shape or ()) for t in node.inputs)
        aligned = []
        for name, tensor in zip(inputs, node.inputs):
            missing = rank - len(tensor.shape or ())
            aligned.append(b.unsqueeze(name, list(range(1, 1 + missing))) if missing else name)
        aligned += [b.scalar(float(c), "constant") for c in map(_number, _constants(node)) if c is not None]
        return [self.combine(b, aligned)]

    @abstractmethod
    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        """One ONNX result from the rank-aligned inputs."""


def _constants(node: Node) -> list[object]:
    return list(node.call.kwargs.get("positional_constants") or [])


def _is_number(value: object) -> bool:
    return _number(value) is not None


def _number(value: object) -> float | None:
    """A scalar constant operand: a number, or Keras 3's float scalar `__tensor__` (Keras Hub's Gemma writes
    `x * ops.cast(ops.sqrt(hidden_dim), x.dtype)` as {"class_name": "__tensor__", "config": {"value": 2.83,
    "dtype": "float32"}}); None for anything else."""
    if isinstance(value, dict) and value.get("class_name") == "__tensor__" and isinstance(value.get("config"), dict):
        config = value["config"]
        dtype = config.get("dtype")
        value = config.get("value") if isinstance(dtype, str) and dtype.startswith("float") else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@LAYERS.register("Add")
class Add(ElementwiseMerge):
    takes_constants = True

    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        if len(xs) == 2:  # Add, not Sum: onnxruntime fuses Conv + Add (+ Relu), and Add only
            return b.op("Add", xs[0], xs[1])
        return xs[0] if len(xs) == 1 else b.op("Sum", *xs)


@LAYERS.register("Subtract")
class Subtract(ElementwiseMerge):
    min_inputs = max_inputs = 2

    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        return b.op("Sub", xs[0], xs[1])


@LAYERS.register("Multiply")
class Multiply(ElementwiseMerge):
    takes_constants = True
    masked_merge_refused_in_keras3 = True

    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        y = xs[0]
        for x in xs[1:]:
            y = b.op("Mul", y, x)
        return y


@LAYERS.register("Average")
class Average(ElementwiseMerge):
    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        total = xs[0] if len(xs) == 1 else b.op("Sum", *xs)
        return b.op("Div", total, b.scalar(float(len(xs)), "count"))


@LAYERS.register("Maximum")
class Maximum(ElementwiseMerge):
    takes_constants = True
    masked_merge_refused_in_keras3 = True

    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        return b.op("Max", *xs)


@LAYERS.register("Minimum")
class Minimum(ElementwiseMerge):
    takes_constants = True
    masked_merge_refused_in_keras3 = True

    def combine(self, b: OpBuilder, xs: list[str]) -> str:
        return b.op("Min", *xs)


@dataclass(frozen=True)
class ConcatSpec(LayerSpec):
    axis: int = -1


def _concat_axis(node: Node, axis: int, rank: int) -> int:
    positive = axis + rank if axis < 0 else axis
    if not 0 < positive < rank:
        raise ShapeError(f"Concatenate '{node.layer_name}' has axis={axis}, outside the sample axes of its "
                         f"rank-{rank} inputs", layer=node.layer_name, hint="the batch axis 0 cannot be concatenated")
    return positive


@LAYERS.register("Concatenate")
class Concatenate(LayerHandler[ConcatSpec]):
    """Joins the inputs along `axis` (negative counts from the end; the batch axis is refused)."""

    keras3_args = "axis"
    keras_list_input = True

    argument_kinds = {"axis": "one_axis"}  # one axis, where most layers take several

    def parse(self, config: Config) -> ConcatSpec:
        return ConcatSpec(axis=config.integer("axis", -1))

    def joined_axis(self, node: Node) -> int | None:
        """The axis this node joins on, counted from 0 (layout folds merge nested concats on one axis)."""
        rank = len(node.outputs[0].shape or ())
        return None if rank == 0 else self.spec(node).axis % rank

    def remap_axes(self, node: Node, perm: tuple[int, ...]) -> bool:
        """Layout pass: inputs arrive permuted, so concatenate along where the Keras axis now sits."""
        if any(len(t.shape or ()) != len(perm) for t in node.inputs):
            return False
        node.spec = self.spec(node).replace(axis=perm.index(_concat_axis(node, self.spec(node).axis, len(perm))))
        return True

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        rank = len(input_shapes[0])
        if any(len(s) != rank for s in input_shapes):
            raise ShapeError(f"Concatenate '{node.layer_name}' needs inputs of one rank, got "
                             f"{[len(s) for s in input_shapes]}", layer=node.layer_name,
                             hint="Keras concatenates tensors of one rank")
        axis = _concat_axis(node, self.spec(node).axis, rank)
        sizes = [s[axis] for s in input_shapes]
        total: Dim = sum(sizes) if all(isinstance(d, int) for d in sizes) else f"{node.name}_d{axis}"  # type: ignore[arg-type]
        out: list[Dim] = []
        for i in range(rank):
            dims = [s[i] for s in input_shapes]
            static = {d for d in dims if isinstance(d, int)}
            if i != axis and i != 0 and len(static) > 1:
                raise ShapeError(f"Concatenate '{node.layer_name}' joins on axis {axis}, but the inputs differ on "
                                 f"axis {i}: {[tuple(s[1:]) for s in input_shapes]}",
                                 layer=node.layer_name, hint="all axes but the concatenation axis must match")
            out.append(total if i == axis else next((d for d in dims if isinstance(d, int)), dims[0]))
        return [tuple(out)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        rank = len(node.inputs[0].shape or ())
        return [b.op("Concat", *inputs, axis=_concat_axis(node, self.spec(node).axis, rank))]


# Keras 3 caps 1/||x|| at 1/epsilon (1e-7); tf.linalg.l2_normalize floors ||x||^2 at 1e-12.
_INV_NORM_CAP = {3: 1e7, 2: 1e6}


@dataclass(frozen=True)
class DotSpec(LayerSpec):
    axes: tuple[int, int] = (-1, -1)  # an int in the config applies to both inputs
    axes_text: str = "-1"  # `axes` as the config wrote it, for messages
    normalize: bool = False
    inv_norm_cap: float = _INV_NORM_CAP[3]  # decided by the Keras version that wrote the file


def _parse_dot(config: Config) -> DotSpec:
    raw = config.value("axes", -1)
    pair = [int(raw), int(raw)] if isinstance(raw, int) else [int(a) for a in raw]
    if len(pair) != 2:
        raise UnsupportedLayerError(f"Dot '{config.ctx.layer_name}' has axes={raw!r}; expected an int or a pair",
                                    layer=config.ctx.layer_name, hint="Keras writes axes as 1 or [1, 2]")
    return DotSpec(axes=(pair[0], pair[1]), axes_text=repr(raw), normalize=config.flag("normalize", False),
                   inv_norm_cap=_INV_NORM_CAP[3 if config.ctx.keras3 else 2])


def _dot_axes(node: Node, spec: DotSpec, ranks: tuple[int, int]) -> tuple[int, int]:
    """keras Dot._merge_function: an int applies to both inputs; negatives count from each input's end."""
    raw, pair = spec.axes_text, spec.axes
    if sum(ranks) > 26:  # one einsum letter per axis
        raise UnsupportedLayerError(f"Dot '{node.layer_name}' multiplies inputs of ranks {ranks}",
                                    layer=node.layer_name, hint="kconvert's Einsum takes up to 26 axes in all")
    if not all(-rank <= a < rank for a, rank in zip(pair, ranks)):
        raise ShapeError(f"Dot '{node.layer_name}' has axes={raw}, outside its inputs of ranks {ranks}",
                         layer=node.layer_name, hint="axes count from 0 (negative from the end) over each input")
    axes = (pair[0] % ranks[0], pair[1] % ranks[1])
    if 0 in axes:
        raise ShapeError(f"Dot '{node.layer_name}' has axes={raw}, which includes the batch axis",
                         layer=node.layer_name, hint="axis 0 (the batch) cannot be contracted")
    return axes


@LAYERS.register("Dot")
class Dot(LayerHandler[DotSpec]):
    """Batchwise dot product (keras/src/layers/merging/dot.py `batch_dot`): the output keeps x's axes
    but the contracted one, then y's axes but the batch and the contracted one; rank 1 becomes (batch, 1)."""

    keras3_args = "axes normalize"
    keras_list_input = True

    required_arguments = ("axes",)

    def parse(self, config: Config) -> DotSpec:
        return _parse_dot(config)

    def check(self, node: Node) -> None:
        if len(node.inputs) != 2:
            raise UnsupportedLayerError(f"Dot '{node.layer_name}' is called on {len(node.inputs)} input(s); it "
                                        "takes exactly 2", layer=node.layer_name,
                                        hint="check the layer's inbound_nodes")

    def output_shapes(self, node: Node, input_shapes: list[Shape]) -> list[Shape]:
        x, y = input_shapes
        expect_min_rank(node, x, 2)
        expect_min_rank(node, y, 2)
        ax, ay = _dot_axes(node, self.spec(node), (len(x), len(y)))
        if isinstance(x[ax], int) and isinstance(y[ay], int) and x[ax] != y[ay]:
            raise ShapeError(f"Dot '{node.layer_name}': axis {ax} of the first input has size {x[ax]} but axis "
                             f"{ay} of the second has size {y[ay]}", layer=node.layer_name,
                             hint="the contracted axes must have one size")
        out = [d for i, d in enumerate(x) if i != ax] + [d for i, d in enumerate(y) if i not in (0, ay)]
        return [tuple(out) if len(out) > 1 else (out[0], 1)]

    def emit(self, node: Node, b: OpBuilder, inputs: list[str]) -> list[str]:
        ranks = (len(node.inputs[0].shape or ()), len(node.inputs[1].shape or ()))
        spec = self.spec(node)
        ax, ay = _dot_axes(node, spec, ranks)
        x, y = inputs
        if spec.normalize:
            x, y = _l2_normalize(b, x, ax, spec.inv_norm_cap), _l2_normalize(b, y, ay, spec.inv_norm_cap)
        letters = "bcdefghijklmnopqrstuvwxy"
        xs = ["a", *letters[:ranks[0] - 1]]
        ys = ["a", *letters[ranks[0] - 1:ranks[0] + ranks[1] - 2]]
        xs[ax], ys[ay] = "z", "z"
        out = [c for c in xs if c != "z"] + [c for c in ys[1:] if c != "z"]
        result = b.op("Einsum", x, y, equation=f"{''.join(xs)},{''.join(ys)}->{''.join(out)}")
        return [b.unsqueeze(result, [1]) if len(out) == 1 else result]


def _l2_normalize(b: OpBuilder, x: str, axis: int, cap: float) -> str:
    square_sum = b.reduce("ReduceSum", b.op("Mul", x, x), [axis], keepdims=True)
    inv_norm = b.op("Reciprocal", b.op("Sqrt", square_sum))
    return b.op("Mul", x, b.op("Min", inv_norm, b.scalar(cap, "inv_norm_cap")))
