"""History-free baselines for world-model fidelity. Each is fitted on a train log and predicts, for every play of a
test log, each outcome as (mean, variance); `rating` is a like probability with variance None.

- `GlobalMean`: the train mean of each outcome.
- `TrackMean`: the per-track train mean, shrunk toward the global mean by `prior_plays` pseudo-plays (a track unseen
  in train gets the global mean).
- `FeatureOnly`: scikit-learn models on the same per-play features the world model sees at the step itself (track
  audio features, pre-listening state, mode, cohort) but no history: ridge regression for valence, arousal and
  engagement, logistic regression for like.
- `FeatureHistory`: the same models, given also a summary of the listener's earlier plays (`history_features`: past
  means of each outcome, the last reports, whether the play continues a session and the mood reported just before).
  What a linear model makes of the history the world model reads: the bar the world model's history has to clear.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from amrs_hf.data.features import context_free_features, history_features
from amrs_hf.data.schema import OUTCOMES, ListeningLog

REGRESSED = ("engagement", "valence", "arousal")


def _outcomes(log: ListeningLog) -> pd.DataFrame:
    return log.plays.select_columns(["track_id", *OUTCOMES]).to_pandas().astype({o: float for o in OUTCOMES})


class GlobalMean:
    name = "global_mean"

    def fit(self, train: ListeningLog) -> "GlobalMean":
        frame = _outcomes(train)
        self.mean = {o: float(np.nanmean(frame[o])) if frame[o].notna().any() else 0.5 for o in OUTCOMES}
        self.var = {o: float(np.nanvar(frame[o])) if frame[o].notna().any() else 0.25 for o in OUTCOMES}
        return self

    def predict(self, test: ListeningLog) -> dict:
        n = test.num_plays
        return {
            o: (np.full(n, self.mean[o]), None if o == "rating" else np.full(n, self.var[o])) for o in OUTCOMES
        }


class TrackMean(GlobalMean):
    name = "track_mean"

    def __init__(self, prior_plays: float = 2.0):
        self.prior_plays = prior_plays

    def fit(self, train: ListeningLog) -> "TrackMean":
        super().fit(train)
        frame = _outcomes(train)
        self.per_track, self.residual_var = {}, {}
        for o in OUTCOMES:
            stats = frame.groupby("track_id")[o].agg(["sum", "count"])
            shrunk = (stats["sum"] + self.prior_plays * self.mean[o]) / (stats["count"] + self.prior_plays)
            self.per_track[o] = shrunk
            fitted = shrunk.reindex(frame["track_id"]).to_numpy()
            observed = frame[o].to_numpy()
            self.residual_var[o] = float(np.nanmean((observed - fitted) ** 2)) if frame[o].notna().any() else 0.25
        return self

    def predict(self, test: ListeningLog) -> dict:
        tracks = pd.Index(test.plays["track_id"])
        out = {}
        for o in OUTCOMES:
            mean = self.per_track[o].reindex(tracks).fillna(self.mean[o]).to_numpy()
            out[o] = (mean, None if o == "rating" else np.full(len(mean), self.residual_var[o]))
        return out


class FeatureOnly(GlobalMean):
    name = "feature_only"

    def __init__(self, alpha: float = 1.0, C: float = 1.0):
        self.alpha, self.C = alpha, C

    def features(self, log: ListeningLog) -> np.ndarray:
        return context_free_features(log)

    def fit(self, train: ListeningLog) -> "FeatureOnly":
        super().fit(train)
        x, frame = self.features(train), _outcomes(train)
        self.models, self.residual_var = {}, {}
        for o in OUTCOMES:
            y = frame[o].to_numpy()
            keep = ~np.isnan(y)
            if o == "rating":
                if len(np.unique(y[keep])) == 2:
                    model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
                    self.models[o] = model.fit(x[keep], y[keep].astype(int))
            elif keep.sum() >= 2:
                model = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(x[keep], y[keep])
                self.models[o] = model
                self.residual_var[o] = float(np.mean((y[keep] - model.predict(x[keep])) ** 2))
        return self

    def predict(self, test: ListeningLog) -> dict:
        fallback = super().predict(test)
        x = self.features(test)
        out = {}
        for o in OUTCOMES:
            if o not in self.models:
                out[o] = fallback[o]
            elif o == "rating":
                out[o] = (self.models[o].predict_proba(x)[:, 1], None)
            else:
                mean = np.clip(self.models[o].predict(x), 0.0, 1.0)
                out[o] = (mean, np.full(len(mean), self.residual_var[o]))
        return out


class FeatureHistory(FeatureOnly):
    name = "feature_history"

    def features(self, log: ListeningLog) -> np.ndarray:
        return np.column_stack([context_free_features(log), history_features(log)])


BASELINES = {cls.name: cls for cls in (GlobalMean, TrackMean, FeatureOnly, FeatureHistory)}
