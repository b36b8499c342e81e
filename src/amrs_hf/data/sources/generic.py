"""Any listening log, described by a small YAML mapping file (see docs/data_sources.md):

    plays: my_logs.csv          # csv, parquet or jsonl; relative to the YAML file
    catalogue: tracks.csv       # optional: without it, a catalogue of the log's track ids with null features
    format: csv                 # optional (both files), else from each file's suffix
    encoding: utf-8             # optional (both files)
    columns: {user_id: listener, session_id: visit, position: idx, track_id: song, valence: mood_after}
    catalogue_columns: {track_id: id, energy: nrg}
    scale: {valence: [-1, 1]}   # optional: linear maps of [low, high] onto [0, 1] for unit-interval columns
    session_gap_minutes: 30     # optional: derive session_id/position from user_id + timestamp
    like_threshold: 4           # optional: `rating` (or `rating_score`) holds an ordinal score; like = score >= it

`columns` maps schema column -> your column; columns already named like the schema need no mapping, so the Parquet
files of `amrs_hf.data.io.save_log` load with a mapping of just `plays` and `catalogue`. `timestamp` may hold Unix
seconds or ISO 8601 date-times (UTC unless they carry an offset). With `session_gap_minutes`, sessions are per user in
time order, a new one starting after a longer gap; `session_id` is "{user_id}-{k:04d}". `path` may also be a plays
file itself (.csv, .parquet, .jsonl), read with no mapping. Values are checked in your units and errors use your
file and column names.
"""

from __future__ import annotations

import codecs
import collections
import os

import pandas as pd
import yaml

from ..schema import CATALOGUE_COLUMNS, PLAY_COLUMNS, UNIT_INTERVAL_COLUMNS
from ..validation import FILE, ROW, LogValidationError, RowChecker, build_log, read_table, require_columns
from . import register_source

SPEC_KEYS = ("plays", "catalogue", "format", "encoding", "columns", "catalogue_columns", "scale",
             "session_gap_minutes", "like_threshold")
DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json")


@register_source("generic")
def load_generic(path, *, lenient=False):
    """Load the log described by the YAML mapping file at `path` (or the plays file at `path`, unmapped)."""
    if path is None:
        raise LogValidationError("the generic source needs a mapping file", hint="Pass path= (CLI: --path).")
    path = os.fspath(path)
    spec = {"plays": os.path.basename(path)} if path.lower().endswith(DATA_SUFFIXES) else _read_spec(path)
    folder = os.path.dirname(os.path.abspath(path))
    read = dict(fmt=spec.get("format"), encoding=spec.get("encoding", "utf-8"))
    columns = spec.get("columns", {})
    plays = _rename(read_table(os.path.join(folder, spec["plays"]), **read), columns)
    if "session_gap_minutes" in spec and "session_id" in plays.columns:
        raise _spec_error(path, "session_gap_minutes", "the log already has session_id; drop one of the two")
    checker = RowChecker(plays, lenient=lenient, source_columns=columns)
    if "timestamp" in plays.columns:
        _to_seconds(checker, "timestamp")
    for column, (low, high) in spec.get("scale", {}).items():
        require_columns(plays, [column], file=plays[FILE].iloc[0])
        checker.to_numeric(column)
        checker.in_range(column, low, high)
        plays[column] = (plays[column] - low) / (high - low)
    if "like_threshold" in spec:
        score = "rating_score" if "rating_score" in plays.columns else "rating"
        require_columns(plays, [score], file=plays[FILE].iloc[0])
        checker.to_numeric(score)
        plays["rating_score"] = plays[score]
        plays["rating"] = (plays[score] >= spec["like_threshold"]).astype(float).where(plays[score].notna())
    if "session_gap_minutes" in spec:
        require_columns(plays, ["user_id", "timestamp"], file=plays[FILE].iloc[0])
        checker.not_null("user_id")
        checker.not_null("timestamp")
    plays = checker.kept().copy()
    if "session_gap_minutes" in spec:
        plays["user_id"] = plays["user_id"].astype(str).str.strip()
        session, plays["position"] = split_sessions(plays, ["user_id"], spec["session_gap_minutes"])
        plays["session_id"] = plays["user_id"] + "-" + session.map("{:04d}".format)

    catalogue_columns = spec.get("catalogue_columns", {})
    if "catalogue" in spec:
        catalogue = _rename(read_table(os.path.join(folder, spec["catalogue"]), **read), catalogue_columns)
    else:  # the played tracks, with null features
        track_ids = plays.get("track_id", pd.Series(dtype=str)).astype(str).str.strip()
        catalogue = pd.DataFrame({"track_id": track_ids[track_ids != ""].unique()})
    log = build_log(plays, catalogue, source="generic", lenient=lenient, source_columns=columns,
                    catalogue_source_columns=catalogue_columns)
    log.dropped = dict(collections.Counter(checker.reasons) + collections.Counter(log.dropped))
    return log


def split_sessions(frame: pd.DataFrame, by: list, gap_minutes: float) -> tuple[pd.Series, pd.Series]:
    """Cut each `by` group's plays, in `timestamp` order (ties in file order), into sessions: a new one starts when
    the gap to the previous play exceeds `gap_minutes`. Returns (session number from 0 within the group, position
    from 0 within the session), aligned with `frame`. Timestamps must be numeric seconds and non-null."""
    ordered = frame.sort_values([*by, "timestamp", FILE, ROW], kind="stable")
    groups = [ordered[column] for column in by]
    gap = ordered.groupby(groups, sort=False)["timestamp"].diff()
    new_session = gap.isna() | (gap > gap_minutes * 60.0)
    session = new_session.astype(int).groupby(groups, sort=False).cumsum() - 1
    position = ordered.groupby([*groups, session], sort=False).cumcount()
    return session.reindex(frame.index), position.reindex(frame.index)


def _to_seconds(checker: RowChecker, column: str) -> None:
    """Convert a timestamp column in place to Unix seconds: numbers are taken as seconds, other text as ISO 8601."""
    raw = checker.frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):  # typed Parquet column
        stamps = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw
        checker.frame[column] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return
    text = raw.astype(str).str.strip()
    blank = raw.isna() | text.isin(["", "nan", "NaN", "None", "null", "NA"])
    seconds = pd.to_numeric(text.where(~blank), errors="coerce")
    dates = pd.to_datetime(text.where(~blank & seconds.isna()), utc=True, errors="coerce", format="ISO8601")
    seconds = seconds.fillna((dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    checker.flag(seconds.isna() & ~blank, column, "not Unix seconds or an ISO 8601 date-time")
    checker.frame[column] = seconds.astype(float)


def _rename(frame: pd.DataFrame, mapping: dict) -> pd.DataFrame:
    """Give the user's columns their schema names (one column may feed several); a mapped column wins over an
    unmapped one that already has the schema's name."""
    require_columns(frame, mapping.values(), file=frame[FILE].iloc[0])
    mapped = pd.DataFrame({schema: frame[mine] for schema, mine in mapping.items()}, index=frame.index)
    return pd.concat([frame.drop(columns=[name for name in mapping if name in frame.columns]), mapped], axis=1)


def _spec_error(path: str, key, message: str) -> LogValidationError:
    where = f"key '{key}': " if key else ""
    return LogValidationError(where + message, file=path, hint="Fix the mapping file (docs/data_sources.md).")


def _read_spec(path: str) -> dict:
    """Read and check the YAML mapping file; every problem names the file and the key."""
    if not os.path.exists(path):
        raise LogValidationError("mapping file not found", file=path, hint="Check the path.")
    try:
        spec = yaml.safe_load(open(path, encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _spec_error(path, None, f"not valid UTF-8 YAML ({err})") from None
    if not isinstance(spec, dict):
        raise _spec_error(path, None, "expected a mapping of keys (plays, columns, ...)" if spec else "the file is empty")
    for key in spec:
        if key not in SPEC_KEYS:
            raise _spec_error(path, key, f"unknown key (known keys: {', '.join(SPEC_KEYS)})")
    if not isinstance(spec.get("plays"), str):
        raise _spec_error(path, "plays", "required: the plays file, relative to this YAML file")
    if "catalogue" in spec and not isinstance(spec["catalogue"], str):
        raise _spec_error(path, "catalogue", "expected a file name")
    if spec.get("format") not in (None, "csv", "parquet", "jsonl"):
        raise _spec_error(path, "format", f"expected csv, parquet or jsonl, got {spec['format']!r}")
    try:
        codecs.lookup(spec.get("encoding", "utf-8"))
    except (LookupError, TypeError):
        raise _spec_error(path, "encoding", f"unknown encoding {spec['encoding']!r}") from None
    for key, allowed in (("columns", PLAY_COLUMNS), ("catalogue_columns", CATALOGUE_COLUMNS),
                         ("scale", UNIT_INTERVAL_COLUMNS)):
        entries = spec.get(key, {})
        if not isinstance(entries, dict):
            raise _spec_error(path, key, "expected a mapping (schema column: ...)")
        for column, value in entries.items():
            name = f"{key}.{column}"
            if column not in allowed:
                raise _spec_error(path, name, f"'{column}' is not a column this key can set ({', '.join(allowed)})")
            if key == "scale" and not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]
                                       and all(isinstance(v, (int, float)) for v in value)):
                raise _spec_error(path, name, f"expected [low, high] with low < high, got {value!r}")
            if key != "scale" and not isinstance(value, str):
                raise _spec_error(path, name, f"expected your column's name, got {value!r}")
    for key in ("session_gap_minutes", "like_threshold"):
        if key in spec and (not isinstance(spec[key], (int, float)) or isinstance(spec[key], bool)):
            raise _spec_error(path, key, f"expected a number, got {spec[key]!r}")
    if spec.get("session_gap_minutes", 1) <= 0:
        raise _spec_error(path, "session_gap_minutes", "must be positive")
    return spec
