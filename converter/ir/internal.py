"""kconvert's own node kinds: inserted by passes, never read from a file, in a namespace of their own.

The `kconvert:` prefix keeps them apart from Keras class names, which are Python identifiers (a Keras 3
model may hold a `Transpose` op node of its own). The boundary refuses any class name with a ':'
(keras/topology.py), and the registry keeps these kinds out of every table of Keras classes (their
handlers are `internal`). Their specs live here, beside their names, so a pass builds one without
importing a layer family.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.ir.shape import Dim, Perm
from converter.ir.spec import LayerSpec

NAMESPACE = "kconvert:"
INTERNAL_TRANSPOSE = NAMESPACE + "Transpose"
INTERNAL_TIMESTEP_MASK = NAMESPACE + "TimestepMask"
INTERNAL_ATTENTION_MASK = NAMESPACE + "AttentionMask"
INTERNAL_MERGE_BATCH_TIME = NAMESPACE + "MergeBatchTime"
INTERNAL_SPLIT_BATCH_TIME = NAMESPACE + "SplitBatchTime"
# An unwrapped SpectralNormalization's cast of its layer's output back to the input's integer dtype.
CAST_TO_INPUT_DTYPE = NAMESPACE + "CastToInputDtype"


def is_internal(kind: str) -> bool:
    return kind.startswith(NAMESPACE)


@dataclass(frozen=True)
class PermSpec(LayerSpec):
    """kconvert:Transpose (the layout pass): `y = transpose(x, perm)`, batch axis included."""

    perm: Perm


@dataclass(frozen=True)
class TimestepMaskSpec(LayerSpec):
    """kconvert:TimestepMask (the masking pass): `source` = "masking" (input: the Masking layer's input,
    compared with `mask_value`) or "embedding" (input: the token ids, masked where 0)."""

    source: str = "masking"
    mask_value: float = 0.0


@dataclass(frozen=True)
class AttentionMaskSpec(LayerSpec):
    """kconvert:AttentionMask (the masking pass): one of "query" / "value" / "key" / "given" per input."""

    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitBatchTimeSpec(LayerSpec):
    """kconvert:SplitBatchTime (the unwrap pass): the (batch, time) dims the merged axis splits back into."""

    batch: Dim = None
    time: Dim = None


@dataclass(frozen=True)
class CastSpec(LayerSpec):
    """kconvert:CastToInputDtype (the unwrap pass, for SpectralNormalization): the dtype to cast back to."""

    dtype: str
