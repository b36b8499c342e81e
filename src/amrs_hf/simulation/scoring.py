"""The utility (`amrs_hf.objectives.Utility`) applied where the simulator is: to the candidates of a rollout step
and to whole rollouts. It lives here, not in `objectives`, because it reads `StepContext` and `RolloutResult`.

- `step_utility(utility, ctx, candidate_ids)`: the world model scores the candidates at the step (for an ensemble,
  the members' mean predictions, with their std as the disagreement the pessimism term penalises); the diversity
  bonus compares each candidate with the session's last `utility.diversity.window` tracks (prefix, then rollout) in
  the world model's standardised audio-feature space (`track_features`).
- `rollout_scores` / `rollout_value`: the utility of every played step from the rollout's predicted means (and
  disagreement), the diversity bonus of each track against the rollout's earlier tracks; the value of a rollout is
  the mean over its steps (-inf if any step was infeasible), for ranking continuations of one prefix.
"""

from __future__ import annotations

import torch

from amrs_hf.models.world_model import WorldModelPredictions
from amrs_hf.objectives import Utility, UtilityScore

from .ensemble import EnsemblePredictions
from .rollout import RolloutResult, StepContext


def step_utility(utility: Utility, ctx: StepContext, candidate_ids, candidate_features=None) -> UtilityScore:
    """Utility (R, N) of candidates (N,) or (R, N) at this step; `candidate_features` (standardised, (N, F) or
    (R, N, F)) default to the world model's catalogue features."""
    device = ctx.states.device
    candidates = torch.as_tensor(candidate_ids, device=device).long()
    scored = ctx.score(candidates, candidate_features)
    if isinstance(scored, EnsemblePredictions):
        predictions, disagreement = scored.mean, scored.std
    else:
        predictions, disagreement = scored, None
    diversity = None
    if utility.diversity.weight > 0:
        catalogue = ctx.world_model.track_features
        features = catalogue[candidates] if candidate_features is None else torch.as_tensor(candidate_features)
        recent, mask = ctx.history(padding_side="left")
        diversity = utility.step_diversity(candidates, features.to(catalogue), recent, catalogue[recent], mask)
    config = ctx.world_model.config
    return utility.score(predictions, ctx.mode_ids, ctx.cohort_ids, modes=config.modes, cohorts=config.cohorts,
                         pre_arousal=ctx.pre_arousal, pre_arousal_mask=ctx.pre_arousal_mask,
                         pre_valence=ctx.pre_valence, pre_valence_mask=ctx.pre_valence_mask,
                         disagreement=disagreement, diversity=diversity)


def rollout_scores(utility: Utility, result: RolloutResult, modes, cohorts, *, mode_ids=None, cohort_ids=None,
                   track_features=None) -> UtilityScore:
    """Utility (R, horizon) of every step played in the rollouts.

    `modes`/`cohorts`: the world model's `config.modes`/`config.cohorts`; `mode_ids`/`cohort_ids` (R,) default to
    the rollout's own. `track_features` (vocab, F), e.g. `world_model.track_features`, enables the diversity term
    (each track against the rollout's previous `window` tracks); without it the term is 0."""
    mode_ids = result.mode_ids if mode_ids is None else mode_ids
    cohort_ids = result.cohort_ids if cohort_ids is None else cohort_ids
    if mode_ids is None or cohort_ids is None:
        raise ValueError("this RolloutResult carries no mode_ids/cohort_ids: pass mode_ids= and cohort_ids= (R,)")
    predictions = WorldModelPredictions(**result.predicted)
    disagreement = None if result.disagreement is None else WorldModelPredictions(**result.disagreement)
    diversity = None
    if track_features is not None and utility.diversity.weight > 0:
        tracks = result.tracks
        features = torch.as_tensor(track_features, device=tracks.device)[tracks]  # (R, horizon, F)
        diversity = torch.cat([
            utility.step_diversity(tracks[:, t:t + 1], features[:, t:t + 1], tracks[:, :t], features[:, :t])
            for t in range(tracks.shape[1])], dim=1)
    return utility.score(predictions, mode_ids, cohort_ids, modes=modes, cohorts=cohorts,
                         pre_arousal=result.pre_arousal, pre_arousal_mask=result.pre_state_mask[..., 1],
                         pre_valence=result.pre_valence, pre_valence_mask=result.pre_state_mask[..., 0],
                         disagreement=disagreement, diversity=diversity)


def rollout_value(utility: Utility, result: RolloutResult, modes, cohorts, *, mode_ids=None, cohort_ids=None,
                  track_features=None) -> torch.Tensor:
    """Expected utility (R,) of each rollout: the mean over its steps of `rollout_scores(...).total`; -inf for a
    rollout that played an infeasible track. (`rollout_scores(...).unconstrained.mean(1)` ignores the limits and
    `(~rollout_scores(...).feasible).sum(1)` counts the violations.)"""
    return rollout_scores(utility, result, modes, cohorts, mode_ids=mode_ids, cohort_ids=cohort_ids,
                          track_features=track_features).total.mean(dim=1)


__all__ = ["rollout_scores", "rollout_value", "step_utility"]
