"""A policy that plays given track sequences: to score fixed continuations, or to replay one policy's
recommendations in another world."""

from __future__ import annotations

import torch

from .rollout import StepContext


class ReplayTracks:
    """Plays `token_ids` (R, horizon): column `step` at each step, one row per rollout."""

    def __init__(self, token_ids: torch.Tensor):
        self.token_ids = torch.as_tensor(token_ids, dtype=torch.long)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        if self.token_ids.shape[0] != ctx.states.shape[0]:
            raise ValueError(f"ReplayTracks holds {self.token_ids.shape[0]} sequences for {ctx.states.shape[0]} rollouts")
        return self.token_ids[:, ctx.step].to(ctx.states.device)


__all__ = ["ReplayTracks"]
