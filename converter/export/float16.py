"""float16 weights and compute, on the OpGraph (before serialisation, without importing onnx).

Rule: the model's float compute runs in float16: float32 initializers become float16 (clipped to
float16's range, so a -1e9 mask constant becomes -65504 rather than -inf) and Casts to float32 cast to
float16 instead. Two kinds of float values stay float32:
- inputs ONNX defines without a float16 type: Resize's roi/scales and Range's start/limit/delta;
- *index arithmetic*: float values computed from integers (a Cast of an int/bool tensor to float, then
  only cheap index ops such as Mul, Sub, Range, TopK, CumSum). A masked RNN sorts its time steps by
  `mask * T - range(T)` in float: float16 would make `Range` invalid and its integers inexact past 2048.
Where a float32 value meets float16 compute (a mask multiplying activations), a Cast bridges them.
Graph inputs and outputs stay float32 unless `keep_io_types=False`: a Cast after each float input and
before each float output bridges them. A model converted this way matches Keras within
FLOAT16_RTOL / FLOAT16_ATOL (export/onnx.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converter.ir import OpGraph
from converter.ir.ops import Op

ONNX_FLOAT, ONNX_FLOAT16 = 1, 10
FLOAT_TYPES = frozenset({1, 10, 11, 16})  # ONNX float, float16, double, bfloat16
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Inputs (by index) that ONNX types without float16: they stay float32 whatever the compute type.
FLOAT32_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "Range": (0, 1, 2)}
# Cheap ops that keep index arithmetic in float32 when all their float inputs are index values.
INDEX_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Min", "Max", "Floor", "Ceil", "Round", "Mod", "Sign", "Clip",
    "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Expand", "Tile", "Concat", "Slice", "Split", "Gather",
    "GatherElements", "GatherND", "Transpose", "Identity", "Range", "TopK", "CumSum", "ReduceSum", "ReduceMax",
    "ReduceMin", "ReduceProd", "Where", "Pad", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "ArgMax", "ArgMin",
})
# Ops whose outputs are never float whatever their inputs (comparisons, shapes, indices).
NON_FLOAT_OUTPUTS = frozenset({"Shape", "Size", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                               "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "ArgMax", "ArgMin", "NonZero"})
INDEX_OUTPUTS = {"TopK": frozenset({1})}  # TopK's second output holds int64 indices

HALF, EXACT, CONST, OTHER = "half", "exact", "const", "other"  # value classes (CONST: a float32 initializer)


@dataclass
class _Plan:
    """Per value its class; per op whether it computes in float16 (HALF) or float32 (EXACT)."""

    classes: dict[str, str]
    modes: list[str] = field(default_factory=list)


def to_float16(ops: OpGraph, keep_io_types: bool = True) -> OpGraph:
    plan = _plan(ops)
    exact_outputs = {info.name for info in ops.outputs if plan.classes.get(info.name) == EXACT}
    _convert_constants(ops, plan)
    _bridge(ops, plan)
    if keep_io_types:
        _cast_inputs(ops)
        _cast_outputs(ops, skip=exact_outputs)
    else:
        _cast_exact_outputs(ops, exact_outputs)
        for info in [*ops.inputs, *ops.outputs]:
            info.dtype = "float16" if info.dtype == "float32" else info.dtype
    return ops


def _plan(ops: OpGraph) -> _Plan:
    classes = {info.name: HALF if info.dtype == "float32" else OTHER for info in ops.inputs}
    classes.update({name: CONST if a.dtype == np.float32 else OTHER for name, a in ops.initializers.items()})
    plan = _Plan(classes)
    for op in ops.ops:
        mode = _mode(op, classes)
        plan.modes.append(mode)
        for index, name in enumerate(op.outputs):
            classes[name] = _output_class(op, index, mode, classes)
    _half_casts_where_unread_as_float32(ops, plan)
    return plan


def _half_casts_where_unread_as_float32(ops: OpGraph, plan: _Plan) -> None:
    """A Cast of integers to float that only float16 compute reads casts to float16 directly (one Cast,
    not a float32 Cast and a bridge)."""
    read_exact = {info.name for info in ops.outputs}
    for op, mode in zip(ops.ops, plan.modes):
        keep = FLOAT32_INPUTS.get(op.op_type, ())
        if op.op_type != "Cast":
            read_exact.update(n for i, n in enumerate(op.inputs) if i in keep or mode == EXACT)
    for index, op in enumerate(ops.ops):
        to_float = op.op_type == "Cast" and op.attrs.get("to") == ONNX_FLOAT
        if to_float and plan.modes[index] == EXACT and op.outputs[0] not in read_exact:
            plan.modes[index] = HALF
            plan.classes[op.outputs[0]] = HALF


def _float_inputs(op: Op, classes: dict[str, str], pinned: bool) -> list[str]:
    keep = FLOAT32_INPUTS.get(op.op_type, ())
    return [n for i, n in enumerate(op.inputs) if n and classes.get(n, OTHER) != OTHER and (i in keep) == pinned]


def _mode(op: Op, classes: dict[str, str]) -> str:
    if op.op_type == "Cast":
        source = classes.get(op.inputs[0], OTHER)
        return HALF if source in (HALF, CONST) else EXACT  # a Cast of integers starts index arithmetic
    if op.op_type == "Range":
        return EXACT
    free = [classes[n] for n in _float_inputs(op, classes, pinned=False)]
    if op.op_type in INDEX_OPS and EXACT in free and set(free) <= {EXACT, CONST}:
        return EXACT
    return HALF


def _output_class(op: Op, index: int, mode: str, classes: dict[str, str]) -> str:
    if op.op_type == "Cast":
        to = op.attrs.get("to")
        return mode if to == ONNX_FLOAT else HALF if to == ONNX_FLOAT16 else OTHER
    if op.op_type in NON_FLOAT_OUTPUTS or index in INDEX_OUTPUTS.get(op.op_type, ()):
        return OTHER
    if op.op_type == "LabelEncoder":
        return mode if "values_floats" in op.attrs or "values_tensor" in op.attrs else OTHER
    data = _float_inputs(op, classes, pinned=False) or _float_inputs(op, classes, pinned=True)
    return mode if data else OTHER


def _uses(ops: OpGraph, plan: _Plan) -> dict[str, set[str]]:
    """How each float32 initializer is read: as float16 (HALF) or float32 (EXACT)."""
    uses: dict[str, set[str]] = {}
    for op, mode in zip(ops.ops, plan.modes):
        if op.op_type == "Cast":
            continue  # a Cast reads any type
        keep = FLOAT32_INPUTS.get(op.op_type, ())
        for i, name in enumerate(op.inputs):
            if plan.classes.get(name) == CONST:
                uses.setdefault(name, set()).add(EXACT if i in keep else mode)
    for name in _body_reads(ops):
        uses.setdefault(name, set()).add(HALF)  # Scan/Loop bodies compute in float16
    return uses


def _convert_constants(ops: OpGraph, plan: _Plan) -> None:
    """Initializers read only as float16 become float16; those also read as float32 get a float16 copy,
    which the float16 readers are renamed to; unread ones become float16 (the plain rule)."""
    uses = _uses(ops, plan)
    for name, array in list(ops.initializers.items()):
        if plan.classes.get(name) != CONST:
            continue
        wanted = uses.get(name, {HALF})
        half = np.clip(array, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
        if wanted == {HALF}:
            ops.initializers[name] = half
            plan.classes[name] = HALF
        elif HALF in wanted:
            copy = ops.unique(f"{name}/float16")
            ops.initializers[copy] = half
            plan.classes[copy] = HALF
            _rename_half_reads(ops, plan, name, copy)
        else:
            plan.classes[name] = EXACT


def _rename_half_reads(ops: OpGraph, plan: _Plan, old: str, new: str) -> None:
    for op, mode in zip(ops.ops, plan.modes):
        keep = FLOAT32_INPUTS.get(op.op_type, ())
        if mode == HALF and op.op_type != "Cast":
            op.inputs = [new if n == old and i not in keep else n for i, n in enumerate(op.inputs)]
        for value in op.attrs.values():
            if isinstance(value, OpGraph):
                _rename_uses(value, old, new)


def _bridge(ops: OpGraph, plan: _Plan) -> None:
    """Casts where a float32 value meets float16 compute or the reverse; float16 Casts and attributes."""
    bridged: dict[tuple[str, int], str] = {}
    result: list[Op] = []
    for op, mode in zip(ops.ops, plan.modes):
        keep = FLOAT32_INPUTS.get(op.op_type, ())
        if op.op_type != "Cast":
            for i, name in enumerate(op.inputs):
                wanted = EXACT if i in keep else mode
                have = plan.classes.get(name, OTHER)
                if have in (HALF, EXACT) and have != wanted:
                    op.inputs[i] = _bridged(ops, name, wanted, bridged, result)
        if mode == HALF:
            _half_attrs(ops, op, plan, bridged, result)
        result.append(op)
    ops.ops = result


def _bridged(ops: OpGraph, name: str, wanted: str, bridged: dict[tuple[str, int], str], result: list[Op]) -> str:
    to = ONNX_FLOAT16 if wanted == HALF else ONNX_FLOAT
    if (name, to) not in bridged:
        cast = ops.unique(f"{name}/{'float16' if to == ONNX_FLOAT16 else 'float32'}")
        result.append(Op("Cast", [name], [cast], cast, {"to": to}))
        bridged[(name, to)] = cast
    return bridged[(name, to)]


def _half_attrs(ops: OpGraph, op: Op, plan: _Plan, bridged: dict[tuple[str, int], str], result: list[Op]) -> None:
    if op.op_type == "Cast" and op.attrs.get("to") == ONNX_FLOAT:
        op.attrs["to"] = ONNX_FLOAT16
    for key, value in op.attrs.items():
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            op.attrs[key] = value.astype(np.float16)
        elif isinstance(value, OpGraph):  # a Scan / Loop body: its values are float16 too
            for name in _outer_reads(value):
                if plan.classes.get(name) == EXACT:
                    _rename_uses(value, name, _bridged(ops, name, HALF, bridged, result))
            _body_to_float16(value)


def _body_to_float16(body: OpGraph) -> None:
    for op in body.ops:
        if op.op_type == "Cast" and op.attrs.get("to") == ONNX_FLOAT:
            op.attrs["to"] = ONNX_FLOAT16
        for key, value in op.attrs.items():
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                op.attrs[key] = value.astype(np.float16)
            elif isinstance(value, OpGraph):
                _body_to_float16(value)
    for info in [*body.inputs, *body.outputs]:
        info.dtype = "float16" if info.dtype == "float32" else info.dtype


def _outer_reads(body: OpGraph) -> set[str]:
    """Names a body reads from the enclosing graph (neither its own inputs, outputs of its ops, nor its
    initializers), at any depth."""
    own = {info.name for info in body.inputs} | set(body.initializers) | {o for op in body.ops for o in op.outputs}
    reads = {n for op in body.ops for n in op.inputs if n}
    for op in body.ops:
        for value in op.attrs.values():
            if isinstance(value, OpGraph):
                reads |= _outer_reads(value)
    return reads - own


def _body_reads(ops: OpGraph) -> set[str]:
    return {name for op in ops.ops for value in op.attrs.values() if isinstance(value, OpGraph)
            for name in _outer_reads(value)}


def _rename_uses(ops: OpGraph, old: str, new: str) -> None:
    for op in ops.ops:
        op.inputs = [new if name == old else name for name in op.inputs]
        for value in op.attrs.values():
            if isinstance(value, OpGraph):
                _rename_uses(value, old, new)


def _cast_inputs(ops: OpGraph) -> None:
    """Float inputs are cast to float16 once, for every reader but a Cast to an integer type: a float
    input holding token ids (a Keras 2 Embedding's) keeps ids past 2048 exact that way."""
    casts = []
    for info in ops.inputs:
        if info.dtype != "float32":
            continue
        half = ops.unique(f"{info.name}/float16")
        for op in ops.ops:
            if not (op.op_type == "Cast" and op.attrs.get("to") not in FLOAT_TYPES):
                op.inputs = [half if name == info.name else name for name in op.inputs]
            for value in op.attrs.values():
                if isinstance(value, OpGraph):
                    _rename_uses(value, info.name, half)
        if half in _outer_reads(ops):  # some reader takes float16
            casts.append(Op("Cast", [info.name], [half], half, {"to": ONNX_FLOAT16}))
    ops.ops[:0] = casts


def _cast_outputs(ops: OpGraph, skip: set[str]) -> None:
    """Each float16 output's producer writes `<name>/float16`, and a Cast writes the output name
    (index outputs in `skip` are float32 already)."""
    for info in ops.outputs:
        if info.dtype == "float32" and info.name not in skip:
            _cast_output(ops, info.name, "float16", ONNX_FLOAT, "to_float32")


def _cast_exact_outputs(ops: OpGraph, exact_outputs: set[str]) -> None:
    """With float16 I/O, a float32 index output is cast to float16 like the rest."""
    for info in ops.outputs:
        if info.name in exact_outputs:
            _cast_output(ops, info.name, "float32", ONNX_FLOAT16, "to_float16")


def _cast_output(ops: OpGraph, name: str, computed: str, to: int, cast_suffix: str) -> None:
    """The graph output `name` is computed as `<name>/<computed>`, and a Cast to `to` writes `name`."""
    inner = ops.unique(f"{name}/{computed}")
    for op in ops.ops:
        op.outputs = [inner if out == name else out for out in op.outputs]
    _rename_uses(ops, name, inner)
    ops.ops.append(Op("Cast", [inner], [name], ops.unique(f"{name}/{cast_suffix}"), {"to": to}))
