"""Per-play numeric features shared by the world model's input pipeline and the feature-only baselines.

Audio features are standardised with statistics of the catalogue itself (no labels involved, so nothing leaks across
a cold-start split); a feature the source lacks becomes 0 after standardisation, i.e. the catalogue mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .schema import AUDIO_FEATURES, COHORTS, MODES, OUTCOMES, STATE_COLUMNS, ListeningLog, listening_order


@dataclasses.dataclass
class AudioFeatureScaler:
    """z-scores of the catalogue's audio features; NaN (a feature the source lacks) maps to 0, as does ±inf."""

    mean: np.ndarray
    std: np.ndarray
    names: tuple = AUDIO_FEATURES

    @classmethod
    def fit(cls, catalogue: pd.DataFrame, names=AUDIO_FEATURES) -> "AudioFeatureScaler":
        values = catalogue[list(names)].to_numpy(dtype=np.float64)
        present = np.isfinite(values)  # validation refuses ±inf; should one slip in, it counts as missing
        count = np.maximum(present.sum(axis=0), 1)
        mean = np.where(present, values, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(present, (values - mean) ** 2, 0.0).sum(axis=0) / count)
        return cls(mean=mean, std=np.where(std > 1e-8, std, 1.0), names=tuple(names))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[list(self.names)].to_numpy(dtype=np.float64)
        values = np.where(np.isfinite(values), values, np.nan)
        return np.nan_to_num((values - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "AudioFeatureScaler":
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]), names=tuple(data["names"]))


def plays_with_audio(log: ListeningLog, scaler: AudioFeatureScaler | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The plays frame (schema order) and the standardised audio features of each play's track, row-aligned."""
    plays = log.plays_frame()
    catalogue = log.catalogue_frame()
    scaler = scaler or AudioFeatureScaler.fit(catalogue)
    per_track = pd.DataFrame(scaler.transform(catalogue), index=catalogue["track_id"].values)
    return plays, per_track.loc[plays["track_id"].values].to_numpy()


def context_free_features(log: ListeningLog, scaler: AudioFeatureScaler | None = None) -> np.ndarray:
    """Per-play features without history: the track's audio features, the pre-listening state (imputed at the
    neutral 0.5, with a missing flag), and one-hot mode and cohort. What the feature-only baseline sees."""
    plays, audio = plays_with_audio(log, scaler)
    state = plays[list(STATE_COLUMNS)].to_numpy(dtype=np.float64)
    missing = np.isnan(state)
    onehots = [(plays["mode"].to_numpy() == m) for m in MODES] + [(plays["cohort"].to_numpy() == c) for c in COHORTS]
    return np.column_stack([audio, np.where(missing, 0.5, state), missing, *onehots]).astype(np.float32)


# Columns of `history_features`, in order.
HISTORY_FEATURES = (
    *(f"{kind}_{o}" for o in OUTCOMES for kind in ("past_mean", "past_seen")),
    "last_valence", "last_arousal", "log_past_plays", "continues_session", "previous_valence", "previous_arousal",
)


def history_features(log: ListeningLog, neutral: float = 0.5) -> np.ndarray:
    """Per play, a summary of the same listener's earlier plays, row-aligned with `log.plays` (columns
    `HISTORY_FEATURES`): the mean of each outcome observed so far and whether any was, the last valence and arousal
    reported, log(1 + earlier plays), whether the play continues the previous play's session, and that play's
    reported valence and arousal when it does. Missing values are `neutral`. Listening order is the world model's
    (timestamp, then session and position; unknown timestamps first); nothing of the play itself is used, so a
    held-out listener's features are what a deployed model would know before the track."""
    plays = log.plays_frame()
    plays["row"] = np.arange(len(plays))
    order = listening_order(plays).reset_index(drop=True)
    user = order["user_id"]
    columns = []
    for outcome in OUTCOMES:
        values = order[outcome].astype(float)
        seen = values.notna().astype(float)
        total = values.fillna(0.0).groupby(user).cumsum() - values.fillna(0.0)
        count = seen.groupby(user).cumsum() - seen
        columns += [(total / count.where(count > 0)).fillna(neutral), (count > 0).astype(float)]
    for outcome in ("valence", "arousal"):
        earlier = order[outcome].astype(float).groupby(user).shift()
        columns.append(earlier.groupby(user).ffill().fillna(neutral))
    columns.append(np.log1p(order.groupby("user_id").cumcount()))
    same_user = user.eq(user.shift())
    continues = same_user & order["session_id"].eq(order["session_id"].shift())
    columns.append(continues.astype(float))
    for outcome in ("valence", "arousal"):
        columns.append(order[outcome].astype(float).shift().where(continues).fillna(neutral))
    summary = np.column_stack(columns).astype(np.float32)
    aligned = np.empty_like(summary)
    aligned[order["row"].to_numpy()] = summary
    return aligned
