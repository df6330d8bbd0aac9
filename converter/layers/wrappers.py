"""Wrappers: TimeDistributed."""

from __future__ import annotations
