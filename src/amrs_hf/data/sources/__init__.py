"""Data sources: adapters that map a source's files onto the listening-log schema.

`load_log(source, path, **options)` is the one entry point; each adapter registers itself with `register_source`.
Differences between experiments live in the options (YAML), never in `if source == ...` downstream.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

from ..schema import ListeningLog

SOURCES: dict[str, Callable[..., ListeningLog]] = {}


def register_source(name: str):
    def decorate(loader):
        SOURCES[name] = loader
        return loader

    return decorate


def load_log(source: str, path: Optional[str] = None, **options) -> ListeningLog:
    """Load a listening log from a registered source (`situnes`, `mssd`, `generic`, `synthetic`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; known sources: {', '.join(sorted(SOURCES))}")
    loader = SOURCES[source]
    parameters = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):  # a loader with **overrides checks its own
        known = [name for name in parameters if name != "path"]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"data source {source!r} has no option {', '.join(map(repr, unknown))}; its options: "
                             f"{', '.join(known) or 'none'}")
    return loader(path, **options)


from . import generic, mssd, situnes, synthetic  # noqa: E402,F401  (registers the adapters)
