"""`python -m tests.fuzz`: a fuzz campaign, or the replay of one saved case."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .campaign import DEFAULT_OUT, Settings, replay, run_campaign
from .child import Limits
from .families import FAMILIES
from .outcome import Outcome


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, help="number of mutated cases (default 2000; no limit with --seconds)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed: the same seed gives the same cases")
    parser.add_argument("--seconds", type=float, help="stop starting new cases after this many seconds")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, default: all")
    parser.add_argument("--jobs", type=int, default=1, help="cases converted at the same time (default 1)")
    parser.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit per case")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it is a hang")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where defect inputs are kept")
    parser.add_argument("--report", type=Path, help="also write the text summary here")
    parser.add_argument("--json", type=Path, help="write the JSON report here")
    parser.add_argument("--no-baseline", action="store_true", help="skip converting the unmutated seeds first")
    parser.add_argument("--replay", type=Path, help="run one saved case again and show its traceback")
    parser.add_argument("--weights", type=Path, help="weights file for --replay (default: its .weights.h5 twin)")
    return parser


def _progress(outcome: Outcome, counts: dict[str, int]) -> None:
    counts["done"] += 1
    counts["defects"] += outcome.verdict in ("defect", "fuzzer_error")
    if counts["done"] % 250 == 0:
        print(f"  {counts['done']} cases, {counts['defects']} defects", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    limits = Limits(int(args.memory_gib * 2**30), args.timeout)
    if args.replay is not None:
        outcome = replay(args.replay, args.weights, limits)
        print(f"{outcome.verdict}: {outcome.error_type} at {outcome.location}\n{outcome.message}")
        print(outcome.traceback)
        return 1 if outcome.verdict == "defect" else 0
    families = tuple(name.strip() for name in args.families.split(",") if name.strip())
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    cases = args.cases if args.cases is not None else (None if args.seconds else 2000)
    settings = Settings(args.seed, cases, args.seconds, families, args.jobs, limits, args.out,
                        not args.no_baseline)
    counts = {"done": 0, "defects": 0}
    report = run_campaign(settings, lambda outcome: _progress(outcome, counts))
    text = report.text()
    print(text)
    if args.report:
        args.report.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 1 if report.defects else 0


if __name__ == "__main__":
    sys.exit(main())
