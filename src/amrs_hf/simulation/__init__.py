"""Simulation: rollouts of a policy under a world model (or an ensemble of them), contrast policies, and the
utility scored at rollout steps and over rollouts."""

from .ensemble import EnsembleCache, EnsemblePredictions, WorldModelEnsemble
from .policies import PopularPolicy, UtilityGreedyPolicy
from .rollout import GreedyPolicy, RandomPolicy, RolloutResult, StepContext, simulate
from .scoring import rollout_scores, rollout_value, step_utility

__all__ = [
    "EnsembleCache",
    "EnsemblePredictions",
    "GreedyPolicy",
    "PopularPolicy",
    "RandomPolicy",
    "RolloutResult",
    "StepContext",
    "UtilityGreedyPolicy",
    "WorldModelEnsemble",
    "rollout_scores",
    "rollout_value",
    "simulate",
    "step_utility",
]
