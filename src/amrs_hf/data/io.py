"""Saving a `ListeningLog` as Parquet (plays.parquet + catalogue.parquet) and reading it back.

The schema version travels in each file's Parquet metadata (`amrs_schema_version`); a folder written by a newer
schema is refused with a clear error instead of being misread.
"""

from __future__ import annotations

import json
import os

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
        version = (pq.read_schema(path).metadata or {}).get(b"amrs_schema_version", b"").decode()
        if version and version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise LogValidationError(
                f"written with schema {version}, this amrs_hf reads schema {SCHEMA_VERSION}",
                file=path, hint="Regenerate the data with this version.",
            )
    meta_path = os.path.join(directory, META_FILE)
    source = json.load(open(meta_path)).get("source", "saved") if os.path.exists(meta_path) else "saved"
    plays = read_table(os.path.join(directory, PLAYS_FILE))
    catalogue = read_table(os.path.join(directory, CATALOGUE_FILE))
    return build_log(plays, catalogue, source=source, lenient=lenient)
