"""The paired statistics bench/ reports next to F1 differences."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import paired_difference  # noqa: E402


def test_paired_difference_is_the_mean_and_standard_error_of_per_question_differences():
    mean, se = paired_difference([1.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    # differences in F1 points: 100, 0, 0 -> mean 33.3, sample sd 57.7, se = sd / sqrt(3)
    assert mean == pytest.approx(100 / 3)
    assert se == pytest.approx(np.std([100, 0, 0], ddof=1) / np.sqrt(3))
    assert paired_difference([0.5, 0.5], [0.5, 0.5]) == (0.0, 0.0)
