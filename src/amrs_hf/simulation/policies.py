"""Contrast policies for rollouts: the most popular tracks, and the greedy maximiser of the utility.

- `PopularPolicy`: what a popularity recommender does. By default, at every step the most-played track (in the
  training log) that this rollout has not played yet, so a rollout walks down the popularity chart (ties: the order
  of `candidate_ids`). `sample=True` instead draws a track with probability proportional to its count, again
  among the not-yet-played ones. `exclude="session"` also skips the prefix's tracks, `"none"` allows repeats (then
  top-1 plays the same track every step). When every candidate has been played, the exclusion is lifted for that row.
- `UtilityGreedyPolicy`: at every step the feasible candidate with the highest utility (`step_utility`), with no
  anchor to a reference policy: the upper bound of what chasing the utility under the world model gives (and the
  way to see what it exploits). A row where every candidate breaks a safety limit gets the least-violating one; such
  steps are counted in `num_fallbacks`.

`RandomPolicy` and `GreedyPolicy` stay in `rollout.py`; all four are exported from `amrs_hf.simulation`.
"""

from __future__ import annotations

import torch

from amrs_hf.data.tokenizer import track_token, track_token_ids
from amrs_hf.objectives import Utility

from .rollout import StepContext
from .scoring import step_utility

_EXCLUDE = ("rollout", "session", "none")


class PopularPolicy:
    """Top (or proportional sampling) by training-log play `counts` (one per candidate), without repeats."""

    def __init__(self, candidate_ids, counts, *, sample: bool = False, exclude: str = "rollout"):
        candidate_ids = torch.as_tensor(candidate_ids, dtype=torch.long).reshape(-1)
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        if counts.shape != candidate_ids.shape:
            raise ValueError(f"counts must give one count per candidate ({len(candidate_ids)}), got {len(counts)}")
        if (counts < 0).any() or not torch.isfinite(counts).all():
            raise ValueError("counts must be finite and >= 0")
        if exclude not in _EXCLUDE:
            raise ValueError(f"exclude must be one of {_EXCLUDE}, got {exclude!r}")
        order = torch.sort(counts, descending=True, stable=True).indices  # most popular first, ties by given order
        self.candidate_ids, self.counts = candidate_ids[order], counts[order]
        self.sample, self.exclude = sample, exclude

    @classmethod
    def from_log(cls, log, tokenizer, **kwargs) -> "PopularPolicy":
        """Counts of every catalogue track among `log`'s plays (e.g. the training split); unplayed tracks count 0."""
        candidates = track_token_ids(tokenizer)
        played = tokenizer.convert_tokens_to_ids([track_token(t) for t in log.plays["track_id"]])
        counts = torch.bincount(torch.as_tensor(played, dtype=torch.long), minlength=len(tokenizer))
        return cls(candidates, counts[candidates], **kwargs)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        device = ctx.states.device
        candidates = self.candidate_ids.to(device)
        played = torch.zeros(ctx.states.shape[0], len(candidates), dtype=torch.bool, device=device)
        if self.exclude != "none":
            if self.exclude == "rollout":
                history, mask = ctx.rollout_track_ids, torch.ones_like(ctx.rollout_track_ids, dtype=torch.bool)
            else:
                history, mask = ctx.history()
            played = ((history[:, :, None] == candidates[None, None, :]) & mask[:, :, None]).any(dim=1)
            played &= ~played.all(dim=1, keepdim=True)  # everything played: start again
        if not self.sample:  # candidates are sorted by popularity: the first one not played
            return candidates[(~played).int().argmax(dim=1)]
        weights = self.counts.to(device).expand_as(played).masked_fill(played, 0.0)
        no_mass = weights.sum(dim=1, keepdim=True) == 0  # only zero-count tracks left: uniform over them
        weights = torch.where(no_mass, (~played).double(), weights)
        pick = torch.multinomial(weights.to(ctx.generator.device), 1, generator=ctx.generator)[:, 0]
        return candidates[pick.to(device)]


class UtilityGreedyPolicy:
    """The feasible candidate with the highest `utility` at every step (see `step_utility`)."""

    def __init__(self, candidate_ids, utility: Utility, candidate_features=None):
        self.candidate_ids = torch.as_tensor(candidate_ids, dtype=torch.long)
        self.candidate_features = candidate_features
        self.utility = utility
        self.num_fallbacks = 0  # steps x rollouts where no candidate was feasible

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        candidates = self.candidate_ids.to(ctx.states.device)
        scored = step_utility(self.utility, ctx, candidates, self.candidate_features)
        pick = scored.total.argmax(dim=1)
        none_feasible = ~scored.feasible.any(dim=1)
        if none_feasible.any():
            self.num_fallbacks += int(none_feasible.sum())
            pick = torch.where(none_feasible, scored.violation.argmin(dim=1), pick)
        return candidates[pick]


__all__ = ["PopularPolicy", "UtilityGreedyPolicy"]
