"""The mutator families and how one case is made from (campaign seed, case number): deterministic, so
the same --seed gives the same files."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import mutate_bytes, mutate_escape, mutate_hdf5, mutate_json, mutate_zip
from .mutant import Mutant, place
from .seeds import Seed, is_archive


@dataclass(frozen=True)
class Family:
    mutate: Callable[[Mutant, random.Random], None]
    accepts: Callable[[Seed], bool]


def _any(_: Seed) -> bool:
    return True


FAMILIES: dict[str, Family] = {
    "bytes": Family(mutate_bytes.mutate, _any),
    "json": Family(mutate_json.mutate, _any),
    "hdf5": Family(mutate_hdf5.mutate, _any),
    "zip": Family(mutate_zip.mutate, is_archive),
    "escape": Family(mutate_escape.mutate, _any),
}


def family_of(case_id: int, families: list[str]) -> str:
    """Families take turns, so every family gets its share of any prefix of the campaign."""
    return families[case_id % len(families)]


def make_case(campaign_seed: int, case_id: int, families: list[str], seeds: list[Seed], workdir: Path) -> Mutant:
    rng = random.Random(f"kconvert-fuzz/{campaign_seed}/{case_id}")
    family = FAMILIES[family_of(case_id, families)]
    seed = rng.choice([s for s in seeds if family.accepts(s)])
    mutant = place(seed, workdir / f"{family_of(case_id, families)}-{case_id}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate entries we write on purpose
        family.mutate(mutant, rng)
    return mutant
