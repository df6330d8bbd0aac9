"""What `kconvert verify --localize` finds, as data: per Keras layer, the error of the ONNX value that holds
that layer's output against Keras' own output of the layer. The reports (terminal, JSON, JUnit, Markdown,
HTML) render these; runtime/localize.py computes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.stats import OutputStats

ACCUMULATED = "accumulated"  # the whole ONNX model run on the inputs; each mapped value compared
ISOLATED = "isolated"  # each layer's ONNX ops fed Keras' own values of the layer's inputs
MODES = (ACCUMULATED, ISOLATED)
DEFAULT_BUDGET_BYTES = 256 << 20  # intermediate values held at once (both sides), unless --localize-budget


@dataclass(frozen=True)
class LayerError:
    """One Keras layer output (`output` counts the layer's outputs) against the ONNX value that holds it;
    `depth` is the layer's position in the model's topological order (0 = first layer after the inputs)."""

    depth: int
    layer: str
    class_name: str
    output: int
    value: str
    stats: OutputStats
    folded: tuple[str, ...] = ()  # layers whose computation the conversion folded into this value's ops

    @property
    def ok(self) -> bool:
        return self.stats.ok

    @property
    def title(self) -> str:
        """How reports name it: `bn (BatchNormalization)`, `+ conv2d folded in` when the ONNX ops that compute
        it also compute those layers (so a divergence here may be in either)."""
        folded = f" + {', '.join(self.folded)} folded in" if self.folded else ""
        return f"{self.layer} ({self.class_name}){folded}"

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "layer": self.layer, "class_name": self.class_name, "output": self.output,
                "value": self.value, "folded": list(self.folded), **self.stats.to_dict()}


@dataclass(frozen=True)
class Localization:
    """The layers of one localisation run, in depth order. `unmapped` names the Keras layers the ONNX file
    holds no value for (folded into a neighbour, removed as an identity at inference, or renamed by an
    optimiser); `peak_bytes` is the most intermediate data (ONNX and Keras sides) held at once."""

    mode: str
    layers: list[LayerError]
    unmapped: list[str] = field(default_factory=list)
    peak_bytes: int = 0

    @property
    def first_divergent(self) -> LayerError | None:
        return next((e for e in self.layers if not e.ok), None)

    @property
    def divergent_after(self) -> list[LayerError]:
        """The layers after the first divergent one that diverge too."""
        first = self.first_divergent
        return [] if first is None else [e for e in self.layers if not e.ok and e.depth > first.depth]

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergent
        return {"mode": self.mode, "first_divergent": None if first is None else first.layer,
                "first_divergent_class": None if first is None else first.class_name,
                "first_divergent_folded": [] if first is None else list(first.folded),
                "layers": [e.to_dict() for e in self.layers], "unmapped": list(self.unmapped),
                "peak_bytes": self.peak_bytes}
