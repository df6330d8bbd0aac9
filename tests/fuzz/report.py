"""The summary of a campaign: outcomes per family, defects grouped by where in kconvert they happen
(one example each), KconvertErrors without a hint, speed; as text and as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .child import Limits
from .families import FAMILIES
from .outcome import Outcome


@dataclass
class Group:
    key: str
    outcomes: list[Outcome]

    @property
    def types(self) -> Counter[str]:
        return Counter(o.error_type for o in self.outcomes)

    @property
    def families(self) -> Counter[str]:
        return Counter(o.family for o in self.outcomes)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


def _example(outcome: Outcome) -> list[str]:
    lines = [f"      e.g. {outcome.family}-{outcome.case}: {outcome.error_type}: {outcome.message[:160]!r}"]
    lines.append(f"           ops: {'; '.join(outcome.ops)[:300]}")
    if outcome.files:
        lines.append(f"           replay: python -m tests.fuzz --replay {outcome.files[0]}")
    return lines


@dataclass
class Report:
    outcomes: list[Outcome]
    wall_s: float
    seed: int
    jobs: int
    limits: Limits

    @property
    def defects(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict in ("defect", "fuzzer_error")]

    def groups(self) -> list[Group]:
        grouped: dict[str, list[Outcome]] = {}
        for outcome in self.defects:
            grouped.setdefault(outcome.group, []).append(outcome)
        return sorted((Group(k, v) for k, v in grouped.items()), key=lambda g: (-len(g.outcomes), g.key))

    def per_family(self) -> dict[str, Counter[str]]:
        table: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            verdict = f"refused:{o.error_type} (exit {o.exit_code})" if o.verdict == "refused" else o.verdict
            table.setdefault(o.family, Counter())[verdict] += 1
        order = ["baseline", *FAMILIES]
        return {family: table[family] for family in sorted(table, key=lambda f: order.index(f) if f in order else 99)}

    def hintless(self) -> Counter[str]:
        """KconvertErrors with an empty message or no hint, by class and raise site (a statistic only)."""
        return Counter(f"{o.error_type} at {o.location}" for o in self.outcomes
                       if o.verdict == "refused" and not o.has_hint)

    def text(self) -> str:
        rate = len(self.outcomes) / self.wall_s if self.wall_s else 0.0
        lines = [f"kconvert fuzz: seed {self.seed}, {len(self.outcomes)} cases in {self.wall_s:.1f} s "
                 f"({rate:.1f} cases/s, jobs {self.jobs}, memory limit {self.limits.memory_bytes / 2**30:.1f} GiB, "
                 f"timeout {self.limits.timeout_s:g} s)", "",
                 f"{'family':<10}{'cases':>7}{'ok':>7}{'refused':>9}{'defects':>9}{'fuzzer':>8}"]
        for family, counts in self.per_family().items():
            refused = sum(n for k, n in counts.items() if k.startswith("refused:"))
            lines.append(f"{family:<10}{sum(counts.values()):>7}{counts['ok']:>7}{refused:>9}{counts['defect']:>9}"
                         f"{counts['fuzzer_error']:>8}")
        lines.append("\nrefused, by class:")
        for family, counts in self.per_family().items():
            by_class = Counter({k.split(":", 1)[1]: n for k, n in counts.items() if k.startswith("refused:")})
            lines.append(f"  {family}: {_counts(by_class) or '-'}")
        lines += self._expectations() + self._group_lines() + self._hint_lines() + self._slowest()
        return "\n".join(lines) + "\n"

    def _expectations(self) -> list[str]:
        lines = ["\ncases that must convert (valid mutations, baseline) or must be FormatError (escape):"]
        for expect in ("ok", "format_error"):
            picked = [o for o in self.outcomes if o.expect == expect]
            met = sum(o.verdict != "defect" for o in picked)
            lines.append(f"  expect {expect}: {len(picked)} cases, {met} as expected")
        return lines

    def _group_lines(self) -> list[str]:
        groups = self.groups()
        lines = [f"\ndefects: {len(self.defects)} in {len(groups)} groups (by innermost converter/ or runtime/ frame)"]
        for group in groups:
            lines.append(f"  [{len(group.outcomes):>4}] {group.key}")
            lines.append(f"         {_counts(group.types)} | {_counts(group.families)}")
            lines += _example(group.outcomes[0])
        return lines

    def _hint_lines(self) -> list[str]:
        hintless = self.hintless()
        lines = [f"\nKconvertErrors without a hint or with an empty message (statistic, not a failure): "
                 f"{sum(hintless.values())}"]
        lines += [f"  {count:>5}  {where}" for where, count in hintless.most_common(15)]
        return lines

    def _slowest(self) -> list[str]:
        slow = sorted(self.outcomes, key=lambda o: -o.seconds)[:5]
        return ["\nslowest cases:"] + [f"  {o.seconds:7.2f} s  {o.family}-{o.case} {o.verdict}" for o in slow]

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "cases": len(self.outcomes), "wall_s": round(self.wall_s, 2),
            "cases_per_s": round(len(self.outcomes) / self.wall_s, 2) if self.wall_s else None,
            "jobs": self.jobs, "memory_bytes": self.limits.memory_bytes, "timeout_s": self.limits.timeout_s,
            "families": {family: dict(counts) for family, counts in self.per_family().items()},
            "defect_groups": [{"key": g.key, "count": len(g.outcomes), "types": dict(g.types),
                               "families": dict(g.families), "example": g.outcomes[0].to_json()}
                              for g in self.groups()],
            "defects": [o.to_json() for o in self.defects],
            "hintless": dict(self.hintless()),
        }
