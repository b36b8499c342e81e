"""The `synthetic` source: the embedded synthetic listening world (docs/synthetic_world.md).

    load_log("synthetic")                                   # 20,000 plays generated in memory, seed 0
    load_log("synthetic", num_plays=100_000, seed=3, epsilon=0.5)   # any SyntheticWorldConfig field as an override
    load_log("synthetic", "outputs/world")                  # a folder written by `amrs data generate` / save_log
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..io import load_saved_log
from ..schema import ListeningLog
from ..synthetic import SyntheticWorld, SyntheticWorldConfig
from . import register_source


@register_source("synthetic")
def load_synthetic(path: Optional[str] = None, *, num_plays: int = 20_000, seed: int = 0, lenient: bool = False,
                   **config_overrides) -> ListeningLog:
    """Generate the synthetic world's log in memory (`path` None), or read one saved with `save_log`.

    `seed` draws both the world (catalogue, listeners) and the sessions, so one seed is one reproducible log.
    `config_overrides` are `SyntheticWorldConfig` fields; they (and `num_plays`, `seed`) only apply when generating.
    """
    if path is not None:
        if config_overrides:
            raise ValueError(f"config overrides {sorted(config_overrides)} apply only when generating (path=None)")
        return load_saved_log(path, lenient=lenient)
    fields = [f.name for f in dataclasses.fields(SyntheticWorldConfig)]
    unknown = sorted(set(config_overrides) - set(fields))
    if unknown:
        raise ValueError(f"data source 'synthetic' has no option {', '.join(map(repr, unknown))}; its options: "
                         f"num_plays, seed, lenient and the SyntheticWorldConfig fields {', '.join(fields)}")
    world = SyntheticWorld(SyntheticWorldConfig(**config_overrides), seed=seed)
    return world.generate(num_plays, seed=seed)
