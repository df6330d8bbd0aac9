"""runtime.compare's tolerance rule, on numbers worked by hand."""

from __future__ import annotations

import numpy as np

from runtime.compare import Tolerance, compare, compare_output


def test_fixed_tolerance_is_atol_plus_rtol_times_expected() -> None:
    expected = np.array([0.0, 10.0])
    assert compare_output("y", expected + [1.05e-5, 0.0], expected).status == "mismatch"
    assert compare_output("y", expected + [0.95e-5, 1.0e-3], expected).ok  # 1e-5 + 1e-4 x 10 = 1.01e-3
    assert compare_output("y", expected + [0.0, 1.02e-3], expected).status == "mismatch"


def test_scaled_atol_grows_with_the_largest_expected_magnitude() -> None:
    expected = np.array([0.0, -4.0])
    tolerance = Tolerance(rtol=0.0, atol=2e-2, atol_scaled=True)  # atol' = 2e-2 x 4 = 8e-2
    assert tolerance.absolute_for(expected) == 8e-2
    assert compare_output("y", expected + [7.9e-2, 0.0], expected, tolerance).ok
    assert not compare_output("y", expected + [8.1e-2, 0.0], expected, tolerance).ok
    small = np.array([0.0, 0.5])  # below 1 the floor is atol itself
    assert Tolerance(atol=2e-2, atol_scaled=True).absolute_for(small) == 2e-2


def test_nan_on_one_side_only_is_a_mismatch_and_shapes_must_agree() -> None:
    expected = np.array([1.0, 2.0])
    assert compare_output("y", np.array([np.nan, 2.0]), expected).status == "mismatch"
    assert compare_output("y", np.ones(3), expected).status == "shape"
    assert [d.status for d in compare([expected], [], ["a"])] == ["shape"]
