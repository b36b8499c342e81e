"""Affect statistics of a listening log, to calibrate the synthetic world against real listening.

`affect_statistics(log)` works on any `ListeningLog` (it reads only schema columns), so the same numbers are computed
for the synthetic world and for a real source. `SITUNES_REFERENCE` holds the figures measured on the SiTunes field study
(stages 2 and 3, the stages with pre- and post-listening reports; tests/test_synthetic.py recomputes them from the raw
files when they are present) and `TOLERANCES` how far the synthetic world may be from them.

    amrs data calibrate --plays 200000 --seed 0
    amrs data calibrate --plays 200000 --seed 0 --reference-source situnes --reference-path ../shared/data/situnes \
        --reference-option "stages=[2, 3]"

prints the side-by-side table (`comparison_table`) that docs/synthetic_world.md reports.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from .schema import ListeningLog

RATING_LEVELS = (1, 2, 3, 4, 5)

# name -> what it measures, in the order every table lists them.
STATISTICS = {
    "pre_post_corr_valence": "Pearson r of pre- and post-listening valence (plays with both)",
    "pre_post_corr_arousal": "Pearson r of pre- and post-listening arousal",
    "delta_arousal_energy_corr": "r of (post - pre arousal) with the track's energy",
    "delta_valence_valence_corr": "r of (post - pre valence) with the track's valence",
    "rating_delta_valence_corr": "r of the rating score with (post - pre valence)",
    "rating_engagement_corr": "r of the rating score with engagement",
    "mean_delta_valence": "mean of (post - pre valence)",
    "mean_delta_arousal": "mean of (post - pre arousal)",
    **{f"rating_share_{k}": f"share of rated plays with rating_score {k}" for k in RATING_LEVELS},
    "median_engagement": "median fraction listened",
    "mean_engagement": "mean fraction listened",
    "full_listen_share": "share of plays listened to the end (engagement >= 0.99)",
    "mean_pre_valence": "mean pre-listening valence",
    "mean_pre_arousal": "mean pre-listening arousal",
    "std_pre_valence": "std of pre-listening valence",
    "std_pre_arousal": "std of pre-listening arousal",
}

# Measured on SiTunes stages 2-3 (1,406 plays, 30 listeners): affect mapped from [-1, 1] to [0, 1], engagement =
# listening duration / track length clipped to [0, 1] (1,273 plays with a duration).
SITUNES_REFERENCE = {
    "pre_post_corr_valence": 0.693,
    "pre_post_corr_arousal": 0.647,
    "delta_arousal_energy_corr": 0.158,
    "delta_valence_valence_corr": 0.059,
    "rating_delta_valence_corr": 0.375,
    "rating_engagement_corr": 0.095,
    "mean_delta_valence": 0.016,
    "mean_delta_arousal": 0.012,
    "rating_share_1": 0.032,
    "rating_share_2": 0.203,
    "rating_share_3": 0.329,
    "rating_share_4": 0.340,
    "rating_share_5": 0.097,
    "median_engagement": 1.000,
    "mean_engagement": 0.846,
    "full_listen_share": 0.511,
    "mean_pre_valence": 0.650,
    "mean_pre_arousal": 0.488,
    "std_pre_valence": 0.183,
    "std_pre_arousal": 0.210,
}

# How far the synthetic world's default statistics may be from the reference.
TOLERANCES = {
    "pre_post_corr_valence": 0.07,
    "pre_post_corr_arousal": 0.07,
    "delta_arousal_energy_corr": 0.07,
    "delta_valence_valence_corr": 0.07,
    "rating_delta_valence_corr": 0.10,
    "rating_engagement_corr": 0.07,
    "mean_delta_valence": 0.03,
    "mean_delta_arousal": 0.03,
    **{f"rating_share_{k}": 0.04 for k in RATING_LEVELS},
    "median_engagement": 0.05,
    "mean_engagement": 0.05,
    "full_listen_share": 0.07,
    "mean_pre_valence": 0.05,
    "mean_pre_arousal": 0.05,
    "std_pre_valence": 0.04,
    "std_pre_arousal": 0.04,
}

_COLUMNS = ["track_id", "engagement", "rating_score", "valence", "arousal", "pre_valence", "pre_arousal"]


def _corr(a: pd.Series, b: pd.Series) -> float:
    both = a.notna() & b.notna()
    if both.sum() < 3:
        return math.nan
    return float(np.corrcoef(a[both].to_numpy(np.float64), b[both].to_numpy(np.float64))[0, 1])


def affect_statistics(log: ListeningLog) -> dict:
    """The statistics in `STATISTICS` (NaN where the log lacks the columns to compute one), plus the counts behind
    them: `mood_pairs` (plays with pre and post reports), `rated_plays`, `engaged_plays`."""
    plays = log.plays.select_columns(_COLUMNS).to_pandas()
    catalogue = log.catalogue.select_columns(["track_id", "valence", "energy"]).to_pandas().set_index("track_id")
    track_valence = plays["track_id"].map(catalogue["valence"])
    track_energy = plays["track_id"].map(catalogue["energy"])
    delta_valence = plays["valence"] - plays["pre_valence"]
    delta_arousal = plays["arousal"] - plays["pre_arousal"]

    scores = plays["rating_score"].dropna()
    on_scale = scores.round().isin(RATING_LEVELS).all() and len(scores) > 0
    shares = scores.round().value_counts(normalize=True) if on_scale else pd.Series(dtype=float)
    engagement = plays["engagement"].dropna()

    stats = {
        "pre_post_corr_valence": _corr(plays["pre_valence"], plays["valence"]),
        "pre_post_corr_arousal": _corr(plays["pre_arousal"], plays["arousal"]),
        "delta_arousal_energy_corr": _corr(delta_arousal, track_energy),
        "delta_valence_valence_corr": _corr(delta_valence, track_valence),
        "rating_delta_valence_corr": _corr(plays["rating_score"], delta_valence),
        "rating_engagement_corr": _corr(plays["rating_score"], plays["engagement"]),
        "mean_delta_valence": float(delta_valence.mean()),
        "mean_delta_arousal": float(delta_arousal.mean()),
        **{f"rating_share_{k}": (float(shares.get(float(k), 0.0)) if on_scale else math.nan) for k in RATING_LEVELS},
        "median_engagement": float(engagement.median()) if len(engagement) else math.nan,
        "mean_engagement": float(engagement.mean()) if len(engagement) else math.nan,
        "full_listen_share": float((engagement >= 0.99).mean()) if len(engagement) else math.nan,
        "mean_pre_valence": float(plays["pre_valence"].mean()),
        "mean_pre_arousal": float(plays["pre_arousal"].mean()),
        "std_pre_valence": float(plays["pre_valence"].std()),
        "std_pre_arousal": float(plays["pre_arousal"].std()),
    }
    stats["mood_pairs"] = int((plays["pre_valence"].notna() & plays["valence"].notna()).sum())
    stats["rated_plays"] = int(len(scores))
    stats["engaged_plays"] = int(len(engagement))
    return stats


def within_tolerance(stats: Mapping, reference: Mapping = SITUNES_REFERENCE,
                     tolerances: Mapping = TOLERANCES) -> dict:
    """name -> whether |stats - reference| <= tolerance, for every statistic with a tolerance."""
    return {name: bool(abs(stats[name] - reference[name]) <= tol) for name, tol in tolerances.items()}


def comparison_table(stats: Mapping, reference: Mapping = SITUNES_REFERENCE, tolerances: Mapping = TOLERANCES,
                     names: tuple = ("synthetic", "SiTunes")) -> str:
    """A markdown table of two sets of statistics side by side, with the tolerance and whether it is met."""
    lines = [f"| statistic | {names[0]} | {names[1]} | tolerance | within |", "|---|---|---|---|---|"]
    for name in STATISTICS:
        tol = tolerances.get(name)
        ok = "" if tol is None else ("yes" if abs(stats[name] - reference[name]) <= tol else "**no**")
        lines.append(f"| {name} | {stats[name]:.3f} | {reference[name]:.3f} | "
                     f"{'' if tol is None else f'±{tol:.2f}'} | {ok} |")
    return "\n".join(lines)
