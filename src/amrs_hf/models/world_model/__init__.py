"""The world model: a causal transformer over a listener's plays that predicts engagement, like and affect."""

from .configuration_world_model import OUTCOME_NAMES, AmrsWorldModelConfig
from .modeling_world_model import (
    AmrsWorldModel,
    AmrsWorldModelOutput,
    WorldModelCache,
    WorldModelPredictions,
    WorldModelStates,
)

__all__ = [
    "OUTCOME_NAMES",
    "AmrsWorldModel",
    "AmrsWorldModelConfig",
    "AmrsWorldModelOutput",
    "WorldModelCache",
    "WorldModelPredictions",
    "WorldModelStates",
]
