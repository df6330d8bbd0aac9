"""Convolutions: Conv1D/2D/3D, transposed, separable, depthwise."""

from __future__ import annotations
