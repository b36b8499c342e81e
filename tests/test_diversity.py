"""Diversity metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from amrs_hf.evaluation.diversity import (
    PROFILE_KEYS,
    coverage,
    diversity_profile,
    entropy,
    gini,
    ild,
    repeat_rate,
    standardized_features,
    track_frequency_curve,
)


def test_gini_of_collapsed_and_even_counts():
    assert gini([[3, 3], [3, 3]], 4) == pytest.approx(0.75)  # counts [0, 0, 0, 4]: (2*4 - 4 - 1) * 4 / (4 * 4)
    assert gini([[0, 1], [2, 3]], 4) == pytest.approx(0.0)
    # counts [1, 3] over 2 tracks: ((2-2-1)*1 + (4-2-1)*3) / (2*4) = 0.25
    assert gini([[0, 1, 1, 1]], 2) == pytest.approx(0.25)


def test_coverage_entropy_and_curve():
    recs = np.array([[10, 11], [12, 13]])
    catalogue = [10, 11, 12, 13, 14, 15, 16, 17]
    assert coverage(recs, catalogue) == 0.5
    assert entropy(recs, catalogue) == pytest.approx(math.log(4))  # uniform over 4 tracks
    assert entropy(recs, catalogue, normalize=True) == pytest.approx(math.log(4) / math.log(8))
    # p = (3/4, 1/4)
    assert entropy([[10, 10, 10, 11]], catalogue) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert track_frequency_curve([[10, 10, 12], [10]], catalogue).tolist() == [3, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"not in the catalogue: \[99\]"):
        coverage([[10, 99]], catalogue)


def test_ild_of_known_vectors():
    features = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert ild([[0, 1]], features, standardize=False) == pytest.approx(5.0)
    # list [0, 1, 2]: distances 5, 10, 5 -> 20/3; list [1, 1]: 0 -> mean (20/3 + 0) / 2; a 1-track list is skipped
    assert ild([[0, 1, 2], [1, 1], [2]], features, standardize=False) == pytest.approx(10 / 3)
    # standardised over the catalogue's rows: each column is (-1.2247, 0, 1.2247) -> distance 0-2 is 2 * sqrt(3)
    z = standardized_features(features, 3)
    np.testing.assert_allclose(z[:, 0], [-math.sqrt(1.5), 0, math.sqrt(1.5)])
    assert ild([[0, 2]], features, 3) == pytest.approx(2 * math.sqrt(3))
    with pytest.raises(ValueError, match="needs the catalogue"):
        ild([[0, 2]], features)


def test_repeat_rate_and_profile():
    recs = torch.tensor([[1, 2, 1, 1], [3, 3, 0, 2]])
    assert repeat_rate(recs) == pytest.approx(3 / 8)  # row 0 repeats twice, row 1 once
    features = np.eye(4)
    profile = diversity_profile(recs, 4, features, standardize=False)
    assert tuple(profile) == PROFILE_KEYS
    assert profile["coverage"] == 1.0 and profile["repeat_rate"] == pytest.approx(3 / 8)
    # counts [1, 3, 2, 2] -> sorted [1, 2, 2, 3]: (-3*1 - 1*2 + 1*2 + 3*3) / (4*8) = 6/32
    assert profile["gini"] == pytest.approx(6 / 32)
    # each list: 6 pairs; row 0 [1,2,1,1]: pairs with different tracks 3 (each sqrt 2); row 1 [3,3,0,2]: 5
    assert profile["ild"] == pytest.approx((3 * math.sqrt(2) / 6 + 5 * math.sqrt(2) / 6) / 2)
    assert math.isnan(diversity_profile(recs, 4)["ild"])
    assert diversity_profile([[0, 1, 2, 3]], 4)["gini"] == 0.0
