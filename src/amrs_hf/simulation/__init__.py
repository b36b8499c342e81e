"""Simulation: rollouts of a policy under a world model (or an ensemble of them)."""

from .ensemble import EnsembleCache, EnsemblePredictions, WorldModelEnsemble
from .rollout import GreedyPolicy, RandomPolicy, RolloutResult, StepContext, simulate

__all__ = [
    "EnsembleCache",
    "EnsemblePredictions",
    "GreedyPolicy",
    "RandomPolicy",
    "RolloutResult",
    "StepContext",
    "WorldModelEnsemble",
    "simulate",
]
