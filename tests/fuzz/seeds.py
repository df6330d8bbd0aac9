"""The inputs the mutators start from: every committed fixture model, with its weights file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"

# (model file, weights file or None, kind) in each fixture folder; kind decides how a config is embedded.
_LAYOUTS = (
    ("model.h5", None, "h5"),
    ("model_k2.h5", None, "h5"),
    ("model.keras", None, "keras"),
    ("model.json", "model.weights.h5", "json"),
    ("model_k2.json", "weights_k2.h5", "json"),
)


@dataclass(frozen=True)
class Seed:
    """One convertible input: a model file, its separate weights file (model.json only), and its kind."""

    model: Path
    weights: Path | None
    kind: str  # "h5" (full-model HDF5), "keras" (zip archive) or "json" (architecture + weights .h5)

    @property
    def name(self) -> str:
        return str(self.model.relative_to(FIXTURES)) if self.model.is_relative_to(FIXTURES) else str(self.model)

    @property
    def suffix(self) -> str:
        return {"h5": ".h5", "keras": ".keras", "json": ".json"}[self.kind]


def discover(root: Path = FIXTURES) -> list[Seed]:
    """Every fixture model below `root`, in a fixed order (the same seed must give the same cases)."""
    seeds = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        for model_name, weights_name, kind in _LAYOUTS:
            model = folder / model_name
            weights = folder / weights_name if weights_name else None
            if model.is_file() and (weights is None or weights.is_file()):
                seeds.append(Seed(model, weights, kind))
    return seeds


def is_archive(seed: Seed) -> bool:
    return seed.kind == "keras"
