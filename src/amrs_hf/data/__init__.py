"""Listening logs: the schema, source adapters, the synthetic world, splits and the track tokenizer."""

from .io import load_saved_log, save_log
from .schema import (
    AUDIO_FEATURES,
    CATALOGUE_FEATURES,
    COHORTS,
    MODES,
    OUTCOMES,
    PLAY_FEATURES,
    SCHEMA_VERSION,
    ListeningLog,
    session_view,
)
from .sources import SOURCES, load_log, register_source
from .validation import LogValidationError
