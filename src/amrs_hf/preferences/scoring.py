"""Scoring candidates for preference building: the world model (or ensemble) predicts, the utility values."""

from __future__ import annotations

import inspect

import torch


def accepted_inputs(world_model, method: str) -> set:
    """Keyword inputs `method` of the world model (of its first member, for an ensemble) accepts."""
    model = world_model.members[0] if hasattr(world_model, "members") else world_model
    return set(inspect.signature(getattr(model, method)).parameters)


def predict_and_score(world_model, utility, states, candidate_ids, step_inputs: dict):
    """The utility of candidates (P, N) for P listener states ((P, H), or (P, M, H) for an ensemble).

    `step_inputs`: per-listener (P,) tensors with what is known before listening, as the model's inputs are named
    (`mode_ids`, `cohort_ids`, `context_ids`, `pre_valence`, `pre_arousal`, NaN where unknown, ...); inputs the
    model does not take are ignored. An ensemble is scored by its members' mean predictions with their standard
    deviation as the disagreement the utility's pessimism term penalises."""
    keys = accepted_inputs(world_model, "score_candidates")
    step = {k: v for k, v in step_inputs.items() if k in keys}
    predictions = world_model.score_candidates(states, candidate_ids, **step)
    disagreement = None
    if hasattr(predictions, "std"):
        predictions, disagreement = predictions.mean, predictions.std
    mood = {}
    for name in ("pre_valence", "pre_arousal"):
        value = step_inputs.get(name)
        if value is not None:
            value = value.float()
            known = ~torch.isnan(value)
            if f"{name}_mask" in step_inputs:
                known &= step_inputs[f"{name}_mask"].bool()
            mood[name], mood[f"{name}_mask"] = torch.where(known, value, 0.0), known
    config = world_model.config
    return utility.score(predictions, step_inputs["mode_ids"], step_inputs["cohort_ids"], modes=config.modes,
                         cohorts=config.cohorts, disagreement=disagreement, **mood)


__all__ = ["accepted_inputs", "predict_and_score"]
