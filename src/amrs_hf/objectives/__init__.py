"""Objectives: the multi-objective utility a recommendation is scored by (affect per mode, engagement, like,
diversity, ensemble pessimism) and the hard safety limits per cohort and mode. See `docs/objectives.md`."""

from .presets import DEFAULT_PRESET, PRESETS
from .utility import (
    TERM_NAMES,
    AffectObjective,
    DiversityObjective,
    ModeObjective,
    SafetyLimit,
    Utility,
    UtilityScore,
)

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "TERM_NAMES",
    "AffectObjective",
    "DiversityObjective",
    "ModeObjective",
    "SafetyLimit",
    "Utility",
    "UtilityScore",
]
