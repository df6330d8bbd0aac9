"""The LayerGraph IR (Keras-level) and the OpGraph that handlers lower it into. Imports nothing else."""

from converter.ir.graph import Graph, Node, Tensor
from converter.ir.ops import Op, OpGraph
from converter.ir.shape import Dim, Shape, format_shape

__all__ = ["Dim", "Graph", "Node", "Op", "OpGraph", "Shape", "Tensor", "format_shape"]
