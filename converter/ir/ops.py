"""OpGraph: the ONNX-shaped program that layer handlers emit, serialised by export/onnx.py.

Kept free of the onnx package so handlers stay testable and only the exporter imports onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converter.ir.names import NameAuthority
from converter.ir.shape import Shape


@dataclass
class Op:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""


@dataclass
class ValueInfo:
    name: str
    shape: Shape | None
    dtype: str


@dataclass
class OpGraph:
    """Ops in topological order, initializers, and typed graph inputs/outputs."""

    name: str
    opset: int
    ops: list[Op] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    names: NameAuthority = field(default_factory=NameAuthority)

    def unique(self, base: str) -> str:
        """Deterministic, collision-free names derived from Keras names."""
        return self.names.unique(base)

    def reserve(self, name: str) -> None:
        self.names.reserve(name)
