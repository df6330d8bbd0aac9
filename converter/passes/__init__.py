"""The pass pipeline: one ordered tuple; each pass is Graph -> Graph and raises with its own name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from converter.errors import KconvertError
from converter.ir import Graph
from converter.passes import (
    cleanup,
    fold_batch_norm,
    fold_padding,
    layout,
    masking,
    shape_inference,
    shape_semantics,
    unwrap,
)
from converter.passes import streaming as streaming_pass
from converter.passes.layout import LayoutOptions

Pass = Callable[[Graph], Graph]
T = TypeVar("T")

__all__ = ["PIPELINE", "SHAPE_PASSES", "LayoutOptions", "Pass", "pipeline", "run_pipeline", "run_shape_passes",
           "run_steps"]


def pipeline(options: LayoutOptions | None = None, streaming: bool = False) -> tuple[tuple[str, Pass], ...]:
    """The ordered passes; `options` say which graph inputs/outputs stay channels-first; `streaming`
    makes recurrent states graph inputs and outputs."""
    return (
        # First: every later rule needs the canonical input shapes.
        ("shape semantics", shape_semantics.run),
        # Needs input shapes; checks weights against them before anything rewrites the graph.
        ("shape inference", shape_inference.run),
        # Before cleanup: Keras 3 drops a mask at SpatialDropout but Keras 2 passes it, so the walk
        # back to the mask source must still see the Dropout family that cleanup removes.
        ("masking", masking.run),
        # After masking, which walks back through a TimeDistributed as one mask-passing layer (its
        # unwrapped Reshapes would drop the mask); before every pass that should reach the wrapped layers
        # (cleanup, BN and padding folding, layout). Shape inference has checked the wrapped weights
        # against the wrapper's shapes; the pass infers the new nodes' shapes itself.
        ("unwrap", unwrap.run),
        # Cleanup before folding and layout: a Dropout between Conv and BatchNormalization would
        # block the fold, and removed identities need no layout.
        ("cleanup", cleanup.run),
        # After masking (the states go after the mask input), unwrap (an RNN(cell) view is a plain
        # recurrent layer then) and cleanup (no dead layer gets state inputs); before layout.
        ("streaming", partial(streaming_pass.run, streaming=streaming)),
        # Before layout: it reads the Keras data_format/axis to match the BN axis with the channel axis,
        # and fewer nodes remain for the layout pass to place.
        ("fold batch norm", fold_batch_norm.run),
        # After BN folding, so a Conv -> BN -> ReLU -> ZeroPadding -> MaxPool stem shows the ReLU
        # feeding the padding; before layout, which then places one node fewer.
        ("fold padding", fold_padding.run),
        # Last: rewrites spatial nodes to channels_first using the inferred shapes.
        ("layout", partial(layout.run, options=options)),
    )


PIPELINE: tuple[tuple[str, Pass], ...] = pipeline()


# The passes a graph read for its shapes alone (inspect, the Keras archive writer) runs: no rewriting.
SHAPE_PASSES = ("shape semantics", "shape inference")


def run_steps(value: T, steps: Iterable[tuple[str, Callable[[T], T]]], what: str = "pass") -> T:
    """Run named steps in order. A KconvertError goes on as it is; anything else is a bug in a step,
    reported with the step's name and the cause kept (the OpGraph passes in lowering.py use it too)."""
    for name, step in steps:
        try:
            value = step(value)
        except KconvertError:
            raise
        except Exception as err:
            raise RuntimeError(f"{what} '{name}' failed: {err}") from err
    return value


def run_pipeline(graph: Graph, options: LayoutOptions | None = None, streaming: bool = False) -> Graph:
    graph = run_steps(graph, PIPELINE if options is None and not streaming else pipeline(options, streaming))
    graph.validate()
    return graph


def run_shape_passes(graph: Graph) -> Graph:
    """Only the SHAPE_PASSES of the pipeline, in its order and with its error reporting."""
    return run_steps(graph, ((name, step) for name, step in PIPELINE if name in SHAPE_PASSES))
