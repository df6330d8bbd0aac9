"""OpBuilder: what handlers use to emit ONNX-shaped ops into an OpGraph, without importing onnx.

It hides opset differences (reduce axes as attribute or input, Split sizes) so handlers state intent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from converter.ir import Node, OpGraph
from converter.ir.ops import Op


class OpBuilder:
    def __init__(self, graph: OpGraph) -> None:
        self.graph = graph
        self.scope = ""
        self.node: Node | None = None
        # (layer name, weight key) -> initializer, so a layer called more than once stores its weights once.
        self._layer_weights: dict[tuple[str, str], str] = {}

    @property
    def opset(self) -> int:
        return self.graph.opset

    def enter(self, node: Node) -> None:
        self.node = node
        self.scope = node.name

    def op(self, op_type: str, *inputs: str, domain: str = "", name: str | None = None, **attrs: Any) -> str:
        """Emit one single-output op; returns its output's name."""
        return self.multi(op_type, *inputs, outputs=1, domain=domain, name=name, **attrs)[0]

    def multi(self, op_type: str, *inputs: str, outputs: int, domain: str = "", name: str | None = None,
              **attrs: Any) -> list[str]:
        """Emit one op with `outputs` outputs (Split, TopK, Scan, LSTM); returns their names in order."""
        base = f"{self.scope}/{name or op_type}" if self.scope else (name or op_type)
        op_name = self.graph.unique(base)
        outs = [op_name] if outputs == 1 else [self.graph.unique(f"{op_name}:{i}") for i in range(outputs)]
        clean = {k: v for k, v in attrs.items() if v is not None}
        self.graph.ops.append(Op(op_type, list(inputs), outs, op_name, clean, domain))
        return outs

    def const(self, value: Any, name: str, dtype: Any = np.float32) -> str:
        array = np.asarray(value, dtype=dtype) if not isinstance(value, np.ndarray) else value
        full = self.graph.unique(f"{self.scope}/{name}" if self.scope else name)
        self.graph.initializers[full] = array
        return full

    def ints(self, values: Sequence[int] | int, name: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), name, np.int64)

    def weight(self, key: str, array: np.ndarray | None = None) -> str:
        """The current node's weight as an initializer named `<layer>/<key>`; the later calls of a shared
        layer reuse the first call's initializer when the array is the same."""
        assert self.node is not None
        value = np.ascontiguousarray(self.node.weights[key] if array is None else array, dtype=np.float32)
        known = self._layer_weights.get((self.node.layer_name, key))
        if known is not None and np.array_equal(self.graph.initializers[known], value):
            return known
        name = self.const(value, key)
        self._layer_weights[(self.node.layer_name, key)] = name
        return name

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.ints(list(axes), "axes"), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", x, self.ints(list(axes), "axes"))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.ints(list(axes), "axes"))

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", x, self.ints(list(shape), "shape"))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", x, perm=list(perm))

    def split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:
        if len(sizes) == 1:
            return [x]
        return self.multi("Split", x, self.ints(list(sizes), "split"), outputs=len(sizes), axis=axis)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
              steps: Sequence[int] | None = None) -> str:
        args = [x, self.ints(list(starts), "starts"), self.ints(list(ends), "ends"), self.ints(list(axes), "axes")]
        if steps is not None:
            args.append(self.ints(list(steps), "steps"))
        return self.op("Slice", *args)

    def scalar(self, value: float, name: str = "c") -> str:
        return self.const(np.asarray(value, dtype=np.float32), name)
