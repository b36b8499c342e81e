"""amrs_hf: affective music recommendation, learned offline.

A world model learns from logged listening how people respond to tracks; a recommender policy is cloned from the logs
and improved offline with DPO against a multi-objective utility the world model scores.
"""

__version__ = "0.1.0"

# Register the models with the transformers Auto classes, once, at import.
from .models import register_auto_classes as _register_auto_classes  # noqa: E402

_register_auto_classes()
