"""A causal language-model policy (`AmrsPolicyForCausalLM`) acting inside world-model rollouts.

At every rollout step the policy reads the prompt it was trained on: `<bos> <mode:m> <cohort:c>`, then the tracks of
the current session so far (the session's logged tracks up to the prefix's end, given by `set_session_prefix`, then
the tracks it played in this rollout; the last `max_history` of them), and picks the next track from its next-token
distribution restricted to track tokens (every other token is impossible). Without a session prefix it reads the
rollout's whole history (`StepContext.history`). The policy and the world model share one track tokenizer, so a
track's id is the same in both.

`distribution(ctx)` gives that restricted distribution (R, C) over `candidate_ids`, which the evaluation uses for the
KL divergence between two policies in the same states.
"""

from __future__ import annotations

import inspect

import torch

from amrs_hf.data.tokenizer import cohort_token, mode_token, track_token_ids

from .rollout import StepContext


def _id_table(names, token, tokenizer) -> torch.Tensor:
    """World-model id (0 = unknown, 1 + index into `names`) -> token id, -1 where the tokenizer lacks it."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([-1] + [vocab.get(token(name), -1) for name in names], dtype=torch.long)


class LanguageModelPolicy:
    """Wraps a causal LM over the track tokenizer as a rollout policy.

    `model`: a causal LM (returns `.logits`); `tokenizer`: the track tokenizer it was trained with; `modes`,
    `cohorts`: the world model config's vocabularies (its `mode_ids` are 1 + index into them, 0 unknown, in which case
    the token is left out). `temperature` scales the logits; `greedy=True` takes the most likely track instead of
    sampling. `max_history`: tracks of history in the prompt (default: what fits the model's positions)."""

    def __init__(self, model, tokenizer, modes, cohorts, max_history: int | None = None, temperature: float = 1.0,
                 greedy: bool = False):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        vocab_size = getattr(model.config, "vocab_size", None)
        if vocab_size is not None and vocab_size != len(tokenizer):
            raise ValueError(f"the policy's vocab_size ({vocab_size}) differs from the tokenizer's ({len(tokenizer)}): "
                             "the policy and the world model must be built on the same catalogue / tokenizer")
        self.model, self.tokenizer = model, tokenizer
        self.candidate_ids = torch.tensor(track_token_ids(tokenizer), dtype=torch.long)
        self.mode_tokens = _id_table(modes, mode_token, tokenizer)
        self.cohort_tokens = _id_table(cohorts, cohort_token, tokenizer)
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_history = max_history or ((limit - 3) if limit else 256)  # <bos>, mode, cohort
        self.temperature, self.greedy = temperature, greedy
        self.session_prefix = None
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_session_prefix(self, track_ids: torch.Tensor | None, mask: torch.Tensor | None = None):
        """Per prefix (B, L), right-padded: the current session's logged tracks the prompt starts with (e.g.
        `session_track_batch`); None reads the whole history instead. Returns self."""
        self.session_prefix = None if track_ids is None else (
            torch.as_tensor(track_ids).long(), torch.ones_like(torch.as_tensor(track_ids), dtype=torch.bool)
            if mask is None else torch.as_tensor(mask).bool())
        return self

    def prompt(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt of every rollout as left-padded (ids, mask) (R, L)."""
        if self.session_prefix is None:
            history, history_mask = ctx.history(self.tokenizer.pad_token_id, padding_side="left")
        else:
            ids, mask = (t.to(ctx.rollout_track_ids.device)[ctx.prefix_index] for t in self.session_prefix)
            history = torch.cat([ids, ctx.rollout_track_ids], dim=1)
            history_mask = torch.cat([mask, torch.ones_like(ctx.rollout_track_ids, dtype=torch.bool)], dim=1)
            order = torch.sort(history_mask.int(), dim=1, stable=True).indices  # padding first
            history, history_mask = history.gather(1, order), history_mask.gather(1, order)
        history, history_mask = history[:, -self.max_history:], history_mask[:, -self.max_history:]
        mode = self.mode_tokens.to(history.device)[ctx.mode_ids]
        cohort = self.cohort_tokens.to(history.device)[ctx.cohort_ids]
        bos = torch.full_like(mode, self.tokenizer.bos_token_id)
        ids = torch.cat([bos[:, None], mode[:, None], cohort[:, None], history], dim=1)
        mask = torch.cat([torch.ones_like(history_mask[:, :1]), (mode >= 0)[:, None], (cohort >= 0)[:, None],
                          history_mask], dim=1)
        order = torch.sort(mask.int(), dim=1, stable=True).indices  # padding first, the real tokens in order after
        ids, mask = ids.gather(1, order), mask.gather(1, order)
        return ids.masked_fill(~mask, self.tokenizer.pad_token_id), mask

    @torch.no_grad()
    def logits(self, ctx: StepContext) -> torch.Tensor:
        """Next-track logits (R, C) over `candidate_ids`."""
        ids, mask = self.prompt(ctx)
        ids, mask = ids.to(self.device), mask.to(self.device)
        inputs = {"input_ids": ids, "attention_mask": mask.long()}
        if self._takes_positions:
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(**inputs).logits[:, -1]
        finally:
            self.model.train(was_training)
        return logits[:, self.candidate_ids.to(logits.device)].float() / self.temperature

    def distribution(self, ctx: StepContext) -> torch.Tensor:
        return torch.softmax(self.logits(ctx), dim=-1)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        logits = self.logits(ctx)
        candidates = self.candidate_ids.to(logits.device)
        if self.greedy:
            return candidates[logits.argmax(dim=-1)]
        probs = torch.softmax(logits, dim=-1)
        pick = torch.multinomial(probs.to(ctx.generator.device), 1, generator=ctx.generator)[:, 0]
        return candidates[pick.to(candidates.device)]


__all__ = ["LanguageModelPolicy"]
