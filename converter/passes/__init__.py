"""The pass pipeline: one ordered tuple; each pass is Graph -> Graph and raises with its own name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

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
from converter.passes.layout import LayoutOptions

Pass = Callable[[Graph], Graph]

__all__ = ["PIPELINE", "LayoutOptions", "Pass", "pipeline", "run_pipeline"]


def pipeline(options: LayoutOptions | None = None) -> tuple[tuple[str, Pass], ...]:
    """The ordered passes; `options` say which graph inputs/outputs stay channels-first."""
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


def run_pipeline(graph: Graph, options: LayoutOptions | None = None) -> Graph:
    for name, step in PIPELINE if options is None else pipeline(options):
        try:
            graph = step(graph)
        except KconvertError:
            raise
        except Exception as err:  # a bug in a pass: say which pass, keep the cause
            raise RuntimeError(f"pass '{name}' failed: {err}") from err
    graph.validate()
    return graph
