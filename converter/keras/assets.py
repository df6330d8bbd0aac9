"""Layer state that Keras keeps outside the config and the weights: the `assets/` of a `.keras` archive.

An `IntegerLookup` / `StringLookup` whose vocabulary came from `adapt()` (or, in Keras 3, from a
vocabulary file) has `vocabulary: null` in its config; `save_assets` writes the vocabulary, special
tokens included, as `assets/<inner path>/vocabulary.txt`, one token per line joined by "\\n". The inner
path is the one the weights use (`layers/<saved name>` per level, nested models included). The text is
read back here exactly as Keras' `load_assets` reads it, and becomes the node's `vocabulary` config
value before the handler parses the config: the typed spec then holds it as `vocabulary=[...]` in the
config would have put it (and the Keras archive writer writes it). Nothing is executed.

The `.h5` formats have no assets: Keras 3 and tf_keras write no vocabulary there for an adapted layer,
and the handlers refuse it.
"""

from __future__ import annotations

from converter.errors import FormatError
from converter.ir import Node
from converter.keras.artifacts import KerasArtifact
from converter.keras.weights import LayerKey
from converter.layers.registry import handler_for

VOCABULARY_FILE = "vocabulary.txt"


def asset_path(path: tuple[LayerKey, ...]) -> str:
    """Keras 3's inner path of a layer: `layers/<saved name>` for each enclosing model, then the layer."""
    return "/".join(f"layers/{saved}" for _, saved in path)


def vocabulary_lines(raw: bytes, keras3: bool, what: str) -> list[str]:
    """The lines Keras' `load_assets` gets: the file is opened in text mode (universal newlines); Keras 3
    then uses `splitlines()` and drops trailing empty lines, tf_keras splits on "\\n" only."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(f"{what} is not UTF-8 text: {err}", hint="is the archive complete?") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not keras3:
        return text.split("\n")
    lines = text.splitlines()
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def attach_vocabulary(artifact: KerasArtifact, node: Node, path: tuple[LayerKey, ...]) -> None:
    """Give a lookup layer without a config vocabulary the one its assets hold (if they hold one)."""
    handler = handler_for(node)
    tokens = None if handler is None else handler.vocabulary_asset
    if tokens is None or node.attrs.get("vocabulary") is not None:
        return
    inner = asset_path(path)
    raw = artifact.assets(inner).get(VOCABULARY_FILE)
    if raw is None:
        return
    what = f"{artifact.path.name} asset assets/{inner}/{VOCABULARY_FILE} of layer '{node.layer_name}'"
    # Archives are Keras 3's unless they say otherwise (tf_keras records its 2.x version).
    keras3 = artifact.keras_version is None or artifact.keras_major >= 3
    lines = vocabulary_lines(raw, keras3, what)
    if tokens == "str":
        node.attrs["vocabulary"] = lines
        return
    try:
        node.attrs["vocabulary"] = [int(line) for line in lines]
    except ValueError:
        bad = next(line for line in lines if not _is_int(line))
        raise FormatError(f"{what} holds {bad!r}, not an integer token", layer=node.layer_name,
                          hint="is the archive complete?") from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
