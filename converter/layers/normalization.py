"""Normalisation: BatchNormalization, LayerNormalization, GroupNormalization, UnitNormalization."""

from __future__ import annotations
