"""`--target-onnxruntime X.Y`: the newest opset and ONNX IR version an onnxruntime release loads.

A file stamped with a newer IR version fails to load ("Unsupported model IR version"), one importing a
newer opset fails too ("opset ... is under development / not supported"): the target picks the opset and
IR version that release takes. Source: onnxruntime's compatibility table (docs/reference/compatibility.md
in microsoft/onnxruntime, "ONNX opset support"), rows 1.6 to 1.20, the newest it lists. 1.15 is listed
with opset 19 but IR 8, while opset 19 needs IR 9: taken as listed, so opset 19 for 1.15 is refused.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from converter.errors import KconvertWarning, UsageError
from converter.export.onnx import DEFAULT_OPSET, MIN_OPSET
from converter.export.onnx_protos import IR_VERSION_FOR_OPSET


@dataclass(frozen=True)
class OrtRelease:
    """What one onnxruntime minor release loads: the newest ONNX opset and IR version."""

    name: str
    max_opset: int
    max_ir: int


# release -> (max opset, max IR version), newest first (see the module docstring for the sources).
_TABLE: dict[str, tuple[int, int]] = {
    "1.32": (28, 14), "1.31": (26, 13), "1.30": (26, 13), "1.29": (26, 13), "1.28": (26, 13), "1.27": (26, 13),
    "1.26": (26, 13), "1.25": (26, 13), "1.24": (25, 13), "1.23": (23, 11), "1.22": (22, 10), "1.21": (22, 10),
    "1.20": (21, 10), "1.19": (21, 10), "1.18": (21, 10), "1.17": (20, 9), "1.16": (19, 9), "1.15": (19, 8),
    "1.14": (18, 8), "1.13": (17, 8), "1.12": (17, 8), "1.11": (16, 8), "1.10": (15, 8), "1.9": (15, 8),
    "1.8": (14, 7), "1.7": (13, 7), "1.6": (13, 7),
}
RELEASES: dict[str, OrtRelease] = {name: OrtRelease(name, opset, ir) for name, (opset, ir) in _TABLE.items()}
NEWEST = next(iter(RELEASES))
# Releases before 1.6 implement opset 12 at most (same table), below what kconvert writes.
_TOO_OLD_MAX_OPSET = {"0": 10, "1.0": 11, "1.1": 11, "1.2": 11, "1.3": 12, "1.4": 12, "1.5": 12}


@dataclass(frozen=True)
class TargetChoice:
    """The opset and IR version written for a release."""

    release: OrtRelease
    opset: int
    ir_version: int

    def to_dict(self) -> dict[str, object]:
        return {"onnxruntime": self.release.name, "opset": self.opset, "ir_version": self.ir_version,
                "max_opset": self.release.max_opset, "max_ir_version": self.release.max_ir}


def known_releases() -> str:
    return ", ".join(sorted(RELEASES, key=_version_key))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def find_release(text: str) -> OrtRelease:
    """X.Y or X.Y.Z (the patch level does not change what a release loads) -> its row of the table."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", text)
    if match is None:
        raise UsageError(f"--target-onnxruntime {text}: expected a release as MAJOR.MINOR, e.g. 1.16",
                         hint=f"known releases: {known_releases()}")
    name = f"{int(match[1])}.{int(match[2])}"
    if name in RELEASES:
        return RELEASES[name]
    too_old = _TOO_OLD_MAX_OPSET.get(name, _TOO_OLD_MAX_OPSET["0"] if match[1] == "0" else None)
    if too_old is not None:
        raise UsageError(f"onnxruntime {name} implements ONNX opset {too_old} at most, and kconvert writes opset "
                         f"{MIN_OPSET} or newer", hint="onnxruntime 1.6 is the oldest release kconvert can target")
    if match[1] == "1" and _version_key(name) > _version_key(NEWEST):
        # Newer than the table: onnxruntime loads every model an older release loads (its compatibility
        # promise), so the newest row's limits are safe for it, if not the newest it could take.
        warnings.warn(KconvertWarning(f"onnxruntime {name} is newer than kconvert's compatibility table (up to "
                                      f"{NEWEST}): writing what {NEWEST} loads, which {name} loads too"), stacklevel=2)
        newest = RELEASES[NEWEST]
        return OrtRelease(name, newest.max_opset, newest.max_ir)
    raise UsageError(f"onnxruntime {name} is not in kconvert's compatibility table",
                     hint=f"known releases: {known_releases()}")


def choose(text: str, requested_opset: int | None) -> TargetChoice:
    """The opset (the requested one, else the default, capped by the release's newest) and the IR version
    that opset needs; an opset or IR version the release does not load is a UsageError."""
    release = find_release(text)
    if requested_opset is not None and requested_opset > release.max_opset:
        raise UsageError(f"--opset {requested_opset} is newer than onnxruntime {release.name} loads (opset "
                         f"{release.max_opset} at most)",
                         hint=f"drop --opset (it becomes {release.max_opset}), or give --opset {release.max_opset} "
                              "or lower, or target a newer onnxruntime")
    opset = min(DEFAULT_OPSET if requested_opset is None else requested_opset, release.max_opset)
    ir_version = IR_VERSION_FOR_OPSET[opset]
    if ir_version > release.max_ir:
        raise UsageError(f"opset {opset} needs ONNX IR version {ir_version}, and onnxruntime {release.name} loads IR "
                         f"version {release.max_ir} at most", hint=f"give --opset {_newest_opset_for(release)}")
    return TargetChoice(release, opset, ir_version)


def _newest_opset_for(release: OrtRelease) -> int:
    return max(opset for opset, ir in IR_VERSION_FOR_OPSET.items()
               if ir <= release.max_ir and opset <= release.max_opset)


def oldest_release_for(opset: int) -> str | None:
    """The oldest release that loads `opset` (and the IR version it needs); None when none in the table does."""
    fitting = [r for r in RELEASES.values() if r.max_opset >= opset and r.max_ir >= IR_VERSION_FOR_OPSET[opset]]
    return min((r.name for r in fitting), key=_version_key, default=None)


def readme_table() -> str:
    """The README's table, from the one above (tests/test_target_onnxruntime.py keeps them equal)."""
    rows = [f"| {r.name} | {r.max_ir} | {r.max_opset} | {min(DEFAULT_OPSET, r.max_opset)} |" for r in RELEASES.values()]
    return "\n".join(["| onnxruntime release | newest IR version | newest opset | opset written by default |",
                      "|---|---|---|---|", *rows])
