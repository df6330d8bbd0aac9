"""What a mutator hands the runner: the files of one case, what was done to them, what must come out."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .seeds import Seed

# What the converter must do with a case. "any": convert or refuse with a KconvertError;
# "ok": the mutation keeps the model valid (Keras loads it), so it must convert;
# "format_error": the file reaches outside itself, so anything but a FormatError is a defect.
EXPECT_ANY, EXPECT_OK, EXPECT_FORMAT_ERROR = "any", "ok", "format_error"


@dataclass
class Mutant:
    """One case's files: the model (always) and the weights file (for model.json seeds)."""

    model: Path
    weights: Path | None
    kind: str
    ops: list[str]
    expect: str = EXPECT_ANY
    origin: Path | None = None  # a committed HDF5 file holding the same weights (escape cases link to it)

    def note(self, op: str) -> None:
        self.ops.append(op)


class Skip(Exception):
    """A mutation that does not apply to this file (nothing to delete, no such entry): try another."""


Mutator = Callable[[Mutant, random.Random], str]  # edits the files, returns what it did


def place(seed: Seed, stem: Path) -> Mutant:
    """Copy the seed's files to `stem`.ext (+ `stem`.weights.h5): mutators then edit the copies."""
    model = stem.with_name(stem.name + seed.suffix)
    shutil.copyfile(seed.model, model)
    weights = None
    if seed.weights is not None:
        weights = stem.with_name(stem.name + ".weights.h5")
        shutil.copyfile(seed.weights, weights)
    return Mutant(model, weights, seed.kind, [f"seed {seed.name}"], origin=_weights_origin(seed))


def _weights_origin(seed: Seed) -> Path | None:
    if seed.kind == "h5":
        return seed.model
    if seed.kind == "json":
        return seed.weights
    twin = seed.model.with_name("model.weights.h5")  # save_weights() of the same Keras 3 model
    return twin if twin.is_file() else None


def apply_one(mutant: Mutant, rng: random.Random, ops: dict[str, Mutator], tries: int = 8) -> bool:
    """Apply one op chosen at random (an op that does not fit the file is replaced by another) and
    note it; False when none fits."""
    names = sorted(ops)
    for _ in range(tries):
        name = rng.choice(names)
        try:
            what = ops[name](mutant, rng)
        except Skip:
            continue
        mutant.note(f"{name}: {what}")
        return True
    mutant.note("no applicable mutation")
    return False
