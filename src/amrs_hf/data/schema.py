"""The listening-log schema: one row per play, and a catalogue with one row per track.

Every data source is an adapter onto these two tables; everything downstream (world model, policy, evaluation)
sees only the schema. Outcomes are nullable because real logs are sparse: most plays carry no self-report.

All affect values live in [0, 1] (0.5 is neutral); `engagement` is the fraction of the track listened to.
"""

from __future__ import annotations

import dataclasses
import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features, Value

SCHEMA_VERSION = "1.0.0"

MODES = ("energize", "focus", "calm", "sleep")
COHORTS = ("clinical", "consumer")

# Outcomes a play may carry, in the order every report lists them.
OUTCOMES = ("engagement", "rating", "valence", "arousal")
# The listener's state before the track; observed in some sources.
STATE_COLUMNS = ("pre_valence", "pre_arousal")

PLAY_FEATURES = Features(
    {
        "user_id": Value("string"),
        "session_id": Value("string"),
        "position": Value("int32"),  # order within the session, from 0 (gaps allowed, e.g. after a lenient drop)
        "timestamp": Value("float64"),  # seconds since the Unix epoch, UTC; null when unknown
        "mode": Value("string"),  # one of MODES, or null
        "cohort": Value("string"),  # e.g. clinical / consumer, or null
        "context": Value("string"),  # free-form listening context from the source, or null
        "track_id": Value("string"),
        "engagement": Value("float32"),  # fraction of the track listened, [0, 1]
        "rating": Value("int8"),  # binary like: 1 like, 0 not
        "rating_score": Value("float32"),  # the source's own ordinal rating (e.g. 1-5) behind `rating`
        "valence": Value("float32"),  # self-reported after the track, [0, 1]
        "arousal": Value("float32"),
        "pre_valence": Value("float32"),  # self-reported before the track, [0, 1]
        "pre_arousal": Value("float32"),
        "logging_policy": Value("string"),  # which recommender served the play
        "propensity": Value("float32"),  # probability the logging policy gave this track, (0, 1]
    }
)
PLAY_COLUMNS = tuple(PLAY_FEATURES)
REQUIRED_PLAY_COLUMNS = ("user_id", "session_id", "position", "track_id")

# Audio features every catalogue carries (null where a source lacks one). Tempo is in BPM and loudness in dB;
# the others are Spotify-style descriptors in [0, 1].
AUDIO_FEATURES = (
    "valence",
    "energy",
    "danceability",
    "tempo",
    "acousticness",
    "instrumentalness",
    "speechiness",
    "loudness",
)
CATALOGUE_FEATURES = Features(
    {
        "track_id": Value("string"),
        "genre": Value("string"),
        **{name: Value("float32") for name in AUDIO_FEATURES},
        "duration_s": Value("float32"),  # track length in seconds
    }
)
CATALOGUE_COLUMNS = tuple(CATALOGUE_FEATURES)

# Valid ranges, checked by the validators. Columns absent here are unbounded.
UNIT_INTERVAL_COLUMNS = ("engagement", "valence", "arousal", "pre_valence", "pre_arousal")
CATALOGUE_UNIT_INTERVAL = ("valence", "energy", "danceability", "acousticness", "instrumentalness", "speechiness")


def _info(kind: str) -> datasets.DatasetInfo:
    return datasets.DatasetInfo(
        description=f"amrs_hf listening-log {kind}, schema {SCHEMA_VERSION}",
        version=SCHEMA_VERSION,
        features=PLAY_FEATURES if kind == "plays" else CATALOGUE_FEATURES,
    )


def plays_to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
    """Turn an already-validated frame of plays into a `Dataset` with the schema's exact features."""
    frame = frame.reindex(columns=PLAY_COLUMNS).astype({"rating": "Int8", "position": "int32"})
    return datasets.Dataset.from_pandas(frame, features=PLAY_FEATURES, info=_info("plays"), preserve_index=False)


def catalogue_to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
    """Turn an already-validated catalogue frame into a `Dataset` with the schema's exact features."""
    frame = frame.reindex(columns=CATALOGUE_COLUMNS)
    return datasets.Dataset.from_pandas(
        frame, features=CATALOGUE_FEATURES, info=_info("catalogue"), preserve_index=False
    )


@dataclasses.dataclass
class ListeningLog:
    """Plays plus the catalogue they draw from: what every data source produces.

    `plays` is sorted by (user_id, session_id, position). Every `track_id` in `plays` is in `catalogue`.
    """

    plays: datasets.Dataset
    catalogue: datasets.Dataset
    source: str = "unknown"
    # What a lenient load dropped: reason -> row count. Empty for a strict load.
    dropped: dict = dataclasses.field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    # How this log was cut from a larger one (e.g. temporal cutoffs); empty for a whole log.
    split_info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_plays(self) -> int:
        return self.plays.num_rows

    def plays_frame(self) -> pd.DataFrame:
        return self.plays.to_pandas()

    def catalogue_frame(self) -> pd.DataFrame:
        return self.catalogue.to_pandas()

    def select_users(self, users) -> "ListeningLog":
        """The log restricted to the given users, with the full catalogue (cold-start: tracks stay known)."""
        keep = pc.is_in(self.plays.with_format("arrow")["user_id"], value_set=pa.array(list(users), pa.string()))
        return self.subset(np.flatnonzero(keep.to_numpy(zero_copy_only=False)))

    def subset(self, indices, **info) -> "ListeningLog":
        """The plays at `indices` (in order), with the full catalogue; `info` is recorded in `split_info`."""
        return dataclasses.replace(
            self, plays=self.plays.select(indices), split_info={**self.split_info, **info}
        )

    def sessions(self) -> datasets.Dataset:
        """The session view: one row per session with its plays as ordered lists."""
        return session_view(self.plays)

    def describe(self) -> dict:
        """Counts and outcome coverage, as `amrs data describe --json` prints them."""
        frame = self.plays.select_columns(["user_id", "session_id", "track_id", *OUTCOMES, *STATE_COLUMNS])
        frame = frame.to_pandas()
        n = len(frame)
        coverage = {name: (float(frame[name].notna().mean()) if n else 0.0) for name in (*OUTCOMES, *STATE_COLUMNS)}
        return {
            "source": self.source,
            "schema_version": self.schema_version,
            "plays": n,
            "users": int(frame["user_id"].nunique()),
            "sessions": int(frame["session_id"].nunique()),
            "tracks": int(frame["track_id"].nunique()),
            "catalogue_tracks": self.catalogue.num_rows,
            "coverage": coverage,
            "dropped": dict(self.dropped),
        }


def session_view(plays: datasets.Dataset) -> datasets.Dataset:
    """Group plays into one row per session: `user_id`, `session_id`, `mode`, `cohort`, and every other column
    as a list ordered by `position`."""
    frame = plays.to_pandas().sort_values(["user_id", "session_id", "position"], kind="stable")
    per_session = ("user_id", "session_id", "mode", "cohort")
    listed = [c for c in PLAY_COLUMNS if c not in per_session]
    grouped = frame.groupby("session_id", sort=False)
    out = grouped[["user_id", "mode", "cohort"]].first().reset_index()
    for column in listed:
        out[column] = grouped[column].agg(lambda s: [None if pd.isna(v) else v for v in s]).values
    out["length"] = grouped.size().values.astype(np.int32)
    features = Features(
        {
            "user_id": Value("string"),
            "session_id": Value("string"),
            "mode": Value("string"),
            "cohort": Value("string"),
            **{c: datasets.Sequence(PLAY_FEATURES[c]) for c in listed},
            "length": Value("int32"),
        }
    )
    return datasets.Dataset.from_pandas(out[list(features)], features=features, preserve_index=False)


def listening_order(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s plays in each listener's listening order: by user, then timestamp (unknown first), session and
    position; stable, index kept (so `.index` maps back to the rows given). The order the world model, the policy's
    training sequences and the history features read a listener's history in."""
    return frame.sort_values(["user_id", "timestamp", "session_id", "position"], kind="stable", na_position="first")


def sort_plays(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "session_id", "position"], kind="stable").reset_index(drop=True)

