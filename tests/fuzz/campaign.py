"""A campaign: the baseline (every seed unmutated), then numbered cases until the count or the time
budget runs out; defect inputs are kept in the output folder for --replay, everything else deleted."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .child import Limits, Task
from .families import FAMILIES, family_of
from .mutant import EXPECT_ANY, EXPECT_OK, Mutant
from .outcome import Outcome
from .report import Report
from .runner import run_tasks
from .seeds import Seed, discover

DEFAULT_OUT = Path("/tmp/kconvert-fuzz")


@dataclass(frozen=True)
class Settings:
    seed: int = 1
    cases: int | None = 2000
    seconds: float | None = None
    families: tuple[str, ...] = tuple(FAMILIES)
    jobs: int = 1
    limits: Limits = field(default_factory=Limits)
    out: Path = DEFAULT_OUT
    baseline: bool = True


def _tasks(settings: Settings, seeds: list[Seed], workdir: Path) -> Iterator[Task]:
    if settings.baseline:
        for index, seed in enumerate(seeds):
            mutant = Mutant(seed.model, seed.weights, seed.kind, [f"seed {seed.name}, unmutated"], EXPECT_OK)
            yield Task(index, "baseline", workdir, replay=mutant)
    case = 0
    while settings.cases is None or case < settings.cases:
        yield Task(case, family_of(case, list(settings.families)), workdir, settings.seed, settings.families,
                   tuple(seeds))
        case += 1


def _keep_defects(outcome: Outcome, workdir: Path, out: Path) -> None:
    """Move a defect's files (and a .case.json describing it) to `out`; delete everyone else's."""
    stem = f"{outcome.family}-{outcome.case}"
    made = sorted(workdir.glob(f"{stem}.*"))
    if outcome.verdict != "defect":
        for path in made:
            path.unlink()
        return
    moved = {path.name: str(shutil.move(path, out / path.name)) for path in made}
    outcome.files = [moved.get(Path(name).name, name) for name in outcome.files]
    (out / f"{stem}.case.json").write_text(json.dumps(outcome.to_json(), indent=1))


def run_campaign(settings: Settings, progress: Callable[[Outcome], None] | None = None) -> Report:
    settings.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="work-", dir=settings.out))
    started = time.monotonic()
    stop_at = None if settings.seconds is None else started + settings.seconds

    def finished(outcome: Outcome) -> None:
        _keep_defects(outcome, workdir, settings.out)
        if progress is not None:
            progress(outcome)

    try:
        outcomes = run_tasks(_tasks(settings, discover(), workdir), settings.limits, settings.jobs, stop_at, finished)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Report(outcomes, time.monotonic() - started, settings.seed, settings.jobs, settings.limits)


def _case_record(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name.split(".")[0] + ".case.json")
    return dict(json.loads(sidecar.read_text())) if sidecar.is_file() else {}


def replay(path: Path, weights: Path | None, limits: Limits) -> Outcome:
    """Run one saved file again (its .weights.h5 twin and its expectation found beside it)."""
    twin = path.with_name(path.name.split(".")[0] + ".weights.h5")
    if weights is None and twin.is_file() and twin != path:
        weights = twin
    record = _case_record(path)
    expect = str(record.get("expect", EXPECT_ANY))
    mutant = Mutant(path, weights, "?", [f"replay {path}"] + [str(op) for op in record.get("ops", [])], expect)
    with tempfile.TemporaryDirectory() as scratch:
        task = Task(int(str(record.get("case", 0))), str(record.get("family", "replay")), Path(scratch), replay=mutant)
        return run_tasks(iter([task]), limits)[0]
