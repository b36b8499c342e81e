"""SiTunes: a field study of 30 people listening to recommended music in three stages (Li et al., CHIIR 2024).

Reads `stage{1,2,3}_interactions.csv`, `stage{2,3}_env.json` (optional: only the time slot) and `music_info.csv`
from one folder, with the file names of `../shared/data/situnes` (see its PROVENANCE.md for the upstream paths).

Mapping onto the schema (source column -> schema column):

- `user_id` 7 -> `user_id` "u7"; `item_id` -> `track_id`; `timestamp` (Unix seconds) -> `timestamp`. Ids are integers:
  "7", "07" and "7.0" name the same user (or track, or `inter_id`) and become "7" (`integral_ids`).
- Sessions: per user and stage, in time order; a new session starts when the gap to the previous play exceeds
  `session_gap_minutes`. `session_id` is "situnes-s{stage}-u{user}-{k:04d}" (k from 0), `position` from 0.
- `emo_valence`/`emo_arousal` (stage 1) and `emo_post_valence`/`emo_post_arousal` (stages 2-3), in [-1, 1]
  -> `valence`/`arousal` via (x + 1) / 2; `emo_pre_*` (stages 2-3) -> `pre_valence`/`pre_arousal` likewise.
  Stage 1 has no pre-listening report, so its `pre_*` are null.
- `duration` (seconds listened) / track length (`music_info.duration` ms / 1000) -> `engagement`, clipped to [0, 1]
  (SiTunes' listen time can exceed the track length; PROVENANCE.md); null where `duration` is missing.
- `rating` (a whole number 1-5) -> `rating_score`; `rating` = 1 if the score >= `like_threshold` else 0.
- `rec_type` -> `logging_policy` (null where missing, and in stage 1). `propensity` stays null: SiTunes does not log
  the candidate pool or the recommenders' scores, so even the random arm's probability is unknown.
- `context` = "stage=2;time=1": the stage, and for stages 2-3 the `time` slot of `stageN_env.json` keyed by
  `inter_id` (SiTunes' own 1-3 coding). `mode` and `cohort` stay null: SiTunes has neither.

Catalogue from `music_info.csv`: `item_id` -> `track_id`, `general_genre` -> `genre`, the audio features under their
own names, `duration` (ms, at most 24 hours) / 1000 -> `duration_s`. Stage 3's 0-100 `preference` slider and the
wristband files are not read. Values are checked in source units (e.g. emotions within [-1, 1], durations in ms)
before any mapping, so an error names the user's file, row, column and value as written.
"""

from __future__ import annotations

import collections
import json
import math
import os

import pandas as pd

from ..schema import AUDIO_FEATURES
from ..validation import FILE, LINE, ROW, LogValidationError, RowChecker, build_log, read_table, require_columns
from . import register_source
from .generic import split_sessions

STAGE_COLUMNS = {
    1: ("user_id", "item_id", "timestamp", "rating", "duration", "emo_valence", "emo_arousal"),
    2: ("inter_id", "user_id", "item_id", "timestamp", "rating", "duration", "rec_type",
        "emo_pre_valence", "emo_pre_arousal", "emo_post_valence", "emo_post_arousal"),
}
STAGE_COLUMNS[3] = STAGE_COLUMNS[2]
EMOTIONS = ("emo_valence", "emo_arousal", "emo_pre_valence", "emo_pre_arousal", "emo_post_valence", "emo_post_arousal")
# Schema column -> SiTunes column, so that the checks in `build_log` speak the user's names.
SOURCE_COLUMNS = {
    "track_id": "item_id", "engagement": "duration", "rating_score": "rating", "logging_policy": "rec_type",
    "valence": "emo_post_valence", "arousal": "emo_post_arousal",
    "pre_valence": "emo_pre_valence", "pre_arousal": "emo_pre_arousal",
}
CATALOGUE_SOURCE_COLUMNS = {"track_id": "item_id", "genre": "general_genre", "duration_s": "duration"}
MAX_TRACK_MS = 24 * 3600 * 1000


@register_source("situnes")
def load_situnes(path, *, like_threshold=4, session_gap_minutes=30, stages=(1, 2, 3), lenient=False):
    """Load the SiTunes folder at `path` as a `ListeningLog` (see the module docstring for the mapping)."""
    if path is None:
        raise LogValidationError("the situnes source needs the folder of its files", hint="Pass path= (CLI: --path).")
    unknown = set(stages) - set(STAGE_COLUMNS)
    if unknown or not stages:
        raise ValueError(f"stages must be a non-empty subset of (1, 2, 3); got {tuple(stages)}")
    for name, value in (("like_threshold", like_threshold), ("session_gap_minutes", session_gap_minutes)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number; got {value!r}")
    if session_gap_minutes <= 0:
        raise ValueError(f"session_gap_minutes must be positive; got {session_gap_minutes!r}")
    catalogue, catalogue_dropped = _read_catalogue(os.path.join(path, "music_info.csv"), lenient)
    raw = pd.concat([_read_stage(path, stage, lenient) for stage in sorted(set(stages))], ignore_index=True)

    checker = RowChecker(raw, lenient=lenient)
    for column in ("user_id", "item_id"):
        checker.not_null(column)
    for column in ("timestamp", "rating", "duration", *EMOTIONS):
        if column in raw.columns:
            checker.to_numeric(column)
    checker.not_null("timestamp")
    checker.whole_number("rating", 1, 5, " (5-point Likert)")
    checker.flag(raw["duration"] < 0, "duration", "seconds listened cannot be negative")
    for column in EMOTIONS:
        if column in raw.columns:
            checker.in_range(column, -1.0, 1.0)
    raw = checker.kept("plays").copy()

    raw["user_id"] = "u" + integral_ids(raw["user_id"])
    session, position = split_sessions(raw, ["user_id", "stage"], session_gap_minutes)
    track_id = integral_ids(raw["item_id"])
    track_seconds = track_id.map(catalogue.drop_duplicates("track_id").set_index("track_id")["duration_s"])
    plays = pd.DataFrame({
        FILE: raw[FILE],
        ROW: raw[ROW],
        LINE: raw[LINE],
        "user_id": raw["user_id"],
        "session_id": "situnes-s" + raw["stage"].astype(str) + "-" + raw["user_id"] + "-"
                      + session.map("{:04d}".format),
        "position": position,
        "timestamp": raw["timestamp"],
        "context": raw["context"],
        "track_id": track_id,
        "engagement": (raw["duration"] / track_seconds).clip(0.0, 1.0),
        "rating_score": raw["rating"],
        "rating": (raw["rating"] >= like_threshold).astype(float).where(raw["rating"].notna()),
        "valence": _unit(raw, "emo_valence", "emo_post_valence"),
        "arousal": _unit(raw, "emo_arousal", "emo_post_arousal"),
        "pre_valence": _unit(raw, "emo_pre_valence"),
        "pre_arousal": _unit(raw, "emo_pre_arousal"),
        "logging_policy": raw.get("rec_type"),
    })
    return build_log(plays, catalogue, source="situnes", lenient=lenient, source_columns=SOURCE_COLUMNS,
                     catalogue_source_columns=CATALOGUE_SOURCE_COLUMNS,
                     dropped=collections.Counter(checker.reasons) + collections.Counter(catalogue_dropped))


def integral_ids(values: pd.Series) -> pd.Series:
    """SiTunes' numeric ids as canonical text: "7", " 7 ", "07", "7.0" and "+7" are all "7" (ids are integers, and
    a spreadsheet round trip often writes 7 as 7.0). Exact for any number of digits; other text is kept, stripped."""
    text = values.astype(str).str.strip()
    integral = text.str.fullmatch(r"\+?\d+(\.0*)?")
    canonical = text[integral].str.lstrip("+").str.split(".").str[0].str.lstrip("0").replace("", "0")
    return text.where(~integral, canonical)


def _read_stage(folder, stage: int, lenient: bool = False) -> pd.DataFrame:
    """One stage's interactions, raw, with `stage` and `context` added."""
    file = os.path.join(folder, f"stage{stage}_interactions.csv")
    frame = read_table(file, lenient=lenient)
    require_columns(frame, STAGE_COLUMNS[stage], file=file)
    frame["stage"] = stage
    frame["context"] = f"stage={stage}"
    env_file = os.path.join(folder, f"stage{stage}_env.json")
    if stage > 1 and os.path.exists(env_file):
        env = _read_env(env_file)
        time = integral_ids(frame["inter_id"]).map(lambda key: env.get(key))
        frame["context"] = frame["context"].where(time.isna(), frame["context"] + ";time=" + time.astype(str))
    return frame


def _read_env(file: str) -> dict:
    """`stageN_env.json` as {inter_id: time slot}: a JSON object of objects, each with an optional plain `time`."""
    def problem(message: str, key=None) -> LogValidationError:
        return LogValidationError(message, file=file, column=key, hint="Fix or remove the file.")

    try:
        with open(file, encoding="utf-8") as f:
            env = json.load(f)
    except ValueError as err:  # includes an encoding error
        raise problem(f"not valid UTF-8 JSON ({err})") from None
    if not isinstance(env, dict):
        raise problem(f"expected a JSON object keyed by inter_id, got a {type(env).__name__}")
    slots = {}  # {inter_id as written: time}
    for key, entry in env.items():
        if not isinstance(entry, dict):
            raise problem(f"the entry of inter_id {key!r} must be an object such as {{\"time\": 1}}, got "
                          f"{json.dumps(entry)[:40]}", key=key)
        time = entry.get("time")
        if isinstance(time, (dict, list)):
            raise problem(f"the time slot of inter_id {key!r} must be a plain value, got {json.dumps(time)[:40]}",
                          key=key)
        if time is not None:
            slots[key] = time
    return dict(zip(integral_ids(pd.Series(list(slots), dtype=object)), slots.values()))


def _read_catalogue(file, lenient: bool) -> tuple[pd.DataFrame, dict]:
    """`music_info.csv` as a schema-shaped catalogue; the track length is checked in the file's milliseconds."""
    raw = read_table(file, lenient=lenient)
    require_columns(raw, ("item_id", "general_genre", "duration", *AUDIO_FEATURES), file=file)
    checker = RowChecker(raw, lenient=lenient)
    checker.to_numeric("duration")
    checker.flag(raw["duration"] <= 0, "duration", "track length (ms) must be positive")
    checker.flag(raw["duration"] > MAX_TRACK_MS, "duration", f"track length (ms) must be at most {MAX_TRACK_MS} "
                 "(24 hours)")
    raw = checker.kept()
    catalogue = raw[[FILE, ROW, LINE, *AUDIO_FEATURES]].assign(
        track_id=integral_ids(raw["item_id"]), genre=raw["general_genre"], duration_s=raw["duration"] / 1000.0,
    )
    return catalogue, {f"catalogue {reason}": count for reason, count in checker.reasons.items()}


def _unit(raw: pd.DataFrame, *columns: str) -> pd.Series:
    """Self-reports mapped from [-1, 1] to [0, 1], taken from whichever of `columns` a row has (null if none)."""
    values = pd.Series(float("nan"), index=raw.index)
    for column in columns:
        if column in raw.columns:
            values = values.fillna(raw[column])
    return (values + 1.0) / 2.0
