"""Preprocessing layers that live inside models: Rescaling, Normalization, Resizing, CenterCrop."""

from __future__ import annotations
