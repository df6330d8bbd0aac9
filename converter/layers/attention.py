"""Attention layers: Attention, AdditiveAttention, MultiHeadAttention, EinsumDense."""

from __future__ import annotations
