"""Activation layers: ReLU, LeakyReLU, PReLU, ELU, Softmax, ThresholdedReLU."""

from __future__ import annotations
