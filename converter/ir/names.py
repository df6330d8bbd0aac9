"""Deterministic, collision-free names: `base` if free, else the first free of `base_1`, `base_2`, ..."""

from __future__ import annotations


def first_free(base: str, taken: set[str], next_suffix: dict[str, int]) -> str:
    """Take and return the first free name for `base`. `next_suffix` remembers where each base's search
    ended: names are never released, so every suffix below it is still taken, and handing out n names
    of one base costs n steps in all, not n**2 (a hostile file may ask for 10**5 copies of one name)."""
    name, i = base, next_suffix.get(base, 1)
    if name in taken:
        name = f"{base}_{i}"
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        next_suffix[base] = i + 1
    taken.add(name)
    return name


class NameAuthority:
    """The one place a graph's names are handed out: every name taken once, deterministic suffixes."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self._taken: set[str] = set(taken or ())
        self._next_suffix: dict[str, int] = {}

    def unique(self, base: str) -> str:
        """`base` if free, else the first free `base_N`; the name is taken from now on."""
        return first_free(base, self._taken, self._next_suffix)

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def __contains__(self, name: str) -> bool:
        return name in self._taken
