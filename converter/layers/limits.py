"""Limits on what a layer config may make kconvert allocate, or declare as an output.

Handlers build constants from config values (DFT kernels, mel filter banks, one-hot ranges, adaptive
pooling windows, resampling matrices, zero states). A config is untrusted input: a declared size of
2**31 must end in a clear error naming the layer and the argument, not in numpy filling all memory or a
Python loop running for an hour. `check_elements` is called with the element count before the constant
is built; `check_output` with the output shape of a layer whose config multiplies its input's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from converter.errors import FormatError
from converter.ir import Node, Shape

# 2**28 float32 elements are 1 GiB: far above any real layer's constant, far below a machine's memory.
MAX_CONSTANT_ELEMENTS = 2**28
# Tables computed entry by entry in Python (pooling windows, resampling indices, one-hot ranges) take
# about a second per million entries: a declared size above this would look like a hang.
MAX_TABLE_ENTRIES = 2**22
# ONNX Runtime indexes a tensor's elements with 32-bit ints in many kernels; a per-sample output past
# this is a config that no real model has (an UpSampling size or a padding of 70000).
MAX_SAMPLE_ELEMENTS = 2**31 - 1

HINT = "the sizes in the layer's config are far beyond a real model's; the file is damaged or hostile"


def check_elements(node: Node, dims: int | Iterable[int], what: str, source: str,
                   limit: int = MAX_CONSTANT_ELEMENTS) -> None:
    """Refuse building a constant of `dims` (a count or a shape) elements when it passes `limit`;
    `source` names the arguments that set its size."""
    count = dims if isinstance(dims, int) else math.prod(dims)
    if count > limit:
        raise FormatError(f"{node.kind} '{node.layer_name}' would need {what} of {count} elements "
                          f"(more than {limit}) from its {source}", layer=node.layer_name, hint=HINT)


def check_output(node: Node, shape: Shape, source: str) -> Shape:
    """Refuse an output whose static sample dims (all but the batch) hold more values than any model's;
    `source` names the arguments that set its size."""
    count = math.prod(d for d in shape[1:] if isinstance(d, int))
    if count > MAX_SAMPLE_ELEMENTS:
        raise FormatError(f"{node.kind} '{node.layer_name}' would output {count} values per sample "
                          f"({tuple(shape[1:])}) from its {source}", layer=node.layer_name, hint=HINT)
    return shape
