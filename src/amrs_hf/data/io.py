"""Saving a `ListeningLog` as Parquet (plays.parquet + catalogue.parquet) and reading it back.

The schema version travels in each file's Parquet metadata (`amrs_schema_version`); a folder written by a newer
schema (a newer major or minor version), or by another major version, is refused with a clear error instead of being
misread. A file without the metadata (written by hand) is read and validated like any user file.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import SCHEMA_VERSION, ListeningLog
from .validation import LogValidationError, build_log, read_table

PLAYS_FILE, CATALOGUE_FILE, META_FILE = "plays.parquet", "catalogue.parquet", "log.json"


def save_log(log: ListeningLog, directory, extra_meta: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    for dataset, name in ((log.plays, PLAYS_FILE), (log.catalogue, CATALOGUE_FILE)):
        table = dataset.with_format("arrow")[:]  # respects a selection (indices mapping)
        meta = dict(table.schema.metadata or {})
        meta[b"amrs_schema_version"] = SCHEMA_VERSION.encode()
        pq.write_table(table.replace_schema_metadata(meta), os.path.join(directory, name))
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump({"source": log.source, "schema_version": SCHEMA_VERSION, **(extra_meta or {})}, f, indent=2)


def load_saved_log(directory, *, lenient: bool = False) -> ListeningLog:
    """Read a folder written by `save_log`, validating it like any user file."""
    for name in (PLAYS_FILE, CATALOGUE_FILE):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise LogValidationError(
                f"expected {PLAYS_FILE} and {CATALOGUE_FILE} here (as `amrs data generate` writes)",
                file=path, hint="Check the path.",
            )
        try:
            version = (pq.read_schema(path).metadata or {}).get(b"amrs_schema_version", b"").decode()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise LogValidationError(f"not a readable Parquet file ({err})", file=path,
                                     hint="Regenerate the data (amrs data generate).") from None
        if version and not _readable(version):
            raise LogValidationError(
                f"written with schema {version}, this amrs_hf reads schema {SCHEMA_VERSION} (and older minor "
                "versions of the same major)",
                file=path, hint="Regenerate the data with this version, or upgrade amrs_hf.",
            )
    meta_path = os.path.join(directory, META_FILE)
    source = "saved"
    if os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except ValueError as err:
            raise LogValidationError(f"not valid JSON ({err})", file=meta_path,
                                     hint="Fix or remove the file.") from None
        source = meta.get("source", "saved") if isinstance(meta, dict) else "saved"
    plays = read_table(os.path.join(directory, PLAYS_FILE), lenient=lenient)
    catalogue = read_table(os.path.join(directory, CATALOGUE_FILE), lenient=lenient)
    return build_log(plays, catalogue, source=source, lenient=lenient)


def _readable(version: str) -> bool:
    """Whether this amrs_hf reads data of schema `version`: the same major, and a minor no newer than ours."""
    try:
        theirs = tuple(int(part) for part in version.split("."))
    except ValueError:
        return False
    ours = tuple(int(part) for part in SCHEMA_VERSION.split("."))
    return theirs[:1] == ours[:1] and theirs[:2] <= ours[:2]
