"""Checking listening logs before any work starts.

A user's log file is precious and often messy. Every problem gets one clear error naming the file, the row and the
column (`LogValidationError`), raised before anything is built. With `lenient=True` the bad rows are dropped instead,
and the log reports how many and why; nothing is dropped silently.

Adapters read their files with `read_table` (which records each row's provenance in `__file__`/`__row__`, and for text
files the physical line in `__line__`), map columns onto the schema, and hand the frame to `build_log`, which runs
every check on plays and catalogue. Rows count from 1 at the first data record: the header is not a row, blank lines
are skipped, and a quoted value may span lines, so errors also give the physical line of the file.

`read_table` keeps every value as the text the file holds (CSV and JSON Lines as written; Parquet cast to text
exactly, integers without going through float), so ids keep their exact spelling and each check sees the user's value.
Numeric columns must hold finite numbers (not booleans, not inf); see `RowChecker.to_numeric`.
"""

from __future__ import annotations

import codecs
import collections
import csv
import io
import json
import os
import re
from typing import Callable, Iterable, Mapping, Optional

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

FILE, ROW, LINE = "__file__", "__row__", "__line__"
# A row `read_table` could not read (e.g. a CSV row with too many fields), kept for a lenient load to drop and count.
PROBLEM, PROBLEM_COLUMN = "__problem__", "__problem_column__"
INTERNAL_COLUMNS = (FILE, ROW, LINE, PROBLEM, PROBLEM_COLUMN)
LENIENT_HINT = "Fix the file, or load with lenient=True (CLI: --lenient) to drop such rows and report them."
FORMATS = ("csv", "parquet", "jsonl")
# Text a numeric cell may hold to mean "no value".
BLANK = ("", "nan", "NaN", "None", "null", "NA")
# `position` is stored as int32; the schema's float32 columns cannot hold more than FLOAT32_MAX, and a propensity
# below the smallest normal float32 would be stored as (nearly) 0 and blow up an inverse-propensity weight.
MAX_POSITION = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
MIN_PROPENSITY = float(np.finfo(np.float32).tiny)  # 1.1754944e-38


class LogValidationError(ValueError):
    """A listening log or catalogue that cannot be used as given. Carries `file`, `row`, `column` and, for text
    files, `line` (the physical line of the file, from 1 at the header)."""

    def __init__(self, message: str, *, file=None, row=None, column=None, line=None, hint: str = LENIENT_HINT):
        self.file, self.row, self.column, self.line = file, row, column, line
        where = ", ".join(
            part
            for part in (
                str(file) if file is not None else None,
                f"row {row}" if row is not None else None,
                f"line {line}" if line is not None and row is None else None,
                f"column '{column}'" if column is not None else None,
            )
            if part
        )
        if line is not None and row is not None:
            message = f"{message} (row {row} is line {line} of the file)"
        super().__init__(f"{where}: {message}. {hint}".strip() if where else f"{message}. {hint}".strip())


# --- reading files ---------------------------------------------------------------------------------------------------

def read_table(path, *, fmt: Optional[str] = None, encoding: str = "utf-8", lenient: bool = False) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file into a frame of raw text values, with provenance columns.

    Every value is text ("" where the file has none), so that `RowChecker.to_numeric` can name a non-numeric cell
    and ids keep their exact spelling. A file that is missing, empty, unreadable, not in `encoding`, or whose header
    repeats a column name raises `LogValidationError` naming the file (and the line). A row that cannot be read (a
    CSV row with more fields than the header, a JSON line that is not an object, ...) raises naming the row and line;
    with `lenient=True` it is kept, marked in `__problem__`, for `RowChecker` to drop and count.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LogValidationError("file not found", file=path, hint="Check the path.")
    if os.path.isdir(path):
        raise LogValidationError("this is a folder, not a file", file=path, hint="Give the file itself.")
    fmt = fmt or _format_of(path)
    if fmt not in FORMATS:
        raise LogValidationError(f"unknown format {fmt!r}", file=path, hint="Use csv, parquet or jsonl.")
    if os.path.getsize(path) == 0:
        raise LogValidationError("the file is empty", file=path, hint="Give a file with a header and at least one row.")
    if fmt == "parquet":
        columns, lines, problems = _read_parquet(path), None, {}
        size = len(next(iter(columns.values()), []))
    else:
        with open(path, "rb") as f:
            raw = f.read()
        if raw.startswith(b"PAR1"):
            raise LogValidationError(f"this is a Parquet file, not {fmt}", file=path,
                                     hint="Name it .parquet, or give format: parquet.")
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            raise _encoding_error(path, raw, err, encoding, fmt) from None
        if text.startswith("\ufeff"):
            text = text[1:]
        if not text.strip():
            raise LogValidationError("the file is empty", file=path, hint="Give a file with a header and rows.")
        records = _csv_records(text) if fmt == "csv" else _json_records(text)
        columns, lines, problems = _collect(path, records, fmt)
        size = len(lines)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(size))
    if len(frame) == 0:
        raise LogValidationError("the file has no rows", file=path, hint="Give a file with at least one row.")
    frame[FILE] = path
    frame[ROW] = np.arange(1, len(frame) + 1)
    if lines is not None:
        frame[LINE] = lines
    if problems:
        if not lenient:
            row = min(problems)
            reason, column = problems[row]
            raise LogValidationError(reason, file=path, row=row + 1, column=column,
                                     line=lines[row] if lines is not None else None)
        frame[PROBLEM] = pd.Series({row: reason for row, (reason, _) in problems.items()}, dtype=object)
        frame[PROBLEM_COLUMN] = pd.Series({row: column for row, (_, column) in problems.items()}, dtype=object)
    return frame


class _ReadError(Exception):
    """A problem that stops reading a text file: (message, line, column)."""

    def __init__(self, message: str, line: int, column=None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def _csv_records(text: str):
    """Yield (line, fields) for every non-blank CSV record, `line` being the physical line where it starts (a quoted
    value may span lines). The first record is the header."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                raise _ReadError(f"a quoted value starting on line {start} is never closed (unbalanced '\"')",
                                 start) from None
            raise _ReadError(f"malformed CSV on line {reader.line_num} ({err})", reader.line_num) from None
        line, start = start, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        yield line, fields


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(next(key for key, count in collections.Counter(keys).items() if count > 1))
    return dict(pairs)


def _json_records(text: str):
    """Yield (line, object-or-problem) for every non-blank line of JSON Lines. Numbers stay as the text written
    (so 9007199254740993 keeps every digit), booleans become "true"/"false", null becomes "". A line that is not a
    JSON object, or holds a repeated key or a nested value, is yielded as a `_ReadError`."""
    yield 0, None  # JSON Lines has no header
    for line, content in enumerate(text.split("\n"), 1):
        if not content.strip():
            continue
        try:
            value = json.loads(content, object_pairs_hook=_unique_pairs, parse_int=str, parse_float=str,
                               parse_constant=str)
        except _DuplicateKey as err:
            yield line, _ReadError("the key appears twice on this line", line, column=str(err))
            continue
        except ValueError as err:
            message = f"not valid JSON ({err.msg} at character {err.colno})" if isinstance(
                err, json.JSONDecodeError) else f"not valid JSON ({err})"
            yield line, _ReadError(message, line)
            continue
        if not isinstance(value, dict):
            yield line, _ReadError(f"each line must be a JSON object ({{\"column\": value, ...}}), got a "
                                   f"{_json_kind(value)}", line)
            continue
        record, problem = {}, None
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                problem = problem or _ReadError(f"a nested JSON {_json_kind(item)} where a plain value belongs",
                                                line, column=key)
            record[key] = "" if item is None else ("true" if item is True else "false" if item is False else item)
        yield line, problem or record


def _json_kind(value) -> str:
    return {dict: "object", list: "list (array)", str: "string or number", bool: "boolean"}.get(type(value), "null")


def _collect(path: str, records, fmt: str) -> tuple[dict, list, dict]:
    """Gather records into columns of text. Returns (columns, line of each row, {row index: (reason, column)})."""
    try:
        header = next(records, None)
        if fmt == "csv":
            if header is None:
                raise LogValidationError("the file is empty", file=path, hint="Give a file with a header and rows.")
            names = _header_names(path, *header)
            named = len(names)
            while named and not header[1][named - 1].strip():
                named -= 1  # trailing columns with an empty name may be left out of a row
        else:
            names, named = {}, 0
        columns: dict = {name: [] for name in names}
        lines: list = []
        problems: dict = {}
        for line, record in records:
            row = len(lines)
            lines.append(line)
            if fmt == "csv":
                record = _csv_row(record, names, named, line)
            if isinstance(record, _ReadError):
                problems[row] = (record.message, record.column)
                record = {}
            for key in record:
                if key not in columns:
                    columns[key] = [""] * row
            for key, values in columns.items():
                values.append(record.get(key, ""))
    except _ReadError as err:
        raise LogValidationError(err.message, file=path, line=err.line, column=err.column,
                                 hint="Fix the file.") from None
    return columns, lines, problems


def _header_names(path: str, line: int, fields: list) -> dict:
    """{name: index} for a CSV header; empty names become "Unnamed: i" (ignored unless mapped), repeats raise."""
    names = [field if field.strip() else f"Unnamed: {i}" for i, field in enumerate(fields)]
    seen = set()
    for name in names:
        if name in seen:
            raise LogValidationError("this column name appears twice in the header", file=path, line=line,
                                     column=name, hint="Rename or remove one of the two columns.")
        seen.add(name)
    return {name: i for i, name in enumerate(names)}


def _csv_row(fields: list, names: dict, named: int, line: int):
    """A CSV record as {name: text}, or a `_ReadError` when its field count does not fit the header. Rows may leave
    out the trailing columns after the first `named`, whose header is empty (a trailing comma on the header line)."""
    width = len(names)
    if len(fields) > width:
        return _ReadError(f"the row has {len(fields)} fields but the header has {width} columns (a trailing or stray "
                          "comma, or a value with a comma that is not quoted?)", line)
    if len(fields) < named:
        return _ReadError(f"the row has {len(fields)} fields but the header has {width} columns (a missing value "
                          "needs its comma: write a,,c)", line)
    return dict(zip(names, fields))


def _mark_undecodable(err: UnicodeDecodeError):
    """Codec error handler: each undecodable byte b becomes the lone surrogate U+DC00+b, which no valid text holds
    (unlike "surrogateescape" it also takes bytes below 0x80, e.g. a truncated UTF-16 code unit)."""
    return "".join(chr(0xDC00 + byte) for byte in err.object[err.start:err.end]), err.end


codecs.register_error("amrs_hf_mark_undecodable", _mark_undecodable)
_UNDECODABLE = re.compile("[\udc00-\udcff]")


def _printable(text: str) -> str:
    """`text` with marked undecodable bytes written as \\xNN, so that the error message itself can be printed."""
    return _UNDECODABLE.sub(lambda match: f"\\x{ord(match.group()) - 0xDC00:02x}", text)


def _encoding_error(path: str, raw: bytes, err: UnicodeDecodeError, encoding: str, fmt: str) -> LogValidationError:
    """The error for bytes that are not valid `encoding`, naming the first cell that holds them (the bytes are
    decoded as lone surrogates, which valid text never contains, so a genuine U+FFFD does not mislead the search)."""
    line = raw[: err.start].count(b"\n") + 1
    row = column = None
    text = raw.decode(encoding, errors="amrs_hf_mark_undecodable")
    text = text[1:] if text.startswith("\ufeff") else text
    undecodable = _UNDECODABLE
    try:
        records = _csv_records(text) if fmt == "csv" else _json_records(text)
        header = next(records)
        names = list(header[1]) if fmt == "csv" else []
        if any(undecodable.search(name) for name in names):
            column = next(name for name in names if undecodable.search(name))
        else:
            for index, (_, record) in enumerate(records, 1):
                if isinstance(record, _ReadError):
                    if undecodable.search(str(record.column or "")):
                        row = index
                        break
                    continue
                cells = dict(zip(names, record)) if fmt == "csv" else record
                hit = next((key for key, value in cells.items()
                            if undecodable.search(str(key)) or undecodable.search(str(value))), None)
                if hit is not None:
                    row, column = index, hit
                    break
    except _ReadError:
        pass
    utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff") and not encoding.lower().replace("-", "").startswith("utf16")
    error = LogValidationError(
        f"not valid {encoding} text (byte 0x{raw[err.start]:02x} at line {line})"
        + ("; it starts like UTF-16 text" if utf16 else ""),
        file=path,
        row=row,
        column=_printable(column) if isinstance(column, str) else column,
        hint=f"Re-save the file as {encoding}, or pass the file's encoding (encoding=...).",
    )
    error.line = line  # the line of the first undecodable byte (the message says it)
    return error


def _read_parquet(path: str) -> dict:
    """A Parquet file's columns as exact text: integers and decimals as written, floats in their shortest round-trip
    form, booleans "true"/"false", dates and timestamps as Unix seconds (naive ones taken as UTC), nulls "".
    A file pyarrow cannot read raises naming the file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise LogValidationError(f"not a readable Parquet file ({err})", file=path,
                                 hint="Check the file, or give its real format (format: csv / jsonl).") from None
    duplicates = [name for name, count in collections.Counter(table.column_names).items() if count > 1]
    if duplicates:
        raise LogValidationError("this column name appears twice", file=path, column=duplicates[0],
                                 hint="Rename or remove one of the two columns.")
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
        kind = column.type
        try:
            if pa.types.is_dictionary(kind):
                column, kind = column.dictionary_decode(), kind.value_type
            if pa.types.is_timestamp(kind):
                per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
                column = pc.divide(column.cast(pa.int64()).cast(pa.float64()), per_second)
            elif pa.types.is_date(kind):
                column = pc.multiply(column.cast(pa.date32()).cast(pa.int32()).cast(pa.float64()), 86400.0)
            elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
                      or pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
                      or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_null(kind)):
                raise TypeError(f"a column of type {kind} (lists, structs and the like are not supported)")
            text = pc.fill_null(column.cast(pa.string()), "")
        except (pa.ArrowException, TypeError) as err:
            raise LogValidationError(f"cannot read this column as plain values ({err})", file=path, column=name,
                                     hint="Store numbers or strings in it, or leave it out.") from None
        columns[name] = text.to_pylist()
    return columns


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
            names = [str(c) for c in frame.columns if c not in INTERNAL_COLUMNS]
            padded = [name for name in names if name.strip() == column and name != column]
            unread = int(frame[PROBLEM].notna().sum()) if PROBLEM in frame.columns else 0
            raise LogValidationError(
                f"required column is missing (the file has: {', '.join(names)})"
                + (f"; the file's {padded[0]!r} has spaces around the name" if padded else "")
                + (f"; {unread} rows could not be read at all" if unread else ""),
                file=file,
                column=column,
                hint="Add the column or map another column onto it.",
            )


def epoch_seconds(stamps: pd.Series) -> pd.Series:
    """Unix seconds (float) of a UTC datetime series of any resolution (so dates outside pandas' nanosecond range,
    such as 2300-01-01, work); NaT gives NaN."""
    origin = pd.Timestamp(0, tz="UTC").as_unit(stamps.dt.unit)
    return (stamps - origin).dt.total_seconds()


# --- checking rows ---------------------------------------------------------------------------------------------------

def files_of(frame: pd.DataFrame):
    """The file a frame's rows come from (several, comma-separated; None without provenance)."""
    if FILE not in frame.columns or not len(frame):
        return None
    files = list(dict.fromkeys(frame[FILE].dropna()))
    return files[0] if len(files) == 1 else ", ".join(map(str, files)) if files else None


def nothing_left(what: str, file, reasons: Mapping) -> LogValidationError:
    """The error for a lenient load that dropped every row: it names the file and every reason with its count."""
    listed = "; ".join(f"{reason}: {count}" for reason, count in reasons.items())
    return LogValidationError(f"no {what} left after validation (dropped rows by reason: {listed})" if reasons
                              else f"no {what}",
                              file=file, hint="Check the file and the column mapping.")


def _shown(value) -> str:
    value = value.item() if isinstance(value, np.generic) else value  # "got 1.7", not "got np.float64(1.7)"
    return repr(value)


def _is_blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.strip().isin(BLANK)


class RowChecker:
    """Collects per-row problems. Strict: the first problem raises. Lenient: problem rows are marked for dropping
    and counted by reason.

    `source_columns` maps schema column -> the column name in the user's file, so errors use the user's names.
    Rows `read_table` could not read (lenient only) are flagged on construction. Errors show the value as the file
    holds it (`raw`), not as converted.
    """

    def __init__(self, frame: pd.DataFrame, *, lenient: bool = False, source_columns: Optional[Mapping] = None):
        self.frame = frame
        self.lenient = lenient
        self.source_columns = dict(source_columns or {})
        self.bad = pd.Series(False, index=frame.index)
        self.reasons: collections.Counter = collections.Counter()
        self.raw: dict = {}
        self.file = files_of(frame)
        if PROBLEM in frame.columns:
            problems = frame[PROBLEM].notna()
            for reason, column in dict.fromkeys(zip(frame.loc[problems, PROBLEM], frame.loc[problems, PROBLEM_COLUMN])):
                column = None if pd.isna(column) else column
                same = problems & (frame[PROBLEM] == reason)
                same &= frame[PROBLEM_COLUMN].isna() if column is None else (frame[PROBLEM_COLUMN] == column)
                self.flag(same, column, reason, show_value=False, raw_column=True)

    def flag(self, mask: pd.Series, column: Optional[str], reason: str, *,
             explain: Optional[Callable] = None, show_value: bool = True, raw_column: bool = False) -> None:
        """Mark the rows in `mask` (not already bad) as having `reason` in `column`. Strict: raise for the first;
        `explain(index)` may add detail to that error. `raw_column`: `column` is the file's own name, not mapped."""
        mask = mask.reindex(self.frame.index, fill_value=False).fillna(False).astype(bool) & ~self.bad
        count = int(mask.sum())
        if not count:
            return
        name = column if raw_column or column is None else self.source_columns.get(column, column)
        if self.lenient:
            self.bad |= mask
            self.reasons[f"{name}: {reason}" if name is not None else reason] += count
            return
        first = mask.idxmax()
        message = reason
        if explain is not None:
            message += f": {explain(first)}"
        elif show_value and column in self.frame.columns:
            source = self.raw.get(column, self.frame[column])
            message += f"; got {_shown(source.at[first])}"
        if count > 1:
            message += f" ({count - 1} more rows have the same problem)"
        row = self.frame.at[first, ROW] if ROW in self.frame.columns else None
        line = self.frame.at[first, LINE] if LINE in self.frame.columns else None
        raise LogValidationError(
            message,
            file=self.frame.at[first, FILE] if FILE in self.frame.columns else None,
            row=int(row) if row is not None and pd.notna(row) else None,
            line=int(line) if line is not None and pd.notna(line) else None,
            column=name,
        )

    def to_numeric(self, column: str, *, float32: bool = False, booleans: bool = False) -> None:
        """Convert a column of raw values to float in place. Empty cells (and "nan", "None", "null", "NA") become
        null; anything else must be a finite number: text that is no number, a boolean, or ±inf (also "1e400") is a
        problem. `float32`: the schema stores the column as float32, so |value| must fit. `booleans`: accept
        true/false (any case, or real booleans) as 1/0."""
        raw = self.frame[column]
        self.raw.setdefault(column, raw)
        values = raw
        if booleans:
            values = values.map(lambda v: {"true": 1, "false": 0}.get(v.strip().lower(), v) if isinstance(v, str)
                                else int(v) if isinstance(v, (bool, np.bool_)) else v)
        if values.dtype == bool:
            is_bool = values.notna()
        elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            is_bool = values.map(lambda v: isinstance(v, (bool, np.bool_)))
        else:
            is_bool = pd.Series(False, index=values.index)
        blank = _is_blank(values) & ~is_bool
        numbers = pd.to_numeric(values.where(~blank & ~is_bool), errors="coerce").astype(float)
        self.flag((numbers.isna() & ~blank) | is_bool, column, "not a number")
        self.flag(np.isinf(numbers), column, "not a finite number")
        if float32:
            self.flag(numbers.abs() > FLOAT32_MAX, column, f"too large to store (the limit is ±{FLOAT32_MAX:.4g})")
        self.frame[column] = numbers

    def in_range(self, column: str, low: float, high: float, what: str = "") -> None:
        values = self.frame[column]
        self.flag(values.notna() & ((values < low) | (values > high)), column, f"out of range [{low}, {high}]{what}")

    def whole_number(self, column: str, low: int, high: int, what: str = "") -> None:
        """A numeric column whose values must be whole numbers within [low, high] (checked before any int cast)."""
        values = self.frame[column]
        bad = values.notna() & ((values < low) | (values > high) | (values % 1 != 0))
        self.flag(bad, column, f"must be a whole number from {low} to {high}{what}")

    def not_null(self, column: str) -> None:
        values = self.frame[column]
        blank = values.isna() | (values.astype(str).str.strip() == "")
        self.flag(blank, column, "missing value", show_value=False)

    def one_of(self, column: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        values = self.frame[column]
        self.flag(values.notna() & ~values.isin(allowed), column, f"must be one of {', '.join(allowed)} or empty")

    def unique(self, columns: list, column: str, reason: str) -> None:
        """Flag rows repeating an earlier live row's values in `columns` (run it last: a row dropped for another
        reason then leaves no duplicate behind)."""
        live = ~self.bad
        duplicate = self.frame.loc[live].duplicated(columns, keep="first")
        self.flag(duplicate.reindex(self.frame.index, fill_value=False), column, reason)

    def kept(self, what: Optional[str] = None) -> pd.DataFrame:
        """The rows without problems; with `what` (e.g. "plays"), raise naming the file and every reason when a
        lenient check dropped them all."""
        kept = self.frame.loc[~self.bad]
        if what is not None and len(kept) == 0:
            raise nothing_left(what, self.file, self.reasons)
        return kept


def _ids(values: pd.Series) -> pd.Series:
    """Id columns as stripped text (null stays null, checked by `not_null`)."""
    return values.where(values.isna(), values.astype(str).str.strip())


def check_catalogue(frame: pd.DataFrame, *, lenient: bool = False, source_columns=None) -> tuple[pd.DataFrame, dict]:
    """Validate a schema-shaped catalogue frame (numeric columns may still be raw strings)."""
    require_columns(frame, ["track_id"], file=files_of(frame))
    frame = frame.reset_index(drop=True)  # a copy, with unique labels for the row masks
    for column in CATALOGUE_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    checker = RowChecker(frame, lenient=lenient, source_columns=source_columns)
    checker.not_null("track_id")
    frame["track_id"] = _ids(frame["track_id"])
    checker.flag(frame["track_id"].str.contains(r"[\s<>]", regex=True), "track_id",
                 "track ids cannot contain whitespace or '<' '>' (they separate and mark tokens)")
    for column in CATALOGUE_COLUMNS[2:]:
        checker.to_numeric(column, float32=True)
    for column in CATALOGUE_UNIT_INTERVAL:
        checker.in_range(column, 0.0, 1.0)
    checker.in_range("tempo", 0.0, 400.0, " BPM")
    checker.in_range("duration_s", 0.0, 24 * 3600.0, " seconds")
    checker.unique(["track_id"], "track_id", "duplicate track id")
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

    Checks: required columns present and non-empty; numbers finite (and within float32 where the schema stores
    float32); `position` a whole number in [0, 2**31 - 1]; outcomes and states in [0, 1]; rating 0/1 (true/false
    accepted); propensity in (0, 1] and at least MIN_PROPENSITY; mode one of MODES; each session belongs to one user;
    (session_id, position) unique; every track in the catalogue.
    """
    require_columns(frame, REQUIRED_PLAY_COLUMNS, file=files_of(frame))
    frame = frame.reset_index(drop=True)  # a copy, with unique labels for the row masks
    for column in PLAY_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    checker = RowChecker(frame, lenient=lenient, source_columns=source_columns)
    for column in ("user_id", "session_id", "track_id"):
        checker.not_null(column)
        frame[column] = _ids(frame[column])
    checker.to_numeric("position")
    checker.flag(frame["position"].isna(), "position", "missing value", show_value=False)
    checker.whole_number("position", 0, MAX_POSITION)
    checker.to_numeric("timestamp")
    for column in ("engagement", "rating_score", *UNIT_INTERVAL_COLUMNS[1:], "propensity"):
        checker.to_numeric(column, float32=True)
    checker.to_numeric("rating", booleans=True)
    for column in UNIT_INTERVAL_COLUMNS:
        checker.in_range(column, 0.0, 1.0)
    checker.flag(frame["rating"].notna() & ~frame["rating"].isin([0, 1]), "rating", "must be 0 or 1 (like)")
    propensity = frame["propensity"]
    checker.flag(propensity.notna() & ((propensity <= 0) | (propensity > 1)), "propensity", "out of range (0, 1]")
    checker.flag(propensity.notna() & (propensity < MIN_PROPENSITY), "propensity",
                 f"too small to store (below {MIN_PROPENSITY:.4g}, the smallest normal float32)")
    for column in ("mode", "cohort", "context", "logging_policy"):
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        frame[column] = frame[column].where(~blank, None)
    for column in ("mode", "cohort"):
        frame[column] = frame[column].where(frame[column].isna(), frame[column].astype(str).str.strip().str.lower())
    checker.one_of("mode", MODES)
    _one_user_per_session(checker)
    checker.unique(["session_id", "position"], "position",
                   "duplicate (session_id, position): another row has the same session and position")
    if catalogue_ids is not None:
        checker.flag(~frame["track_id"].isin(catalogue_ids), "track_id", "track is not in the catalogue")
    return checker.kept(), dict(checker.reasons)


def _one_user_per_session(checker: RowChecker) -> None:
    """A session belongs to one user: flag the rows of a session whose user differs from its first (live) row's."""
    frame = checker.frame
    live = frame.loc[~checker.bad]
    first = pd.Series(live.index, index=live.index).groupby(live["session_id"], sort=False).first()
    owner_row = live["session_id"].map(first)
    clash = (live["user_id"] != frame.loc[owner_row.to_numpy(), "user_id"].to_numpy())

    def explain(index) -> str:
        owner = first[frame.at[index, "session_id"]]
        where = (lambda i: f" (row {frame.at[i, ROW]})") if ROW in frame.columns else (lambda i: "")
        return (f"session {frame.at[index, 'session_id']!r} belongs to user {frame.at[owner, 'user_id']!r}"
                f"{where(owner)} and to user {frame.at[index, 'user_id']!r}{where(index)}")

    checker.flag(clash.reindex(frame.index, fill_value=False), "session_id",
                 "the session already belongs to another user", explain=explain)


def build_log(
    plays: pd.DataFrame,
    catalogue: pd.DataFrame,
    *,
    source: str,
    lenient: bool = False,
    source_columns: Optional[Mapping] = None,
    catalogue_source_columns: Optional[Mapping] = None,
    dropped: Optional[Mapping] = None,
) -> ListeningLog:
    """Validate plays and catalogue together and build the `ListeningLog` (the single exit of every adapter).

    `dropped`: what the adapter's own checks already dropped (reason -> count); the log's `dropped` adds these checks'.
    """
    file = files_of(plays)
    catalogue, dropped_tracks = check_catalogue(catalogue, lenient=lenient, source_columns=catalogue_source_columns)
    plays, dropped_plays = check_plays(
        plays, set(catalogue["track_id"]), lenient=lenient, source_columns=source_columns
    )
    dropped = {**dict(dropped or {})}
    for reason, count in [*((f"catalogue {k}", v) for k, v in dropped_tracks.items()), *dropped_plays.items()]:
        dropped[reason] = dropped.get(reason, 0) + count
    if len(plays) == 0:
        raise nothing_left("plays", file, dropped)
    plays = plays.astype({"position": "int64"})
    return ListeningLog(
        plays=plays_to_dataset(sort_plays(plays)),
        catalogue=catalogue_to_dataset(catalogue.reset_index(drop=True)),
        source=source,
        dropped=dropped,
    )
