"""Keras Hub layers' own constructor arguments, which the boundary's argument table does not know: the one
error a damaged value gives (the handlers check each kind and bound themselves)."""

from __future__ import annotations

from converter.errors import FormatError
from converter.layers.spec import Config


def damaged(config: Config, key: str, why: str) -> FormatError:
    """`key` holds a value Keras Hub never writes: the file is damaged or hand-edited."""
    shown = repr(config.raw.get(key))[:60]
    return FormatError(f"{config.ctx.kind} '{config.ctx.layer_name}' has {key}={shown}: {why}",
                       layer=config.ctx.layer_name, hint="is the file's config complete and undamaged?")
