"""Text in, recommendations out: the policy's prompts, a logits processor that keeps generation on tracks, and
`recommend`.

A prompt is whitespace-separated tokens of the track tokenizer (`amrs_hf.data.tokenizer`):

    prompt_text("calm", "clinical", ["874", "707"])  ->  "<mode:calm> <cohort:clinical> t:874 t:707"

The policy always reads `<bos>` first (so a listener with no history and no known mode still has a context);
`encode_prompts` and the DPO trainer add it when a prompt does not start with it. A mode or cohort of None (missing in
the log) is left out. This module is not part of the remote code copied next to the weights; it needs amrs_hf.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from amrs_hf.data.tokenizer import cohort_token, mode_token, text_to_tracks, track_token, track_token_ids


def prompt_text(mode: Optional[str], cohort: Optional[str], history_track_ids: Sequence[str] = ()) -> str:
    """The prompt for a listener in `mode` / `cohort` (None: unknown, left out) who has heard `history_track_ids`."""
    tokens = [] if mode is None else [mode_token(mode)]
    tokens += [] if cohort is None else [cohort_token(cohort)]
    tokens += [track_token(str(t)) for t in history_track_ids]
    return " ".join(tokens)


def with_bos(text: str, bos_token: str = "<bos>") -> str:
    """`text` starting with `bos_token` (added when missing)."""
    text = text.strip()
    return text if text.split(" ", 1)[0] == bos_token else f"{bos_token} {text}".strip()


def encode_prompts(tokenizer, prompts: Sequence[str]) -> dict:
    """Left-padded `input_ids` / `attention_mask` (B, T) for `generate`, each prompt led by `<bos>`. A token outside
    the vocabulary (an unknown track, mode or cohort) raises, naming it."""
    texts = [with_bos(p, tokenizer.bos_token) for p in prompts]
    vocab = tokenizer.get_vocab()
    for i, text in enumerate(texts):
        unknown = [tok for tok in text.split() if tok not in vocab]
        if unknown:
            raise ValueError(f"prompt {i} has tokens outside the tokenizer's vocabulary: {unknown[:5]} (tracks must "
                             "be in the catalogue the policy was trained on; modes/cohorts in its lists)")
    return tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")


class TrackOnlyLogitsProcessor(LogitsProcessor):
    """Sets the score of every non-track token (specials, modes, cohorts) to -inf, so `generate()` emits only tracks.
    With `no_repeat=True` a track already in the row (its prompt or generated so far) is banned too; if that bans every
    track, the row falls back to all tracks rather than emitting a non-track."""

    def __init__(self, tokenizer, no_repeat: bool = False):
        ids = track_token_ids(tokenizer)
        if not ids:
            raise ValueError("the tokenizer has no track tokens (t:...); build it with build_track_tokenizer")
        self.track_ids = torch.tensor(ids)
        self.vocab_size = len(tokenizer)
        self.no_repeat = no_repeat

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        allowed[:, self.track_ids.to(scores.device)] = True
        if self.no_repeat:
            seen = torch.zeros_like(allowed)
            seen.scatter_(1, input_ids.clamp(max=scores.shape[1] - 1), True)
            fresh = allowed & ~seen
            allowed = torch.where(fresh.any(1, keepdim=True), fresh, allowed)
        return scores.masked_fill(~allowed, float("-inf"))


@torch.no_grad()
def recommend(model, tokenizer, prompts: Sequence[str], num_tracks: int = 10, num_return_sequences: int = 1,
              do_sample: bool = False, no_repeat: bool = True, **generate_kwargs) -> list[list[str]]:
    """The next `num_tracks` track ids for each prompt (`prompt_text` strings), by `model.generate`. Returns
    `len(prompts) * num_return_sequences` lists, the sequences of prompt 0 first. `no_repeat` keeps a recommendation
    from repeating a track of its prompt or of itself; other keyword arguments go to `generate` (e.g. `temperature`,
    `top_k`)."""
    if num_tracks < 1:
        raise ValueError(f"num_tracks must be >= 1, got {num_tracks}")
    if not prompts:
        return []
    inputs = encode_prompts(tokenizer, prompts).to(model.device)
    processors = LogitsProcessorList([TrackOnlyLogitsProcessor(tokenizer, no_repeat=no_repeat)])
    processors.extend(generate_kwargs.pop("logits_processor", []))
    output = model.generate(
        **inputs, max_new_tokens=num_tracks, min_new_tokens=num_tracks, do_sample=do_sample,
        num_return_sequences=num_return_sequences, logits_processor=processors,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=None,
        **generate_kwargs,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text_to_tracks(text) for text in tokenizer.batch_decode(new_tokens)]


@torch.no_grad()
def completion_log_probs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    """log p(completion | prompt) under `model` for each pair, summed over the completion's tokens (the quantity DPO
    compares with the reference's). Prompts get `<bos>` when they lack it."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    vocab = tokenizer.get_vocab()
    sequences, starts = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = [vocab[t] for t in with_bos(prompt, tokenizer.bos_token).split()]
        completion_ids = [vocab[t] for t in completion.split()]
        sequences.append(prompt_ids + completion_ids)
        starts.append(len(prompt_ids))
    length = max(map(len, sequences))
    input_ids = torch.tensor([s + [tokenizer.pad_token_id] * (length - len(s)) for s in sequences])
    attention_mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences])
    model.eval()
    log_probs = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
    log_probs = log_probs.float().log_softmax(-1).cpu()
    token_log_probs = log_probs[:, :-1].gather(-1, input_ids[:, 1:, None])[..., 0]  # position t predicts t + 1
    positions = torch.arange(1, length)[None]
    scored = (positions >= torch.tensor(starts)[:, None]) & attention_mask[:, 1:].bool()
    return (token_log_probs * scored).sum(1)


__all__ = ["TrackOnlyLogitsProcessor", "completion_log_probs", "encode_prompts", "prompt_text", "recommend",
           "with_bos"]
