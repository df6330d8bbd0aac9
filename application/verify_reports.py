"""`kconvert verify`'s CI reports: JUnit XML (a testcase per test set x output; a failure carries the
statistics and, when localised, the first divergent Keras layer) and a Markdown summary for a CI job page.
Every name comes from a model file or the user: XML-invalid characters are replaced, Markdown code spans
survive backticks, pipes and newlines."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from application.verify import VerifyResult
from runtime.localize_types import LayerError, Localization
from runtime.stats import OutputStats

__all__ = ["junit_xml", "markdown"]


def _failure_text(stats: OutputStats, localizations: list[Localization]) -> str:
    text = (f"{stats.out_of_tolerance} of the elements ({stats.fraction_out:.2%}) out of tolerance "
            f"(rtol {stats.rtol:g}, atol {stats.atol:g}); max abs {stats.max_abs:.3g}, max rel "
            f"{stats.max_rel:.3g}, p99 abs {stats.p99_abs:.3g}, cosine {stats.cosine:.6f}; atol needed "
            f"{stats.atol_needed:.3g}; shape {list(stats.shape)} vs expected {list(stats.expected_shape)}")
    return "".join([text, *("\n" + _first_divergent_line(loc) for loc in localizations)])


def _first_divergent_line(loc: Localization) -> str:
    first = loc.first_divergent
    if first is None:
        return f"localisation ({loc.mode}): no Keras layer diverges ({len(loc.layers)} layer outputs compared)"
    s = first.stats
    return (f"localisation ({loc.mode}): first divergent Keras layer {first.title} at depth "
            f"{first.depth}, max abs {s.max_abs:.3g}, max rel {s.max_rel:.3g}, cosine {s.cosine:.6f}; "
            f"{len(loc.divergent_after)} diverging layers after it")


def _folded_md(error: LayerError) -> str:
    """The layers folded into the value's ops: a divergence there may be in any of them."""
    return f" + {', '.join(_md_code(name, False) for name in error.folded)} folded in" if error.folded else ""


XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    """XML 1.0 cannot carry most control characters at all, escaped or not; a name from a model file may."""
    return XML_INVALID.sub("\ufffd", text)


def junit_xml(result: VerifyResult) -> str:
    """One testcase per test set x output; a failure carries the statistics and, when localised, the first
    divergent Keras layer."""
    cases = [(r.index, s) for r in result.sets for s in r.outputs]
    suite = ElementTree.Element("testsuite", name=_xml_safe(f"kconvert verify {result.model.name}"),
                                tests=str(len(cases)), failures=str(sum(not s.ok for _, s in cases)), errors="0")
    for index, stats in cases:
        case = ElementTree.SubElement(suite, "testcase", classname=f"test_data_set_{index}", name=_xml_safe(stats.name))
        if not stats.ok:
            failure = ElementTree.SubElement(case, "failure", message=_xml_safe(f"{stats.name}: {stats.status}"))
            failure.text = _xml_safe(_failure_text(stats, result.localizations))
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _md_code(text: str, in_table: bool = True) -> str:
    """`text` as a Markdown code span that survives any name: a fence longer than the backtick runs inside,
    line breaks flattened, and in a table the pipes escaped (GitHub's tables split cells before code spans)."""
    text = text.replace("\r", " ").replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{fence}{pad}{text}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def markdown(result: VerifyResult) -> str:
    head = f"## kconvert verify {_md_code(result.model.name, in_table=False)}: {'pass' if result.ok else 'FAIL'}\n\n"
    rows = ["| set | output | status | max abs | max rel | p99 abs | cosine | out of tol | atol needed |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in result.sets:
        for s in r.outputs:
            rows.append(f"| {r.index} | {_md_code(s.name)} | {s.status} | {s.max_abs:.3g} | {s.max_rel:.3g} | "
                        f"{s.p99_abs:.3g} | {s.cosine:.6f} | {s.out_of_tolerance} ({s.fraction_out:.2%}) | "
                        f"{s.atol_needed:.3g} |")
    sections = [_markdown_localization(loc) for loc in result.localizations]
    return head + "\n".join(rows) + "\n" + "".join(sections)


MARKDOWN_LAYER_ROWS = 10  # the divergent layers after the first one a summary lists


def _markdown_localization(loc: Localization) -> str:
    first = loc.first_divergent
    unmapped = f"; {len(loc.unmapped)} Keras layers unmapped" if loc.unmapped else ""
    if first is None:
        return (f"\n### Localisation ({loc.mode})\n\nno Keras layer diverges ({len(loc.layers)} layer outputs "
                f"compared{unmapped})\n")
    s, after = first.stats, loc.divergent_after
    lines = [f"\n### Localisation ({loc.mode})\n",
             f"first divergent layer: {_md_code(first.layer, False)} ({_md_code(first.class_name, False)})"
             f"{_folded_md(first)}, max abs "
             f"{s.max_abs:.3g}, max rel {s.max_rel:.3g}, cosine {s.cosine:.6f}; {len(after)} diverging layers "
             f"after it{unmapped}\n",
             "| depth | layer | class | output | max abs | max rel | cosine | out of tol | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in [first, *after[:MARKDOWN_LAYER_ROWS]]:
        lines.append(f"| {e.depth} | {_md_code(e.layer)} | {_md_code(e.class_name)} | {e.output} | "
                     f"{e.stats.max_abs:.3g} | {e.stats.max_rel:.3g} | {e.stats.cosine:.6f} | "
                     f"{e.stats.out_of_tolerance} ({e.stats.fraction_out:.2%}) | {e.stats.status} |")
    if len(after) > MARKDOWN_LAYER_ROWS:
        lines.append(f"\nand {len(after) - MARKDOWN_LAYER_ROWS} more diverging layers")
    return "\n".join(lines) + "\n"
