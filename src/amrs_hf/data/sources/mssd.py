"""Spotify Music Streaming Sessions Dataset (MSSD; Brost, Mehrotra & Jehan, WWW 2019).

`path` is a folder holding `log_very_small_joined_features.csv` (plays joined with the official track features) or,
failing that, `log_very_small.csv` (plays only: a catalogue with null audio features), or a single log CSV in the
official schema (with or without joined track features).

Mapping onto the schema (source column -> schema column):

- `session_id` -> `session_id` and `user_id`: MSSD has no user ids, so every session counts as its own listener.
- `session_position` (from 1) -> `position` = `session_position` - 1; `track_id_clean` -> `track_id`.
- The skip ladder -> `engagement`, the most specific true flag winning (skip_1, then skip_2, skip_3, not_skipped):
  `skip_1` (played very briefly) 0.1, `skip_2` (briefly) 0.25, `skip_3` (most of the track) 0.75,
  `not_skipped` (in full) 1.0; all four false -> null. These are rough listened fractions, not measured ones.
- `date` (dd-mm-yy, or yyyy-mm-dd as in the full release) + `hour_of_day` (a whole number 0-23) -> `timestamp`, taken
  as UTC (MSSD does not say which zone); plays of one hour share a timestamp, so order comes from `position`.
- `context` = "context_type=editorial_playlist;shuffle=true" from `context_type` and `hist_user_behavior_is_shuffle`.
- No rating, no affect, no mode or cohort. `logging_policy` and `propensity` stay null: nothing in MSSD names the
  policy that chose a track (`context_type` and `hist_user_behavior_reason_start` say how playback began, not which
  recommender served it).

Catalogue: one row per `track_id_clean` from the first play of it, with `duration` (seconds) -> `duration_s` and
`valence`, `energy`, `danceability`, `tempo`, `acousticness`, `instrumentalness`, `speechiness`, `loudness` under their
own names, where the file has them. MSSD has no genre.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..schema import AUDIO_FEATURES
from ..validation import (
    FILE,
    LINE,
    MAX_POSITION,
    ROW,
    LogValidationError,
    RowChecker,
    build_log,
    epoch_seconds,
    read_table,
    require_columns,
)
from . import register_source

LOG_FILES = ("log_very_small_joined_features.csv", "log_very_small.csv")
# The skip ladder, most specific first, with the engagement each flag stands for.
ENGAGEMENT = {"skip_1": 0.1, "skip_2": 0.25, "skip_3": 0.75, "not_skipped": 1.0}
SHUFFLE = "hist_user_behavior_is_shuffle"
REQUIRED = ("session_id", "session_position", "track_id_clean", *ENGAGEMENT, "date", "hour_of_day", "context_type",
            SHUFFLE)
SOURCE_COLUMNS = {"user_id": "session_id", "track_id": "track_id_clean", "position": "session_position",
                  "engagement": "/".join(ENGAGEMENT), "timestamp": "date", "context": "context_type"}
CATALOGUE_SOURCE_COLUMNS = {"track_id": "track_id_clean", "duration_s": "duration"}
TRUE, FALSE = ("true", "1"), ("false", "0")


@register_source("mssd")
def load_mssd(path, *, lenient=False):
    """Load an MSSD log (folder or CSV file) as a `ListeningLog` (see the module docstring for the mapping)."""
    if path is None:
        raise LogValidationError("the mssd source needs a folder or a log file", hint="Pass path= (CLI: --path).")
    file = _log_file(os.fspath(path))
    raw = read_table(file, lenient=lenient)
    require_columns(raw, REQUIRED, file=file)

    checker = RowChecker(raw, lenient=lenient)
    for column in ("session_id", "track_id_clean", "session_position"):
        checker.not_null(column)
    for column in ("session_id", "track_id_clean", "context_type"):
        raw[column] = raw[column].str.strip()  # before the duplicate check: "s1 " is session "s1"
    checker.to_numeric("session_position")
    # Checked here, in MSSD's units (from 1), so that an error shows the file's value; position = this - 1 (int32).
    checker.whole_number("session_position", 1, MAX_POSITION + 1)
    for column in (*ENGAGEMENT, SHUFFLE):
        _to_bool(checker, column)
    checker.to_numeric("hour_of_day")
    checker.whole_number("hour_of_day", 0, 23)
    text = raw["date"].str.strip()
    day = pd.to_datetime(text, format="%d-%m-%y", errors="coerce", utc=True)
    day = day.fillna(pd.to_datetime(text, format="%Y-%m-%d", errors="coerce", utc=True).dt.as_unit(day.dt.unit))
    checker.flag(day.isna() & (text != ""), "date", "not a date (dd-mm-yy or yyyy-mm-dd)")
    checker.unique(["session_id", "session_position"], "session_position",
                   "duplicate (session_id, session_position): another row has the same session and position")
    raw = checker.kept("plays").copy()
    day = day[raw.index]

    flags = [raw[flag].eq(True) for flag in ENGAGEMENT]  # a null flag is not true
    plays = pd.DataFrame({
        FILE: raw[FILE],
        ROW: raw[ROW],
        LINE: raw[LINE],
        "user_id": raw["session_id"],
        "session_id": raw["session_id"],
        "position": raw["session_position"] - 1,
        "timestamp": epoch_seconds(day) + raw["hour_of_day"] * 3600.0,
        "context": [_context(kind, shuffle) for kind, shuffle in zip(raw["context_type"], raw[SHUFFLE])],
        "track_id": raw["track_id_clean"],
        "engagement": np.select(flags, list(ENGAGEMENT.values()), default=np.nan),
    })

    features = [column for column in AUDIO_FEATURES if column in raw.columns]
    catalogue = raw.drop_duplicates("track_id_clean")
    catalogue = catalogue[[FILE, ROW, LINE, *features]].assign(
        track_id=catalogue["track_id_clean"],
        duration_s=catalogue["duration"] if "duration" in raw.columns else np.nan,
    )
    return build_log(plays, catalogue, source="mssd", lenient=lenient, source_columns=SOURCE_COLUMNS,
                     catalogue_source_columns=CATALOGUE_SOURCE_COLUMNS, dropped=checker.reasons)


def _log_file(path: str) -> str:
    """The log CSV to read: `path` itself, or the best of LOG_FILES in the folder `path`."""
    if not os.path.isdir(path):
        return path
    for name in LOG_FILES:
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    raise LogValidationError(f"no MSSD log here (expected {' or '.join(LOG_FILES)})", file=path,
                             hint="Check the path, or pass the log CSV itself.")


def _to_bool(checker: RowChecker, column: str) -> None:
    """Convert a column of True/False text in place to booleans (empty cells null); anything else is a problem."""
    text = checker.frame[column].astype(str).str.strip().str.lower()
    blank = checker.frame[column].isna() | (text == "")
    checker.flag(~blank & ~text.isin(TRUE + FALSE), column, "not a boolean (True or False)")
    checker.frame[column] = text.map(lambda value: True if value in TRUE else False if value in FALSE else None)


def _context(context_type: str, shuffle) -> str | None:
    """The context string, e.g. `context_type=radio;shuffle=false`, leaving out what the play lacks (null if both)."""
    parts = [f"context_type={context_type}" if context_type else "",
             f"shuffle={str(shuffle).lower()}" if pd.notna(shuffle) else ""]
    return ";".join(part for part in parts if part) or None
