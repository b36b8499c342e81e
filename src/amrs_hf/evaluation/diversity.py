"""Diversity of recommended track lists: how much of the catalogue a policy uses, how evenly, and how varied each
list is.

Inputs: `recommendations`, R lists of track ids (a (R, horizon) tensor / array, e.g. `RolloutResult.tracks`, or a
list of lists of any lengths); `catalogue`, the ids that could be recommended (a sequence such as
`track_token_ids(tokenizer)`, or an int n for ids 0..n-1); `features`, audio features indexed by track id (rows for
every id used, e.g. the world model's `track_features` (vocab, F)).

- `coverage`: distinct recommended tracks / catalogue size.
- `entropy`: Shannon entropy, in nats, of the recommended-track frequency distribution (`normalize=True` divides by
  log(catalogue size), so 1 is every catalogue track equally often).
- `gini`: Gini coefficient of the recommendation counts over the whole catalogue, zero-count tracks included:
  sum_i (2i - n - 1) x_(i) / (n sum_i x_i) over the ascending counts x_(1..n); 0 = every track equally often,
  (n - 1) / n = one track gets every recommendation.
- `ild`: intra-list diversity, the mean Euclidean distance over all pairs of positions in a list in standardised
  audio-feature space (z-scored over the catalogue's rows, `standardize=False` to use the features as given),
  averaged over the lists with two or more tracks; a repeated track contributes its zero distances.
- `repeat_rate`: share of recommendations that repeat a track earlier in the same list.
- `diversity_profile`: all five in a dict with exactly those keys; `track_frequency_curve`: the catalogue's
  recommendation counts, descending (the long-tail plot).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import entropy as shannon_entropy
from sklearn.preprocessing import StandardScaler

PROFILE_KEYS = ("coverage", "entropy", "gini", "ild", "repeat_rate")


def _lists(recommendations) -> list[np.ndarray]:
    if hasattr(recommendations, "detach"):  # a torch tensor
        recommendations = recommendations.detach().cpu().numpy()
    if isinstance(recommendations, np.ndarray):
        if recommendations.ndim != 2:
            raise ValueError(f"recommendations must be (R, horizon), got shape {recommendations.shape}")
        return [row.astype(np.int64) for row in recommendations]
    return [np.asarray(row, dtype=np.int64).reshape(-1) for row in recommendations]


def _catalogue(catalogue) -> np.ndarray:
    if isinstance(catalogue, (int, np.integer)):
        if catalogue < 1:
            raise ValueError(f"catalogue size must be >= 1, got {catalogue}")
        return np.arange(int(catalogue))
    ids = np.asarray(catalogue.detach().cpu() if hasattr(catalogue, "detach") else catalogue, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0 or len(np.unique(ids)) != len(ids):
        raise ValueError("catalogue must be an int or a non-empty sequence of distinct track ids")
    return ids


def recommendation_counts(recommendations, catalogue) -> np.ndarray:
    """How often each catalogue track (in `catalogue` order) was recommended."""
    ids = _catalogue(catalogue)
    lists = _lists(recommendations)
    flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    position = {int(t): i for i, t in enumerate(ids)}
    outside = sorted({int(t) for t in np.unique(flat)} - position.keys())
    if outside:
        raise ValueError(f"recommended track ids not in the catalogue: {outside[:10]}")
    return np.bincount([position[int(t)] for t in flat], minlength=len(ids)).astype(np.int64)


def coverage(recommendations, catalogue) -> float:
    return float((recommendation_counts(recommendations, catalogue) > 0).mean())


def entropy(recommendations, catalogue, *, normalize: bool = False) -> float:
    """Shannon entropy (nats) of the recommended-track distribution; / log(catalogue size) if `normalize`."""
    counts = recommendation_counts(recommendations, catalogue)
    if counts.sum() == 0:
        return float("nan")
    value = float(shannon_entropy(counts))
    if normalize:
        return value / math.log(len(counts)) if len(counts) > 1 else 0.0
    return value


def gini(recommendations, catalogue) -> float:
    """Gini coefficient of the counts over the whole catalogue (zero counts included)."""
    counts = np.sort(recommendation_counts(recommendations, catalogue)).astype(np.float64)
    n, total = len(counts), counts.sum()
    if total == 0:
        return float("nan")
    rank = np.arange(1, n + 1)
    return float(((2 * rank - n - 1) * counts).sum() / (n * total))


def standardized_features(features, catalogue) -> np.ndarray:
    """`features` (V, F) z-scored with the mean/std of the catalogue's rows (a constant feature is left at 0)."""
    features = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
    rows = features[_catalogue(catalogue)]
    return StandardScaler().fit(rows).transform(features)


def ild(recommendations, features, catalogue=None, *, standardize: bool = True) -> float:
    """Mean pairwise distance within each list, averaged over lists of >= 2 tracks (NaN if there are none).
    `standardize` needs `catalogue` (the rows whose statistics z-score the features)."""
    if standardize:
        if catalogue is None:
            raise ValueError("ild(standardize=True) needs the catalogue, whose rows give the mean and std")
        features = standardized_features(features, catalogue)
    else:
        features = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, np.float64)
    per_list = [pdist(features[row]).mean() for row in _lists(recommendations) if len(row) >= 2]
    return float(np.mean(per_list)) if per_list else float("nan")


def repeat_rate(recommendations) -> float:
    lists = _lists(recommendations)
    total = sum(len(row) for row in lists)
    repeats = sum(len(row) - len(np.unique(row)) for row in lists)
    return repeats / total if total else float("nan")


def track_frequency_curve(recommendations, catalogue) -> np.ndarray:
    """Recommendation counts of every catalogue track, sorted descending (zeros at the tail)."""
    return np.sort(recommendation_counts(recommendations, catalogue))[::-1].copy()


def diversity_profile(recommendations, catalogue, features=None, *, standardize: bool = True) -> dict:
    """`coverage`, `entropy` (nats), `gini`, `ild` (NaN without features) and `repeat_rate`."""
    return {
        "coverage": coverage(recommendations, catalogue),
        "entropy": entropy(recommendations, catalogue),
        "gini": gini(recommendations, catalogue),
        "ild": (float("nan") if features is None
                else ild(recommendations, features, catalogue, standardize=standardize)),
        "repeat_rate": repeat_rate(recommendations),
    }


__all__ = ["PROFILE_KEYS", "coverage", "diversity_profile", "entropy", "gini", "ild", "recommendation_counts",
           "repeat_rate", "standardized_features", "track_frequency_curve"]
