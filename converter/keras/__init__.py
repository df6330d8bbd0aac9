"""Keras file formats and config dialects."""
