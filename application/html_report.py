"""`kconvert verify --html FILE`: one self-contained page (inline CSS, inline SVG, no script, no URL) with the
per-output statistics and, for each localisation, the error of every Keras layer along the model's depth.

Every name on the page comes from a model file or the user: each goes through `_text` (html.escape) on its
way in, and a Content-Security-Policy forbids the page to load anything, so a hostile name can neither run
script nor make the page fetch a URL when it is opened.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass

from application.verify import VerifyResult
from runtime.localize_types import LayerError, Localization
from runtime.stats import OutputStats

__all__ = ["html_page"]

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 28px; }
.pass { color: #107c10; } .fail { color: #c50f1f; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.name { text-align: left; font-family: monospace; }
tr.bad td { background: #fdecec; } tr.first td { background: #f8c9c9; font-weight: bold; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.header dt { font-weight: bold; } dl.header dd { margin: 0; font-family: monospace; }
svg.plot { background: #fff; border: 1px solid #ddd; }
svg .axis { stroke: #333; } svg .grid { stroke: #eee; } svg .error-line { fill: none; stroke: #0b62a4; }
svg .tolerance { stroke: #c50f1f; stroke-dasharray: 6 4; } svg .point { fill: #0b62a4; }
svg .point.bad { fill: #c50f1f; } svg .first-divergent { fill: none; stroke: #c50f1f; stroke-width: 2.5; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"  # nothing is fetched, nothing runs

PLOT_WIDTH, PLOT_HEIGHT = 960, 360
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 20, 50
ZERO_FLOOR = 1e-12  # an exact 0 error is drawn at the bottom of the scale, not at log(0)


def html_page(result: VerifyResult) -> str:
    status = '<span class="pass">pass</span>' if result.ok else '<span class="fail">FAIL</span>'
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             f"<title>kconvert verify {_text(result.model.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>kconvert verify <code>{_text(result.model.name)}</code>: {status}</h1>",
             _header(result), "<h2>Outputs</h2>", _stats_table(result)]
    parts.extend(_localization_section(loc) for loc in result.localizations)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


def _header(result: VerifyResult) -> str:
    rtol, atol = result.default_tolerance
    rows = [("model", str(result.model)), ("against", result.reference_name),
            ("result", "pass" if result.ok else "FAIL"), ("providers", ", ".join(result.providers) or "none"),
            ("tolerance", f"rtol {rtol:g}, atol {atol:g}")]
    if result.inputs is not None:
        rows.append(("inputs", result.inputs.describe().removeprefix("inputs: ")))
    rows.extend((f"tolerance of {name}", f"rtol {r:g}, atol {a:g}") for name, (r, a) in _own_tolerances(result))
    return '<dl class="header">' + "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in rows) + "</dl>"


def _own_tolerances(result: VerifyResult) -> list[tuple[str, tuple[float, float]]]:
    """The outputs whose tolerance (--tol) differs from the default one."""
    own = {s.name: (s.rtol, s.atol) for r in result.sets for s in r.outputs}
    return sorted((name, tol) for name, tol in own.items() if tol != result.default_tolerance)


def _table(css_class: str, columns: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _stats_cells(s: OutputStats) -> str:
    values = [_number(s.max_abs), _number(s.mean_abs), _number(s.median_abs), _number(s.p99_abs),
              _number(s.max_rel), _number(s.cosine, 7), f"{s.out_of_tolerance} ({s.fraction_out:.2%})",
              _number(s.atol_needed), s.status]
    return "".join(f"<td>{_text(v)}</td>" for v in values)


STAT_COLUMNS = ("max abs", "mean abs", "median abs", "p99 abs", "max rel", "cosine", "out of tol", "atol needed",
                "status")


def _stats_table(result: VerifyResult) -> str:
    rows = [f'<tr class="{"ok" if s.ok else "bad"}"><td>{r.index}</td><td class="name">{_text(s.name)}</td>'
            f"<td>{_text(list(s.shape))}</td>{_stats_cells(s)}</tr>"
            for r in result.sets for s in r.outputs]
    return _table("outputs", ("set", "output", "shape", *STAT_COLUMNS), rows)


def _layer_label(error: LayerError) -> str:
    return error.layer if error.output == 0 else f"{error.layer}[{error.output}]"


def _localization_section(loc: Localization) -> str:
    first = loc.first_divergent
    if first is None:
        summary = f"every one of the {len(loc.layers)} compared layer outputs is within tolerance"
    else:
        folded = f" + {_text(', '.join(first.folded))} folded in" if first.folded else ""
        summary = (f"first divergent layer: <code>{_text(_layer_label(first))}</code> ({_text(first.class_name)})"
                   f"{folded} "
                   f"at depth {first.depth}, max abs {_text(_number(first.stats.max_abs))}; "
                   f"{len(loc.divergent_after)} diverging layers after it")
    unmapped = (f"<p>{len(loc.unmapped)} Keras layers have no ONNX value (folded, removed or renamed): "
                f"{_text(', '.join(loc.unmapped))}</p>") if loc.unmapped else ""
    peak = f"; peak intermediate data {_size(loc.peak_bytes)}" if loc.peak_bytes else ""
    return (f'<section class="localization" data-mode="{_text(loc.mode)}"><h2>Localisation ({_text(loc.mode)})</h2>'
            f"<p>{summary}{peak}</p>{unmapped}{error_plot(loc)}{_layers_table(loc)}</section>")


def _layers_table(loc: Localization) -> str:
    first = loc.first_divergent
    rows = []
    for e in loc.layers:
        css = "first" if e is first else ("ok" if e.ok else "bad")
        s = e.stats
        cells = [str(e.depth), _layer_label(e), e.class_name, _number(s.max_abs), _number(s.max_rel),
                 _number(s.cosine, 7), f"{s.out_of_tolerance} ({s.fraction_out:.2%})", s.status]
        rows.append(f'<tr class="{css}">' + "".join(
            f'<td class="name">{_text(v)}</td>' if i in (1, 2) else f"<td>{_text(v)}</td>"
            for i, v in enumerate(cells)) + "</tr>")
    columns = ("depth", "layer", "class", "max abs", "max rel", "cosine", "out of tol", "status")
    return _table("layers", columns, rows)


@dataclass(frozen=True)
class _Scale:
    """Maps a layer's position and its error onto the plot: x linear in the row index, y in log10 decades."""

    count: int
    low: int  # decades shown: 10**low .. 10**high
    high: int

    def x(self, index: int) -> float:
        inner = PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        return MARGIN_LEFT + (inner * (index + 0.5) / self.count if self.count else 0.0)

    def y(self, error: float) -> float:
        if math.isnan(error) or error == math.inf:
            return float(MARGIN_TOP)  # off the scale: drawn on its top edge
        decade = math.log10(max(error, 10.0**self.low))
        inner = PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        return MARGIN_TOP + inner * (self.high - min(decade, self.high)) / (self.high - self.low)


def _scale(loc: Localization, tolerance: float) -> _Scale:
    errors = [e.stats.max_abs for e in loc.layers]
    values = [v for v in [*errors, tolerance] if math.isfinite(v) and v > 0] or [ZERO_FLOOR]
    low = math.floor(math.log10(min(values)))
    high = max(math.ceil(math.log10(max(values))), low + 1)
    if 0.0 in errors:
        low -= 1  # a decade below the smallest error, where the exact zeros sit
    return _Scale(len(loc.layers), low, high)


def _tolerance(loc: Localization) -> float:
    """The atol the layers were compared with (the most common one, should they differ)."""
    atols = [e.stats.atol for e in loc.layers]
    return max(set(atols), key=atols.count) if atols else 0.0


def error_plot(loc: Localization) -> str:
    """An SVG of each layer output's max abs error (log y) in depth order: a step line, a point per output
    (its <title> the tooltip), a ring on the first divergent layer, the tolerance as a dashed line."""
    tolerance = _tolerance(loc)
    scale = _scale(loc, tolerance)
    parts = [f'<svg class="plot" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}"'
             f' role="img" aria-label="max abs error per Keras layer ({_text(loc.mode)})">',
             *_axes(scale, [e.depth for e in loc.layers]), _tolerance_line(scale, tolerance), _step_line(loc, scale),
             *_points(loc, scale)]
    parts.append("</svg>")
    return "".join(parts)


def _axes(scale: _Scale, depths: list[int]) -> list[str]:
    left, bottom = MARGIN_LEFT, PLOT_HEIGHT - MARGIN_BOTTOM
    right = PLOT_WIDTH - MARGIN_RIGHT
    parts = [f'<line class="axis" x1="{left}" y1="{MARGIN_TOP}" x2="{left}" y2="{bottom}"/>',
             f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>']
    for decade in range(scale.low, scale.high + 1):
        y = scale.y(10.0**decade)
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{decade}</text>')
    step = max(1, math.ceil(scale.count / 20))  # at most ~20 labels on the depth axis
    parts.extend(f'<text x="{scale.x(i):.1f}" y="{bottom + 16}" text-anchor="middle">{depths[i]}</text>'
                 for i in range(0, scale.count, step))
    parts.append(f'<text class="x-label" x="{(left + right) / 2:.1f}" y="{PLOT_HEIGHT - 10}" text-anchor="middle">'
                 "Keras layer depth (one step per layer output)</text>")
    parts.append(f'<text class="y-label" transform="translate(16 {(MARGIN_TOP + bottom) / 2:.1f}) rotate(-90)" '
                 'text-anchor="middle">max abs error (log scale)</text>')
    return parts


def _tolerance_line(scale: _Scale, tolerance: float) -> str:
    if tolerance <= 0:
        return ""
    y = scale.y(tolerance)
    return (f'<line class="tolerance" x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{PLOT_WIDTH - MARGIN_RIGHT}" '
            f'y2="{y:.1f}"><title>atol {tolerance:g}</title></line>'
            f'<text x="{PLOT_WIDTH - MARGIN_RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">atol {tolerance:g}</text>')


def _step_line(loc: Localization, scale: _Scale) -> str:
    if not loc.layers:
        return ""
    half = (scale.x(1) - scale.x(0)) / 2 if scale.count > 1 else 0.0
    points = []
    for i, e in enumerate(loc.layers):
        y = scale.y(e.stats.max_abs)
        points.append(f"{scale.x(i) - half:.1f},{y:.1f} {scale.x(i) + half:.1f},{y:.1f}")
    return f'<polyline class="error-line" points="{" ".join(points)}"/>'


def _points(loc: Localization, scale: _Scale) -> list[str]:
    first = loc.first_divergent
    parts = []
    for i, e in enumerate(loc.layers):
        x, y = scale.x(i), scale.y(e.stats.max_abs)
        tip = _text(f"depth {e.depth}: {_layer_label(e)} ({e.class_name}), max abs {_number(e.stats.max_abs)}, "
                    f"{e.stats.status}")
        parts.append(f'<circle class="point {"ok" if e.ok else "bad"}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                     f"<title>{tip}</title></circle>")
        if e is first:
            parts.append(f'<circle class="first-divergent" cx="{x:.1f}" cy="{y:.1f}" r="8">'
                         f"<title>first divergent: {tip}</title></circle>")
    return parts
