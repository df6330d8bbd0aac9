"""The layer x format table for the closing notes: every committed fixture, every format, max abs error.

    python bench/fixture_table.py        # markdown table on stdout (no TensorFlow needed)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_fixtures import CASES, FIXTURES, FORMATS, run_model  # noqa: E402

import converter  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def max_error(case: str, fmt: str) -> tuple[float, bool]:
    folder = FIXTURES / case
    model_file, weights_file, source = FORMATS[fmt]
    model = converter.convert(folder / model_file, weights=None if weights_file is None else folder / weights_file)
    with np.load(folder / "inputs.npz") as data:
        inputs = [data[f"x{i}"] for i in range(len(data.files))]
    with np.load(folder / "expected.npz") as data:
        expected = [data[f"{source}_{i}"] for i in range(sum(k.startswith(source) for k in data.files))]
    worst, ok = 0.0, True
    for batch in (1, 3):
        for actual, want in zip(run_model(model, [x[:batch] for x in inputs]), expected):
            diff = np.abs(actual.astype(np.float64) - want[:batch])
            worst = max(worst, float(diff.max()))
            ok &= bool(np.all(diff <= ATOL + RTOL * np.abs(want[:batch])))
    return worst, ok


def main() -> None:
    formats = list(FORMATS)
    cases = sorted({c for c, _ in CASES})
    print("| case | " + " | ".join(formats) + " |")
    print("|---|" + "---|" * len(formats))
    overall = 0.0
    for case in cases:
        cells = []
        for fmt in formats:
            if (case, fmt) not in CASES:
                cells.append("—")
                continue
            err, ok = max_error(case, fmt)
            overall = max(overall, err)
            cells.append(f"{'pass' if ok else 'FAIL'} {err:.1e}")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print(f"\nlargest error: {overall:.2e} (tolerance rtol {RTOL}, atol {ATOL}; batch 1 and 3)")


if __name__ == "__main__":
    main()
