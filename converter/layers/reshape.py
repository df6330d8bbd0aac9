"""Reshaping: Flatten, Reshape, Permute, RepeatVector."""

from __future__ import annotations
