"""The pass pipeline: one ordered tuple; each pass is Graph -> Graph and raises with its own name."""

from __future__ import annotations

from collections.abc import Callable

from converter.errors import KconvertError
from converter.ir import Graph
from converter.passes import cleanup, layout, shape_inference, shape_semantics

Pass = Callable[[Graph], Graph]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    # First: every later rule needs the canonical input shapes.
    ("shape semantics", shape_semantics.run),
    # Needs input shapes; checks weights against them before anything rewrites the graph.
    ("shape inference", shape_inference.run),
    # Cleanup before layout, so removed identities do not block Transpose sinking.
    ("cleanup", cleanup.run),
    # Last: rewrites spatial nodes to channels_first using the inferred shapes.
    ("layout", layout.run),
)


def run_pipeline(graph: Graph) -> Graph:
    for name, step in PIPELINE:
        try:
            graph = step(graph)
        except KconvertError:
            raise
        except Exception as err:  # a bug in a pass: say which pass, keep the cause
            raise RuntimeError(f"pass '{name}' failed: {err}") from err
    graph.validate()
    return graph
