"""Checking listening logs before any work starts.

A user's log file is precious and often messy. Every problem gets one clear error naming the file, the row and the
column (`LogValidationError`), raised before anything is built. With `lenient=True` the bad rows are dropped instead,
and the log reports how many and why; nothing is dropped silently.

Adapters read their files with `read_table` (which records each row's provenance in `__file__`/`__row__`), map
columns onto the schema, and hand the frame to `build_log`, which runs every check on plays and catalogue.
Rows count from 1 at the first data row (the header is not a row).
"""

from __future__ import annotations

import collections
import io
import os
from typing import Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from .schema import (
    CATALOGUE_COLUMNS,
    CATALOGUE_UNIT_INTERVAL,
    MODES,
    PLAY_COLUMNS,
    REQUIRED_PLAY_COLUMNS,
    UNIT_INTERVAL_COLUMNS,
    ListeningLog,
    catalogue_to_dataset,
    plays_to_dataset,
    sort_plays,
)

FILE, ROW = "__file__", "__row__"
LENIENT_HINT = "Fix the file, or load with lenient=True (CLI: --lenient) to drop such rows and report them."


class LogValidationError(ValueError):
    """A listening log or catalogue that cannot be used as given. Carries `file`, `row` and `column`."""

    def __init__(self, message: str, *, file=None, row=None, column=None, hint: str = LENIENT_HINT):
        self.file, self.row, self.column = file, row, column
        where = ", ".join(
            part
            for part in (
                str(file) if file is not None else None,
                f"row {row}" if row is not None else None,
                f"column '{column}'" if column is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}. {hint}".strip() if where else f"{message}. {hint}".strip())


def read_table(path, *, fmt: Optional[str] = None, encoding: str = "utf-8", **csv_options) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file into a frame of raw values, with provenance columns.

    CSV and JSON Lines are read as strings so that `to_numeric` can name a non-numeric cell instead of pandas
    silently turning it into NaN or a float column. A file that is missing, empty, or not in `encoding` raises
    `LogValidationError` naming the file (and, for an encoding error, the line).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LogValidationError("file not found", file=path, hint="Check the path.")
    fmt = fmt or _format_of(path)
    if os.path.getsize(path) == 0:
        raise LogValidationError("the file is empty", file=path, hint="Give a file with a header and at least one row.")
    if fmt == "parquet":
        frame = pd.read_parquet(path)
    else:
        raw = open(path, "rb").read()
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            row, column = _undecodable_cell(raw, encoding, fmt, csv_options)
            raise LogValidationError(
                f"not valid {encoding} text (byte 0x{raw[err.start]:02x} at line {line})",
                file=path,
                row=row,
                column=column,
                hint=f"Re-save the file as {encoding}, or pass the file's encoding (encoding=...).",
            ) from None
        text = text.lstrip("\ufeff")
        if not text.strip():
            raise LogValidationError("the file is empty", file=path, hint="Give a file with a header and rows.")
        if fmt == "csv":
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **csv_options)
        elif fmt == "jsonl":
            try:
                frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
            except ValueError as err:
                raise LogValidationError(f"not valid JSON Lines ({err})", file=path, hint="Fix the file.") from None
            frame = frame.astype(object).where(frame.notna(), "")
        else:
            raise LogValidationError(f"unknown format {fmt!r}", file=path, hint="Use csv, parquet or jsonl.")
    if len(frame) == 0:
        raise LogValidationError("the file has no rows", file=path, hint="Give a file with at least one row.")
    frame[FILE] = path
    frame[ROW] = np.arange(1, len(frame) + 1)
    return frame


def _undecodable_cell(raw: bytes, encoding: str, fmt: str, csv_options: dict) -> tuple:
    """(row, column) of the first cell holding bytes that are not valid `encoding`: (None, column) when they sit in the
    header, (None, None) when the file cannot be parsed even with them replaced."""
    text = raw.decode(encoding, errors="replace").lstrip("\ufeff")
    try:
        if fmt == "csv":
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **csv_options)
        else:
            frame = pd.read_json(io.StringIO(text), lines=True, dtype=False).astype(str)
    except ValueError:
        return None, None
    for column in frame.columns:
        if "\ufffd" in str(column):
            return None, column
    rows, columns = (frame.apply(lambda values: values.str.contains("\ufffd", regex=False))).to_numpy().nonzero()
    return (int(rows[0]) + 1, frame.columns[columns[0]]) if len(rows) else (None, None)


def _format_of(path: str) -> str:
    lower = path.lower()
    for suffix, fmt in ((".csv", "csv"), (".parquet", "parquet"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if lower.endswith(suffix):
            return fmt
    raise LogValidationError(
        "cannot tell the format from the file name", file=path, hint="Name it .csv, .parquet or .jsonl, or pass fmt=."
    )


def require_columns(frame: pd.DataFrame, columns: Iterable[str], *, file) -> None:
    """Raise naming the first required column the frame lacks (missing columns are never lenient)."""
    for column in columns:
        if column not in frame.columns:
            raise LogValidationError(
                f"required column is missing (the file has: {', '.join(c for c in frame.columns if c not in (FILE, ROW))})",
                file=file,
                column=column,
                hint="Add the column or map another column onto it.",
            )


class RowChecker:
    """Collects per-row problems. Strict: the first problem raises. Lenient: problem rows are marked for dropping
    and counted by reason.

    `source_columns` maps schema column -> the column name in the user's file, so errors use the user's names.
    """

    def __init__(self, frame: pd.DataFrame, *, lenient: bool = False, source_columns: Optional[Mapping] = None):
        self.frame = frame
        self.lenient = lenient
        self.source_columns = dict(source_columns or {})
        self.bad = pd.Series(False, index=frame.index)
        self.reasons: collections.Counter = collections.Counter()

    def flag(self, mask: pd.Series, column: str, reason: str) -> None:
        mask = mask.fillna(False).astype(bool) & ~self.bad
        count = int(mask.sum())
        if not count:
            return
        name = self.source_columns.get(column, column)
        if self.lenient:
            self.bad |= mask
            self.reasons[f"{name}: {reason}"] += count
            return
        first = mask.idxmax()
        value = self.frame.at[first, column] if column in self.frame.columns else None
        value = value.item() if isinstance(value, np.generic) else value  # "got 1.7", not "got np.float64(1.7)"
        more = f" ({count - 1} more rows have the same problem)" if count > 1 else ""
        raise LogValidationError(
            f"{reason}; got {value!r}{more}",
            file=self.frame.at[first, FILE] if FILE in self.frame.columns else None,
            row=int(self.frame.at[first, ROW]) if ROW in self.frame.columns else None,
            column=name,
        )

    def to_numeric(self, column: str) -> None:
        """Convert a column of raw values to float in place; empty cells become null, anything else non-numeric
        is a problem."""
        raw = self.frame[column]
        blank = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "NaN", "None", "null", "NA"])
        numbers = pd.to_numeric(raw.where(~blank), errors="coerce")
        self.flag(numbers.isna() & ~blank, column, "not a number")
        self.frame[column] = numbers.astype(float)

    def in_range(self, column: str, low: float, high: float, what: str = "") -> None:
        values = self.frame[column]
        self.flag(values.notna() & ((values < low) | (values > high)), column, f"out of range [{low}, {high}]{what}")

    def not_null(self, column: str) -> None:
        values = self.frame[column]
        self.flag(values.isna() | (values.astype(str).str.strip() == ""), column, "missing value")

    def one_of(self, column: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        values = self.frame[column]
        self.flag(values.notna() & ~values.isin(allowed), column, f"must be one of {', '.join(allowed)} or empty")

    def kept(self) -> pd.DataFrame:
        return self.frame.loc[~self.bad]


def check_catalogue(frame: pd.DataFrame, *, lenient: bool = False, source_columns=None) -> tuple[pd.DataFrame, dict]:
    """Validate a schema-shaped catalogue frame (numeric columns may still be raw strings)."""
    require_columns(frame, ["track_id"], file=_first_file(frame))
    frame = frame.copy()
    for column in CATALOGUE_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    checker = RowChecker(frame, lenient=lenient, source_columns=source_columns)
    checker.not_null("track_id")
    frame["track_id"] = frame["track_id"].astype(str).str.strip()
    checker.flag(frame["track_id"].str.contains(r"[\s<>]", regex=True), "track_id",
                 "track ids cannot contain whitespace or '<' '>' (they separate and mark tokens)")
    checker.flag(frame["track_id"].duplicated(keep="first"), "track_id", "duplicate track id")
    for column in CATALOGUE_COLUMNS[2:]:
        checker.to_numeric(column)
    for column in CATALOGUE_UNIT_INTERVAL:
        checker.in_range(column, 0.0, 1.0)
    checker.in_range("tempo", 0.0, 400.0, " BPM")
    checker.in_range("duration_s", 0.0, 24 * 3600.0, " seconds")
    frame["genre"] = frame["genre"].where(frame["genre"].notna() & (frame["genre"].astype(str) != ""), None)
    return checker.kept(), dict(checker.reasons)


def check_plays(
    frame: pd.DataFrame,
    catalogue_ids: Optional[set] = None,
    *,
    lenient: bool = False,
    source_columns=None,
) -> tuple[pd.DataFrame, dict]:
    """Validate a schema-shaped frame of plays. Numeric columns may still hold raw strings (converted here).

    Checks: required columns present and non-empty; numbers numeric; outcomes and states in [0, 1]; rating 0/1;
    propensity in (0, 1]; mode one of MODES; (session_id, position) unique; every track in the catalogue.
    """
    require_columns(frame, REQUIRED_PLAY_COLUMNS, file=_first_file(frame))
    frame = frame.copy()
    for column in PLAY_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    checker = RowChecker(frame, lenient=lenient, source_columns=source_columns)
    for column in ("user_id", "session_id", "position", "track_id"):
        checker.not_null(column)
    for column in ("user_id", "session_id", "track_id"):
        frame[column] = frame[column].astype(str).str.strip()
    for column in ("position", "timestamp", "engagement", "rating", "rating_score", *UNIT_INTERVAL_COLUMNS[1:],
                   "propensity"):
        checker.to_numeric(column)
    position = frame["position"]
    checker.flag(position.notna() & ((position < 0) | (position % 1 != 0)), "position", "must be a whole number >= 0")
    for column in UNIT_INTERVAL_COLUMNS:
        checker.in_range(column, 0.0, 1.0)
    checker.flag(frame["rating"].notna() & ~frame["rating"].isin([0, 1]), "rating", "must be 0 or 1 (like)")
    propensity = frame["propensity"]
    checker.flag(propensity.notna() & ((propensity <= 0) | (propensity > 1)), "propensity", "out of range (0, 1]")
    for column in ("mode", "cohort", "context", "logging_policy"):
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        frame[column] = frame[column].where(~blank, None)
    frame["mode"] = frame["mode"].where(frame["mode"].isna(), frame["mode"].astype(str).str.strip().str.lower())
    checker.one_of("mode", MODES)
    live = ~checker.bad
    duplicate = frame.loc[live].duplicated(["session_id", "position"], keep="first")
    checker.flag(duplicate.reindex(frame.index, fill_value=False), "position",
                 "duplicate (session_id, position): another row has the same session and position")
    if catalogue_ids is not None:
        checker.flag(~frame["track_id"].isin(catalogue_ids), "track_id", "track is not in the catalogue")
    return checker.kept(), dict(checker.reasons)


def build_log(
    plays: pd.DataFrame,
    catalogue: pd.DataFrame,
    *,
    source: str,
    lenient: bool = False,
    source_columns: Optional[Mapping] = None,
    catalogue_source_columns: Optional[Mapping] = None,
) -> ListeningLog:
    """Validate plays and catalogue together and build the `ListeningLog` (the single exit of every adapter)."""
    catalogue, dropped_tracks = check_catalogue(catalogue, lenient=lenient, source_columns=catalogue_source_columns)
    plays, dropped_plays = check_plays(
        plays, set(catalogue["track_id"]), lenient=lenient, source_columns=source_columns
    )
    if len(plays) == 0:
        raise LogValidationError(
            f"no plays left after validation (dropped: {dropped_plays})" if dropped_plays else "no plays",
            file=_first_file(plays), hint="Check the file and the column mapping.",
        )
    plays = plays.astype({"position": "int64"})
    dropped = {**{f"catalogue {k}": v for k, v in dropped_tracks.items()}, **dropped_plays}
    return ListeningLog(
        plays=plays_to_dataset(sort_plays(plays)),
        catalogue=catalogue_to_dataset(catalogue.reset_index(drop=True)),
        source=source,
        dropped=dropped,
    )


def _first_file(frame: pd.DataFrame):
    if FILE in frame.columns and len(frame):
        return frame[FILE].iloc[0]
    return None
