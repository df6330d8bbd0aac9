"""Family `json`: the model config, parsed, mutated as a tree and written back where it came from
(the `model_config` attribute of a .h5, config.json inside a .keras, or the model.json file)."""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any

from .containers import read_config_text, write_config_text
from .json_graph import GRAPH_OPS
from .json_values import DEEP_MARK, VALUE_OPS, JsonOp, integral_floats
from .mutant import EXPECT_OK, Mutant, Skip

BREAKING_OPS: dict[str, JsonOp] = {**VALUE_OPS, **GRAPH_OPS}
_DEEP = re.compile(re.escape(json.dumps(DEEP_MARK)[:-1]) + r'(\d+)"')


def serialise(tree: Any) -> str:
    """JSON text as Python writes it (NaN and Infinity included), deep-nesting marks expanded."""
    text = json.dumps(tree)
    return _DEEP.sub(lambda match: "[" * int(match.group(1)) + "]" * int(match.group(1)), text)


def _breaking(tree: Any, rng: random.Random, mutant: Mutant) -> Any:
    """One or two mutations that may make the config invalid (a refusal is then fine)."""
    for _ in range(rng.choice((1, 1, 1, 2))):
        for _attempt in range(8):
            name = rng.choice(sorted(BREAKING_OPS))
            trial = copy.deepcopy(tree)
            try:
                tree, what = BREAKING_OPS[name](trial, rng)
            except Skip:
                continue
            mutant.note(f"{name}: {what}")
            break
    return tree


def _valid(tree: Any, rng: random.Random, mutant: Mutant) -> str | None:
    """A mutation Keras itself accepts, so the case must convert; None when it does not apply."""
    if rng.random() < 0.5:
        try:
            tree, what = integral_floats(tree, rng)
        except Skip:
            return None
        mutant.note(f"integral_floats: {what}")
        mutant.expect = EXPECT_OK
        return serialise(tree)
    # `json.dump(model.to_json(), f)`: the config as one JSON string, which kconvert decodes twice.
    mutant.note("double_encode: the config as a JSON string")
    if mutant.kind == "json":
        mutant.expect = EXPECT_OK
    return json.dumps(serialise(tree))


def mutate(mutant: Mutant, rng: random.Random) -> None:
    tree = json.loads(read_config_text(mutant))
    text = _valid(tree, rng, mutant) if rng.random() < 0.06 else None
    write_config_text(mutant, text if text is not None else serialise(_breaking(tree, rng, mutant)))
