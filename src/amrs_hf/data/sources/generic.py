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
files of `amrs_hf.data.io.save_log` load with a mapping of just `plays` and `catalogue`. `timestamp` holds, per cell,
either a number, taken as Unix seconds (so an ISO *basic* date such as 20210701 is read as seconds, not as a date), or
an ISO 8601 date or date-time with dashes (2021-07-01, 2021-07-01T10:00:00, optional fraction, `Z` or an offset such
as +02:00; UTC when it carries none; years 1-9999). With `session_gap_minutes`, sessions are per user in time order, a
new one starting after a longer gap; `session_id` is "{user_id}-{k:04d}"; the log must then have neither `session_id`
nor `position`. `path` may also be a plays file itself (.csv, .parquet, .jsonl), read with no mapping. Values are
checked in your units and errors use your file and column names. Every option value is checked (numbers finite, scale
low < high, the gap positive, no key given twice) with an error naming the YAML file and the key.
"""

from __future__ import annotations

import codecs
import math
import os

import numpy as np
import pandas as pd
import yaml

from ..schema import CATALOGUE_COLUMNS, PLAY_COLUMNS, UNIT_INTERVAL_COLUMNS
from ..validation import (
    BLANK,
    FILE,
    INTERNAL_COLUMNS,
    ROW,
    LogValidationError,
    RowChecker,
    build_log,
    epoch_seconds,
    read_table,
    require_columns,
)
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
    read = dict(fmt=spec.get("format"), encoding=spec.get("encoding", "utf-8"), lenient=lenient)
    columns = spec.get("columns", {})
    plays = _rename(read_table(os.path.join(folder, spec["plays"]), **read), columns)
    plays_file = plays[FILE].iloc[0]
    if "session_gap_minutes" in spec:
        present = [column for column in ("session_id", "position") if column in plays.columns]
        if present:
            raise _spec_error(path, "session_gap_minutes",
                              f"the log already has {' and '.join(present)}; drop one of the two")
    checker = RowChecker(plays, lenient=lenient, source_columns=columns)
    if "timestamp" in plays.columns:
        _to_seconds(checker, "timestamp")
    for column, (low, high) in spec.get("scale", {}).items():
        require_columns(plays, [column], file=plays_file)
        checker.to_numeric(column)
        checker.in_range(column, low, high)
        plays[column] = (plays[column] - low) / (high - low)
    if "like_threshold" in spec:
        score = "rating_score" if "rating_score" in plays.columns else "rating"
        require_columns(plays, [score], file=plays_file)
        checker.to_numeric(score, float32=True)
        plays["rating_score"] = plays[score]
        plays["rating"] = (plays[score] >= spec["like_threshold"]).astype(float).where(plays[score].notna())
    if "session_gap_minutes" in spec:
        require_columns(plays, ["user_id", "timestamp"], file=plays_file)
        checker.not_null("user_id")
        checker.not_null("timestamp")
    plays = checker.kept("plays").copy()
    if "session_gap_minutes" in spec:
        plays["user_id"] = plays["user_id"].astype(str).str.strip()
        session, plays["position"] = split_sessions(plays, ["user_id"], spec["session_gap_minutes"])
        plays["session_id"] = plays["user_id"] + "-" + session.map("{:04d}".format)

    if "catalogue" in spec:
        catalogue_columns = spec.get("catalogue_columns", {})
        catalogue = _rename(read_table(os.path.join(folder, spec["catalogue"]), **read), catalogue_columns)
    else:  # the played tracks, with null features; each named by the play that first has it, so errors point there
        catalogue_columns = {"track_id": columns.get("track_id", "track_id")}
        catalogue = _played_tracks(plays)
    return build_log(plays, catalogue, source="generic", lenient=lenient, source_columns=columns,
                     catalogue_source_columns=catalogue_columns, dropped=checker.reasons)


def _played_tracks(plays: pd.DataFrame) -> pd.DataFrame:
    """A catalogue of the plays' distinct (non-blank) track ids, each row keeping the provenance of its first play."""
    if "track_id" not in plays.columns:
        return pd.DataFrame({"track_id": pd.Series(dtype=object)})
    provenance = [column for column in INTERNAL_COLUMNS if column in plays.columns]
    tracks = plays[[*provenance, "track_id"]].copy()
    tracks["track_id"] = tracks["track_id"].where(tracks["track_id"].isna(), tracks["track_id"].astype(str).str.strip())
    tracks = tracks[tracks["track_id"].notna() & (tracks["track_id"] != "")]
    return tracks.drop_duplicates("track_id")


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
    """Convert a timestamp column in place to Unix seconds: a number is taken as seconds, other text as an ISO 8601
    date or date-time (any year 1-9999; UTC unless it carries an offset). Both must be finite."""
    raw = checker.frame[column]
    checker.raw.setdefault(column, raw)
    text = raw.astype(str).str.strip()
    blank = raw.isna() | text.isin(BLANK)
    seconds = pd.to_numeric(text.where(~blank), errors="coerce").astype(float)
    dated = ~blank & seconds.isna()
    if dated.any():
        dates = pd.to_datetime(text[dated], utc=True, errors="coerce", format="ISO8601")
        seconds[dated] = epoch_seconds(dates)
    checker.flag(seconds.isna() & ~blank, column, "not Unix seconds or an ISO 8601 date-time")
    checker.flag(pd.Series(np.isinf(seconds), index=seconds.index), column, "not a finite number")
    checker.frame[column] = seconds


def _rename(frame: pd.DataFrame, mapping: dict) -> pd.DataFrame:
    """Give the user's columns their schema names (one column may feed several); a mapped column wins over an
    unmapped one that already has the schema's name."""
    require_columns(frame, mapping.values(), file=frame[FILE].iloc[0])
    mapped = pd.DataFrame({schema: frame[mine] for schema, mine in mapping.items()}, index=frame.index)
    return pd.concat([frame.drop(columns=[name for name in mapping if name in frame.columns]), mapped], axis=1)


def _spec_error(path: str, key, message: str) -> LogValidationError:
    where = f"key '{key}': " if key else ""
    return LogValidationError(where + message, file=path, hint="Fix the mapping file (docs/data_sources.md).")


class _DuplicateKey(Exception):
    def __init__(self, key, line: int):
        super().__init__(key)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        except TypeError:  # an unhashable key: let the loader report it
            pass
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_spec(path: str) -> dict:
    """Read and check the YAML mapping file; every problem names the file and the key."""
    if not os.path.exists(path):
        raise LogValidationError("mapping file not found", file=path, hint="Check the path.")
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as err:
        raise _spec_error(path, err.key, f"given twice (again on line {err.line}); keep one") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _spec_error(path, None, f"not valid UTF-8 YAML ({err})") from None
    if not isinstance(spec, dict):
        raise _spec_error(path, None,
                          "expected a mapping of keys (plays, columns, ...)" if spec else "the file is empty")
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
            if key == "scale" and not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
                                       and value[0] < value[1]):
                raise _spec_error(path, name,
                                  f"expected [low, high], two finite numbers with low < high, got {value!r}")
            if key != "scale" and not isinstance(value, str):
                raise _spec_error(path, name, f"expected your column's name, got {value!r}")
    for key in ("session_gap_minutes", "like_threshold"):
        if key in spec and not _is_number(spec[key]):
            raise _spec_error(path, key, f"expected a finite number, got {spec[key]!r}")
    if spec.get("session_gap_minutes", 1) <= 0:
        raise _spec_error(path, "session_gap_minutes", "must be positive")
    return spec
