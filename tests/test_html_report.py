"""`kconvert verify --html`: one self-contained page. The fast tests read the page's structure with Python's
HTML parser; the `browser` test opens it in headless Chromium (Debian's, through playwright) and checks what a
person would see: the tables' rows, the plot's size, points and marker, and a screenshot that is not blank."""

from __future__ import annotations

import base64
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from application.html_report import html_page
from application.verify import VerifyResult
from runtime.localize_types import ACCUMULATED, ISOLATED, LayerError, Localization
from runtime.replay import SetResult
from runtime.stats import OutputStats, output_stats

RTOL, ATOL = 1e-4, 1e-5
HOSTILE = '<img src=x onerror="alert(1)">&amp;'
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _stats(name: str, error: float) -> OutputStats:
    expected = np.linspace(-1.0, 1.0, 24, dtype=np.float32)
    return output_stats(name, expected + np.float32(error), expected, RTOL, ATOL)


def _localization(errors: list[float], mode: str = ACCUMULATED) -> Localization:
    names = [HOSTILE if i == 1 else f"block{i}_conv" for i in range(len(errors))]
    layers = [LayerError(i, name, "Conv2D", 0, f"v{i}", _stats(name, e))
              for i, (name, e) in enumerate(zip(names, errors))]
    return Localization(mode, layers, unmapped=["bn"], peak_bytes=2**20)


ERRORS = [0.0, 1e-7, 2e-6, 0.03, 0.01, 0.2, 0.2, 1e-6]  # layer 3 diverges first; 4, 5 and 6 after it


def _result(localizations: list[Localization]) -> VerifyResult:
    outputs = [_stats(HOSTILE, 0.2), _stats("probs", 0.0)]
    return VerifyResult(Path("model.onnx"), Path("model_test_data"), (RTOL, ATOL), ["CPUExecutionProvider"],
                        [SetResult(0, outputs), SetResult(1, outputs)], localizations)


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str, css_class: str) -> int:
        return sum(t == tag and css_class in (a.get("class") or "").split() for t, a in self.tags)


def _parsed(page: str) -> _Elements:
    elements = _Elements()
    elements.feed(page)
    return elements


def test_the_page_holds_the_header_the_statistics_and_each_localisation() -> None:
    page = html_page(_result([_localization(ERRORS), _localization(ERRORS[:4], ISOLATED)]))
    elements = _parsed(page)
    assert elements.count("table", "outputs") == 1 and elements.count("table", "layers") == 2
    assert elements.count("tr", "bad") == 2 + 3 and elements.count("tr", "first") == 2  # 2 sets x 1 output; 3 layers
    assert elements.count("circle", "point") == len(ERRORS) + 4
    assert elements.count("circle", "first-divergent") == 2 and elements.count("polyline", "error-line") == 2
    assert elements.count("line", "tolerance") == 2
    text = "".join(elements.text)
    assert "FAIL" in text and "CPUExecutionProvider" in text and "rtol 0.0001, atol 1e-05" in text
    assert "first divergent layer: block3_conv (Conv2D) at depth 3" in text


def test_names_from_the_model_are_text_and_the_page_loads_nothing() -> None:
    page = html_page(_result([_localization(ERRORS)]))
    assert "<img" not in page and "<script" not in page and "http:" not in page and "https:" not in page
    assert page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;") >= 3
    assert HOSTILE in "".join(_parsed(page).text)  # shown as itself
    assert "default-src 'none'" in page


def _y(page: str, css_class: str) -> list[float]:
    return [float(a["cy"] or "nan") for t, a in _parsed(page).tags if t == "circle" and css_class in (a["class"] or "")]


def test_the_plot_puts_larger_errors_higher_and_the_first_divergent_above_the_tolerance() -> None:
    page = html_page(_result([_localization(ERRORS)]))
    ys = _y(page, "point")
    assert ys[0] > ys[1] > ys[2] > ys[3] and ys[5] < ys[3]  # SVG y grows downwards
    tolerance = next(float(a["y1"] or "nan") for t, a in _parsed(page).tags
                     if t == "line" and a.get("class") == "tolerance")
    assert _y(page, "first-divergent") == [ys[3]] and ys[3] < tolerance < ys[2]


def test_off_scale_and_empty_localisations_still_draw() -> None:
    shape_mismatch = output_stats("bad", np.zeros(3), np.zeros(4), RTOL, ATOL)
    layers = [LayerError(0, "a", "Dense", 0, "v", _stats("a", 0.0)),
              LayerError(1, "b", "Dense", 0, "w", shape_mismatch)]
    page = html_page(_result([Localization(ACCUMULATED, layers), Localization(ISOLATED, [])]))
    coordinates = [v for _, a in _parsed(page).tags for k, v in a.items() if k in ("cx", "cy", "x1", "y1") and v]
    assert coordinates and all(math.isfinite(float(v)) for v in coordinates)
    assert _y(page, "first-divergent") == [min(_y(page, "point"))]  # inf: on the plot's top edge
    assert "every one of the 0 compared layer outputs is within tolerance" in page


def _playwright() -> object:
    """playwright's sync API; skipped without a browser, except where CI asks for it (.ci/run)."""
    missing = pytest.fail if os.environ.get("KCONVERT_REQUIRE_BROWSER") else pytest.skip
    if not Path(CHROMIUM).is_file():
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    return sync_api


BLANK_CHECK = """async (png) => {
  const image = new Image();
  image.src = 'data:image/png;base64,' + png;
  await image.decode();
  const canvas = document.createElement('canvas');
  canvas.width = image.width; canvas.height = image.height;
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, image.width, image.height).data;
  const colours = new Set();
  let inked = 0;
  for (let i = 0; i < data.length; i += 4) {
    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    if (data[i] + data[i + 1] + data[i + 2] < 600) inked++;
  }
  return [colours.size, inked / (data.length / 4)];
}"""


@pytest.mark.browser
def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    sync_api = _playwright()
    path = tmp_path / "report.html"
    path.write_text(html_page(_result([_localization(ERRORS)])), encoding="utf-8")
    with sync_api.sync_playwright() as playwright:  # type: ignore[attr-defined]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.on("dialog", lambda dialog: requests.append(f"dialog {dialog.message}"))
            page.goto(path.as_uri())
            _check_tables(page)
            png = _check_plot(page)
            checker = browser.new_page()  # a page of its own: the report's policy forbids data: images
            colours, inked = checker.evaluate(BLANK_CHECK, base64.b64encode(png).decode())
        finally:
            browser.close()
    assert requests == [path.as_uri()]  # the page itself, nothing else, and no script ran
    assert colours > 4 and 0.01 < inked < 0.9


def _check_tables(page: object) -> None:
    rows = page.locator("table.layers tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == len(ERRORS)
    assert rows.nth(1).locator("td.name").first.inner_text() == HOSTILE
    first = page.locator("table.layers tr.first")  # type: ignore[attr-defined]
    assert first.count() == 1 and "block3_conv" in first.inner_text()
    assert page.locator("table.outputs tbody tr").count() == 4  # type: ignore[attr-defined]


def _check_plot(page: object) -> bytes:
    svg = page.locator("section.localization svg.plot")  # type: ignore[attr-defined]
    box = svg.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 200
    points = svg.locator("circle.point")
    assert points.count() == len(ERRORS)
    for i in range(points.count()):
        point = points.nth(i).bounding_box()
        assert point is not None and box["x"] <= point["x"] <= box["x"] + box["width"]
        assert box["y"] <= point["y"] <= box["y"] + box["height"]
    assert svg.locator("circle.first-divergent").count() == 1
    assert "block3_conv (Conv2D)" in svg.locator("circle.first-divergent title").text_content()
    png: bytes = svg.screenshot()
    return png


def test_the_header_names_each_output_with_its_own_tolerance() -> None:
    expected = np.ones(4, dtype=np.float32)
    loose = output_stats("logits", expected, expected, 1e-3, 1e-4)
    result = VerifyResult(Path("m.onnx"), Path("d"), (RTOL, ATOL), [], [SetResult(0, [loose, _stats("probs", 0.0)])])
    text = "".join(_parsed(html_page(result)).text)
    assert "tolerance of logitsrtol 0.001, atol 0.0001" in text and "tolerance of probs" not in text
    assert "pass" in text and "providersnone" in text
