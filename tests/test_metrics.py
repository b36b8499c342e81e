"""Fidelity metrics against hand-computed values, and the history-free baselines on logs with a known answer."""

import numpy as np
import pandas as pd
import pytest

from amrs_hf.data.features import HISTORY_FEATURES, history_features
from amrs_hf.evaluation.baselines import FeatureHistory, FeatureOnly, GlobalMean, TrackMean
from amrs_hf.evaluation.metrics import (
    binary_metrics,
    expected_calibration_error,
    outcome_metrics,
    regression_metrics,
)
from amrs_hf.data.validation import build_log


def test_regression_metrics_by_hand():
    y = np.array([0.0, 0.5, 1.0, np.nan])
    mean = np.array([0.1, 0.5, 0.7, 0.3])
    out = regression_metrics(y, mean, var=np.array([0.01, 0.01, 0.01, 0.01]))
    # residuals -0.1, 0, 0.3: SSE 0.10, SST 0.5 -> R² 0.8; MAE 0.4/3; interval ±0.1645 covers the first two.
    assert out["n"] == 3
    assert out["r2"] == pytest.approx(0.8)
    assert out["mae"] == pytest.approx(0.4 / 3)
    assert out["coverage90"] == pytest.approx(2 / 3)
    assert out["pearson_r"] == pytest.approx(np.corrcoef([0, 0.5, 1], [0.1, 0.5, 0.7])[0, 1])


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1, np.nan])
    prob = np.array([0.1, 0.6, 0.4, 0.9, 0.5])
    out = binary_metrics(y, prob)
    assert out["auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered correctly
    assert out["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    # bins: 0.1 -> bin 1 (label 0), 0.4 -> bin 4 (1), 0.6 -> bin 6 (0), 0.9 -> bin 9 (1): each |gap| weighted 1/4
    assert expected_calibration_error(y, prob) == pytest.approx((0.1 + 0.6 + 0.6 + 0.1) / 4)


def test_engagement_scored_as_listened_through():
    observed = {
        "engagement": np.array([0.95, 0.2, 0.85, 0.1]),
        "rating": np.array([1, 0, np.nan, 1]),
        "valence": np.array([0.5, 0.6, 0.7, 0.8]),
        "arousal": np.full(4, np.nan),
    }
    predicted = {
        "engagement": (np.array([0.9, 0.3, 0.4, 0.5]), None),
        "rating": (np.array([0.8, 0.3, 0.5, 0.6]), None),
        "valence": (np.array([0.5, 0.6, 0.7, 0.8]), np.full(4, 0.01)),
        "arousal": (np.full(4, 0.5), None),
    }
    out = outcome_metrics(observed, predicted, engagement_threshold=0.8)
    assert out["engagement"]["listened_positive_rate"] == 0.5
    assert out["engagement"]["listened_auc"] == pytest.approx(0.75)
    assert out["rating"]["auc"] == 1.0 and out["rating"]["n"] == 3
    assert out["valence"]["r2"] == 1.0 and out["valence"]["coverage90"] == 1.0
    assert out["arousal"] == {"n": 0}


def _known_world(num_users=40, plays_per_user=10, seed=0):
    """valence = 0.2 + 0.6 x track energy; like iff the track is even-numbered: a feature-only model can get it."""
    rng = np.random.default_rng(seed)
    energy = np.linspace(0.0, 1.0, 20)
    rows = []
    for u in range(num_users):
        for p in range(plays_per_user):
            t = int(rng.integers(20))
            rows.append({"user_id": f"u{u}", "session_id": f"u{u}", "position": p, "track_id": str(t),
                         "valence": 0.2 + 0.6 * energy[t] + rng.normal(0, 0.02), "rating": int(t % 2 == 0),
                         "engagement": 0.5})
    plays = pd.DataFrame(rows)
    plays["valence"] = plays["valence"].clip(0, 1)
    catalogue = pd.DataFrame({"track_id": [str(i) for i in range(20)], "energy": energy})
    return build_log(plays, catalogue, source="test")


def test_baselines_recover_what_they_can():
    log = _known_world()
    train, test = log.select_users([f"u{i}" for i in range(30)]), log.select_users([f"u{i}" for i in range(30, 40)])
    y = np.array(test.plays["valence"], dtype=float)
    r2 = {}
    for baseline in (GlobalMean(), TrackMean(), FeatureOnly()):
        pred = baseline.fit(train).predict(test)
        r2[baseline.name] = regression_metrics(y, *pred["valence"])["r2"]
        like_auc = binary_metrics(np.array(test.plays["rating"], dtype=float), pred["rating"][0]).get("auc")
        if baseline.name == "track_mean":
            assert like_auc == 1.0  # per-track like rate separates even from odd tracks exactly
    assert r2["global_mean"] < 0.0 + 0.05
    assert r2["feature_only"] > 0.95 and r2["track_mean"] > 0.9


def test_history_features_summarise_earlier_plays_in_listening_order():
    # listener a: session s2 (t=50) comes before s1 (t=100, 200) although it is listed last; b has one play
    plays = pd.DataFrame([
        {"user_id": "a", "session_id": "s1", "position": 0, "timestamp": 100.0, "track_id": "0",
         "valence": 0.2, "arousal": None, "rating": 1, "engagement": 1.0},
        {"user_id": "a", "session_id": "s1", "position": 1, "timestamp": 200.0, "track_id": "1",
         "valence": 0.8, "arousal": 0.4, "rating": 0, "engagement": 0.5},
        {"user_id": "b", "session_id": "s3", "position": 0, "timestamp": 10.0, "track_id": "1",
         "valence": 0.9, "arousal": 0.9, "rating": 1, "engagement": 1.0},
        {"user_id": "a", "session_id": "s2", "position": 0, "timestamp": 50.0, "track_id": "1",
         "valence": 0.6, "arousal": 0.7, "rating": None, "engagement": 0.0},
    ])
    log = build_log(plays, pd.DataFrame({"track_id": ["0", "1"], "energy": [0.1, 0.9]}), source="test")
    rows = {(u, s, p): i for i, (u, s, p) in enumerate(zip(log.plays["user_id"], log.plays["session_id"],
                                                          log.plays["position"]))}
    x = pd.DataFrame(history_features(log), columns=HISTORY_FEATURES)
    first_s2, first_s1, second_s1 = (x.iloc[rows[k]] for k in (("a", "s2", 0), ("a", "s1", 0), ("a", "s1", 1)))
    neutral = dict.fromkeys(HISTORY_FEATURES, 0.5) | {c: 0.0 for c in HISTORY_FEATURES if "seen" in c}
    neutral |= {"log_past_plays": 0.0, "continues_session": 0.0}
    assert first_s2.to_dict() == pytest.approx(neutral)
    assert x.iloc[rows[("b", "s3", 0)]].to_dict() == pytest.approx(neutral)  # b's history is b's alone
    # a's first s1 play follows s2 (a new session): s2's outcomes, no like seen yet
    assert first_s1.to_dict() == pytest.approx(neutral | {
        "past_mean_engagement": 0.0, "past_seen_engagement": 1.0, "past_mean_valence": 0.6, "past_seen_valence": 1.0,
        "past_mean_arousal": 0.7, "past_seen_arousal": 1.0, "last_valence": 0.6, "last_arousal": 0.7,
        "log_past_plays": np.log(2)})
    # the second s1 play continues s1: means over both earlier plays, the last arousal still s2's (s1's is missing)
    assert second_s1.to_dict() == pytest.approx({
        "past_mean_engagement": 0.5, "past_seen_engagement": 1.0, "past_mean_rating": 1.0, "past_seen_rating": 1.0,
        "past_mean_valence": 0.4, "past_seen_valence": 1.0, "past_mean_arousal": 0.7, "past_seen_arousal": 1.0,
        "last_valence": 0.2, "last_arousal": 0.7, "log_past_plays": np.log(3), "continues_session": 1.0,
        "previous_valence": 0.2, "previous_arousal": 0.5})


def test_feature_history_uses_the_listeners_own_past():
    """valence = the listener's own level + noise: only the history can tell listeners apart."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        level = rng.uniform(0.2, 0.8)
        for p in range(12):
            rows.append({"user_id": f"u{u}", "session_id": f"u{u}s{p}", "position": 0, "timestamp": float(p),
                         "track_id": str(int(rng.integers(5))), "valence": level + rng.normal(0, 0.03),
                         "engagement": 1.0})
    log = build_log(pd.DataFrame(rows), pd.DataFrame({"track_id": [str(i) for i in range(5)],
                                                      "energy": np.linspace(0, 1, 5)}), source="test")
    train, test = log.select_users([f"u{i}" for i in range(40)]), log.select_users([f"u{i}" for i in range(40, 60)])
    y = np.array(test.plays["valence"], dtype=float)
    later = np.array(test.plays["timestamp"]) >= 3  # once a few reports are in
    r2 = {b.name: regression_metrics(y[later], b.fit(train).predict(test)["valence"][0][later], None)["r2"]
          for b in (FeatureOnly(), FeatureHistory())}
    assert r2["feature_only"] < 0.1 and r2["feature_history"] > 0.8, r2
