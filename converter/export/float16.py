"""float16 weights and compute, on the OpGraph (before serialisation, without importing onnx).

Rule: every float32 initializer becomes float16 (clipped to float16's range, so a -1e9 mask constant
becomes -65504 rather than -inf), except inputs that ONNX requires in float32 (Resize's roi/scales);
Casts to float32 inside the graph cast to float16 instead. Graph inputs and outputs stay float32 unless
`keep_io_types=False`: a Cast after each float input and before each float output bridges them.
A model converted this way matches Keras within FLOAT16_RTOL / FLOAT16_ATOL (export/onnx.py).
"""

from __future__ import annotations

import numpy as np

from converter.ir import OpGraph
from converter.ir.ops import Op

ONNX_FLOAT, ONNX_FLOAT16 = 1, 10
FLOAT16_MAX = float(np.finfo(np.float16).max)
# (op_type, input index) that must stay float32 whatever the compute type.
FLOAT32_ONLY = frozenset({("Resize", 1), ("Resize", 2)})


def to_float16(ops: OpGraph, keep_io_types: bool = True) -> OpGraph:
    keep = {name for op in ops.ops for i, name in enumerate(op.inputs) if (op.op_type, i) in FLOAT32_ONLY}
    for name, array in list(ops.initializers.items()):
        if array.dtype == np.float32 and name not in keep:
            ops.initializers[name] = np.clip(array, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    _ops_to_float16(ops)
    if keep_io_types:
        _cast_inputs(ops)
        _cast_outputs(ops)
    else:
        for info in [*ops.inputs, *ops.outputs]:
            info.dtype = "float16" if info.dtype == "float32" else info.dtype
    return ops


def _ops_to_float16(ops: OpGraph) -> None:
    for op in ops.ops:
        if op.op_type == "Cast" and op.attrs.get("to") == ONNX_FLOAT:
            op.attrs["to"] = ONNX_FLOAT16
        for key, value in op.attrs.items():
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                op.attrs[key] = value.astype(np.float16)
            elif isinstance(value, OpGraph):  # a Scan / Loop body: its values are float16 too
                _ops_to_float16(value)
                for info in [*value.inputs, *value.outputs]:
                    info.dtype = "float16" if info.dtype == "float32" else info.dtype


def _rename_uses(ops: OpGraph, old: str, new: str) -> None:
    for op in ops.ops:
        op.inputs = [new if name == old else name for name in op.inputs]


def _cast_inputs(ops: OpGraph) -> None:
    casts = []
    for info in ops.inputs:
        if info.dtype != "float32":
            continue
        half = ops.unique(f"{info.name}/float16")
        _rename_uses(ops, info.name, half)
        casts.append(Op("Cast", [info.name], [half], half, {"to": ONNX_FLOAT16}))
    ops.ops[:0] = casts


def _cast_outputs(ops: OpGraph) -> None:
    """Each float output's producer writes `<name>/float16`, and a Cast writes the output name."""
    for info in ops.outputs:
        if info.dtype != "float32":
            continue
        half = ops.unique(f"{info.name}/float16")
        for op in ops.ops:
            op.outputs = [half if name == info.name else name for name in op.outputs]
        _rename_uses(ops, info.name, half)
        ops.ops.append(Op("Cast", [half], [info.name], ops.unique(f"{info.name}/to_float32"), {"to": ONNX_FLOAT}))
