"""The Keras version a file records, resolved once into the major version every rule depends on."""

from __future__ import annotations

# Files that record no version predate Keras 3 (Keras 3 always writes one): Keras 2 rules apply.
UNRECORDED_MAJOR = 2


def keras_major(version: str | None) -> int:
    """1, 2 or 3 from a recorded version string ("2.15.0", "3.3.3", "1.2.2-tf"); 2 when unrecorded or odd."""
    if not isinstance(version, str):
        return UNRECORDED_MAJOR
    head = version.strip().split(".")[0]
    return int(head) if head.isdigit() and 1 <= int(head) <= 3 else UNRECORDED_MAJOR
