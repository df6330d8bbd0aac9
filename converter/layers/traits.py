"""What passes may ask a handler beyond its flags: capability protocols, one per question.

A pass never names a layer class or imports a family module: it finds a node's handler through the
registry, checks a trait flag (`folds_batch_norm`, `absorbs_zero_padding`, ...; see LayerHandler) or one
of these protocols, and lets the handler answer in its own terms. A family implements a protocol by
having the method; nothing registers it anywhere else.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from converter.ir import Node, Shape, Tensor
from converter.ir.internal import TimestepMaskSpec
from converter.ir.names import NameAuthority


@runtime_checkable
class FoldsChannelScale(Protocol):
    """A layer linear per output channel (Dense, Conv, ...), into which a following per-channel affine
    map folds (passes/fold_batch_norm.py)."""

    def channel_axis(self, node: Node, rank: int) -> int | None:
        """The axis of the node's rank-`rank` output holding its channels, or None when its output is
        not linear in its weights (a fused activation)."""

    def fold_channel_scale(self, node: Node, scale: np.ndarray, shift: np.ndarray) -> np.ndarray | None:
        """Make the node compute `y * scale + shift` (float64 per-channel vectors); returns the weight
        array it replaced (the caller releases it), or None, changing nothing, when it cannot fold."""


@runtime_checkable
class ChannelAffine(Protocol):
    """A layer computing `x * scale + shift` per channel at inference (BatchNormalization)."""

    def channel_affine(self, node: Node, rank: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(scale, shift, the one positive axis they apply along) for a rank-`rank` input, in float64;
        None when the node normalises several axes."""


@runtime_checkable
class AbsorbsZeroPadding(Protocol):
    """A max pooling that can take the ZeroPadding before it into its own pads (passes/fold_padding.py)."""

    def absorb_zero_padding(self, pool: Node, padding: Node) -> bool:
        """Take the padding node's amounts into the pool's pads when the fold computes the same (the
        handler checks the padding's kind, amounts and format); False, changing nothing, otherwise."""


@runtime_checkable
class Unwraps(Protocol):
    """A wrapper (TimeDistributed, Pipeline) whose node becomes the ordinary nodes it wraps (passes/unwrap.py)."""

    def unwrap(self, node: Node, names: NameAuthority) -> list[Node]:
        """The nodes replacing the wrapper's node, in order; the last produces the wrapper's output tensor."""


@runtime_checkable
class Undoes(Protocol):
    """A node that may undo the node producing its input (a split of batch and time before a merge)."""

    def undone(self, node: Node) -> Tensor | None:
        """The tensor equal to the node's output when it undoes its producer, else None."""


@runtime_checkable
class MaskSource(Protocol):
    """A layer whose output carries a timestep mask it computes itself (Embedding(mask_zero=True),
    Masking): passes/masking.py builds that mask where a mask consumer needs it."""

    def timestep_mask(self, node: Node) -> TimestepMaskSpec | None:
        """How the mask is computed from the node's input, or None when this node makes none."""


@runtime_checkable
class MaskedSequences(Protocol):
    """A mask consumer whose sequence outputs carry on the mask it was given (recurrent layers)."""

    def mask_carrying_outputs(self, node: Node) -> int:
        """How many of the node's first outputs are sequences carrying its input mask (0: none)."""


@runtime_checkable
class PureReshape(Protocol):
    """A layer that may only regroup its input's elements, in order (Reshape; Flatten unless it first moves
    channels): layout folds look through it."""

    def reshapes_only(self, node: Node) -> bool:
        """Whether this node's output is its input's elements in the same order."""


@runtime_checkable
class PermutesInputFeatures(Protocol):
    """A layer reading a flat feature vector through a weight matrix (Dense), which can read the features
    in another order by permuting that matrix's rows instead of the data."""

    def permute_input_features(self, node: Node, dims: tuple[int, ...], perm: tuple[int, ...]) -> bool:
        """The flat input is now the (dims...) block transposed by `perm` (sample axes, 0-based): permute the
        weight rows to match and return True; False, changing nothing, when it cannot."""


@runtime_checkable
class GlobalPooling(Protocol):
    """A global pooling (the `global_pooling` trait) that can keep its pooled dims (keepdims)."""

    def kept_shape(self, node: Node) -> Shape | None:
        """The output shape with keepdims=True, or None when that is not known."""

    def keep_dims(self, node: Node) -> None:
        """Switch the node to keepdims=True."""


@runtime_checkable
class Joins(Protocol):
    """A concatenation along one axis."""

    def joined_axis(self, node: Node) -> int | None:
        """The axis this node joins on, counted from 0."""


@runtime_checkable
class StreamsState(Protocol):
    """A recurrent layer whose initial states can be graph inputs and final states graph outputs, so a
    deployment feeds a long sequence chunk by chunk (passes/streaming.py)."""

    def state_slots(self, node: Node) -> tuple[str, ...]:
        """Short names of the states, in Keras order ("h", or "h", "c"; "cell0/h", ... for stacked cells)."""

    def state_shapes(self, node: Node) -> list[Shape]:
        """Each state's shape, batch first, in the layer's own layout: (batch, units) for LSTM / GRU /
        SimpleRNN, (batch, *space, filters) or (batch, filters, *space) for ConvLSTM."""

    def is_stateful(self, node: Node) -> bool:
        """Keras `stateful=True`: the layer carries its states across calls."""

    def has_initial_states(self, node: Node) -> bool:
        """The call passes initial_state tensors computed in the model."""

    def return_states(self, node: Node) -> None:
        """Make the node also output its final states (the caller adds their tensors)."""
