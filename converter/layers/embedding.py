"""Embedding."""

from __future__ import annotations
