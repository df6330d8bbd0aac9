"""Spatial resampling and padding: UpSampling, ZeroPadding, Cropping."""

from __future__ import annotations
