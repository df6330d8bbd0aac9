"""Pooling: max/average 1D/2D/3D and their global forms."""

from __future__ import annotations
