"""CI stage of the fuzzer (tests/fuzz): a time-budgeted campaign per mutator family, asserting that
every mutated fixture ends in a clean conversion or a KconvertError: no other exception, no hang, no
memory blow-up, no ONNX that onnx.checker or onnxruntime refuses, no read outside the file.

Budget: KCONVERT_FUZZ_SECONDS (default 150) for the whole stage, split evenly over the families, so
`pytest -n 2` spreads them. The seed is fixed for reproducible CI; KCONVERT_FUZZ_SEED rotates it.
The campaign runs in its own process (a clean fork server, whatever this worker has imported).
A longer run: `python -m tests.fuzz --cases 10000 --seed 1` (see README, Fuzzing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.families import FAMILIES, make_case
from fuzz.seeds import discover

REPO = Path(__file__).resolve().parents[1]
STAGE_SECONDS = float(os.environ.get("KCONVERT_FUZZ_SECONDS", "150"))
SEED = int(os.environ.get("KCONVERT_FUZZ_SEED", "20240"))


@pytest.mark.fuzz
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fuzz_family_has_no_defects(family: str, tmp_path: Path) -> None:
    budget = STAGE_SECONDS / len(FAMILIES)
    report, summary = tmp_path / "report.json", tmp_path / "report.txt"
    command = [sys.executable, "-m", "tests.fuzz", "--families", family, "--seed", str(SEED), "--seconds",
               f"{budget:g}", "--no-baseline", "--out", str(tmp_path), "--json", str(report), "--report", str(summary)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=budget + 120)
    assert report.is_file(), f"the fuzzer did not finish (exit {done.returncode}):\n{done.stderr[-3000:]}"
    result = json.loads(report.read_text())
    assert result["cases"] > 0, f"no {family} case ran in {budget:g} s"
    if result["defects"]:
        pytest.fail(f"{family}: {len(result['defects'])} defects (seed {SEED})\n{summary.read_text()}", pytrace=False)


@pytest.mark.fuzz
def test_the_same_seed_gives_the_same_cases(tmp_path: Path) -> None:
    """The fuzzer's own promise (a reported case can be made again from its seed), not kconvert's."""
    seeds, families = discover(), list(FAMILIES)

    def cases(folder: Path) -> list[tuple[list[str], list[bytes]]]:
        folder.mkdir()
        made = [make_case(7, case, families, seeds, folder) for case in range(3 * len(families))]
        # HDF5 stamps virtual datasets with their creation time: compare those by their recipe only.
        return [(m.ops, [] if "virtual_dataset" in m.ops[-1] else [p.read_bytes() for p in (m.model, m.weights) if p])
                for m in made]

    first, second = cases(tmp_path / "a"), cases(tmp_path / "b")
    assert [ops for ops, _ in first] == [ops for ops, _ in second]
    assert first == second
