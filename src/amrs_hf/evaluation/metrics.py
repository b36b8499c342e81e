"""Fidelity metrics for predicted outcomes. Each takes observed values and predictions and ignores rows where the
observation is missing (NaN), so sparse logs are scored on what they carry.

- regression (valence, arousal, engagement): R², Pearson r, MAE, and the coverage of the predicted 90% interval
  (mean ± 1.645 sd under the predicted Gaussian) when a variance is given;
- binary (like; engagement as listened-through vs skipped): ROC AUC, expected calibration error over 10 equal-width
  bins, Brier score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, mean_absolute_error, r2_score, roc_auc_score

Z90 = 1.6448536269514722  # two-sided 90% normal quantile


def _observed(y, *predictions):
    y = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(y)
    return (y[keep], *(None if p is None else np.asarray(p, dtype=np.float64)[keep] for p in predictions))


def regression_metrics(y, mean, var=None) -> dict:
    y, mean, var = _observed(y, mean, var)
    if len(y) < 2:
        return {"n": int(len(y))}
    out = {
        "n": int(len(y)),
        "r2": float(r2_score(y, mean)),
        "pearson_r": float(np.corrcoef(y, mean)[0, 1]) if np.std(mean) > 0 and np.std(y) > 0 else 0.0,
        "mae": float(mean_absolute_error(y, mean)),
    }
    if var is not None:
        half = Z90 * np.sqrt(np.maximum(var, 0.0))
        out["coverage90"] = float(np.mean((y >= mean - half) & (y <= mean + half)))
    return out


def expected_calibration_error(y, prob, num_bins: int = 10) -> float:
    """Sum over equal-width probability bins of (bin share) x |mean label - mean predicted probability|."""
    y, prob = _observed(y, prob)
    bins = np.minimum((prob * num_bins).astype(int), num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(y[in_bin].mean() - prob[in_bin].mean())
    return float(ece)


def binary_metrics(y, prob) -> dict:
    y, prob = _observed(y, prob)
    out = {"n": int(len(y)), "positive_rate": float(y.mean()) if len(y) else float("nan")}
    if len(np.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y, prob))
    out["ece"] = expected_calibration_error(y, prob)
    out["brier"] = float(brier_score_loss(y, np.clip(prob, 0, 1))) if len(y) else float("nan")
    return out


def outcome_metrics(observed: dict, predicted: dict, engagement_threshold: float) -> dict:
    """All fidelity metrics for one model on one split.

    `observed`: outcome -> array (NaN where missing); `predicted`: outcome -> (mean, var or None), with `rating` a
    probability. Engagement is scored both as a regression and as listened-through (>= threshold) vs skipped,
    using the predicted mean engagement as the score.
    """
    engagement = np.asarray(observed["engagement"], dtype=np.float64)
    listened = np.where(np.isnan(engagement), np.nan, (engagement >= engagement_threshold).astype(float))
    return {
        "engagement": {
            **regression_metrics(engagement, *predicted["engagement"]),
            **{f"listened_{k}": v for k, v in binary_metrics(listened, predicted["engagement"][0]).items()},
        },
        "rating": binary_metrics(observed["rating"], predicted["rating"][0]),
        "valence": regression_metrics(observed["valence"], *predicted["valence"]),
        "arousal": regression_metrics(observed["arousal"], *predicted["arousal"]),
    }
