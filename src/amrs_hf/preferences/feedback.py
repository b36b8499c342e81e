"""Feedback correction (the AMRS paper's strategy): a logged play the listener disliked or skipped is the rejected
track; the chosen one is the candidate the world model expects to serve that listener best at that moment.

For each negative play (a rating score at or below `dislike_score`, or engagement below `skip_threshold`), in the listener
state the world model holds just before it (teacher-forced on everything the listener did earlier, as in training):

1. candidates = the logged track's `num_neighbours` nearest tracks in standardised audio-feature space (similar sound,
   a plausible substitute) plus `num_random` tracks drawn uniformly from the catalogue (exploration);
2. the world model (or ensemble) predicts every candidate's outcomes, and the utility scores them with the play's own
   mode, cohort and pre-listening mood (ensemble disagreement as the pessimism input);
3. chosen = the feasible candidate with the highest utility, rejected = the logged track; kept if better by more
   than `min_margin`.

The prompt is what the policy read before the play (`prompt_text`: mode, cohort and the session's earlier tracks),
the completions one track each.
"""

from __future__ import annotations

import dataclasses
import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

from amrs_hf.data.schema import ListeningLog
from amrs_hf.data.tokenizer import TRACK_PREFIX, track_token_ids
from amrs_hf.models.world_model.processing_world_model import WorldModelCollator, user_sequences
from amrs_hf.simulation.prefixes import session_rows

from .arguments import PreferenceArguments
from .pairs import PreferenceSet, known, prompt_text
from .scoring import accepted_inputs, predict_and_score


def negative_feedback(log: ListeningLog, skip_threshold: float, dislike_score: float = 2) -> np.ndarray:
    """Per play: disliked (a 1-5 rating score at or below `dislike_score`; where the log has no score, a like flag of
    0) or skipped (engagement below `skip_threshold`). Missing values are not negative."""
    frame = log.plays_frame()
    score = frame["rating_score"].to_numpy(dtype=float)
    liked = frame["rating"].to_numpy(dtype=float)
    engagement = frame["engagement"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        disliked = np.where(np.isnan(score), liked == 0, score <= dislike_score)
        return disliked | (engagement < skip_threshold)


def audio_neighbours(world_model, tokenizer, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(catalogue token ids (C,), their k nearest other tracks' token ids (C, k)) in the world model's standardised
    audio-feature space."""
    track_ids = np.asarray(track_token_ids(tokenizer))
    features = world_model.track_features[torch.as_tensor(track_ids)].double().cpu().numpy()
    k = min(k, len(track_ids) - 1)
    if k <= 0:
        return track_ids, np.zeros((len(track_ids), 0), dtype=np.int64)
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    # drop each track itself (normally the first neighbour; exact duplicates may reorder it)
    neighbours = np.stack([row[row != i][:k] for i, row in enumerate(index)])
    return track_ids, track_ids[neighbours]


@torch.no_grad()
def feedback_correction(world_model, tokenizer, log: ListeningLog, utility, args: PreferenceArguments | None = None,
                        max_history: int = 64, batch_size: int = 32, show_progress: bool = True) -> PreferenceSet:
    """Pairs for every negative play of `log` (see the module doc). `world_model`: `AmrsWorldModel` or
    `WorldModelEnsemble` sharing `tokenizer`'s vocabulary; `utility`: an `amrs_hf.objectives.Utility`;
    `max_history`: plays of history the world model reads (as in its training)."""
    args = args or PreferenceArguments()
    config = world_model.config
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"the world model's vocab_size ({config.vocab_size}) differs from the tokenizer's "
                         f"({len(tokenizer)}): they must come from the same catalogue")
    out = PreferenceSet()
    negative = negative_feedback(log, args.skip_threshold, args.dislike_score)
    if not negative.any():
        return out
    rng = np.random.default_rng(args.seed)
    catalogue, neighbours = audio_neighbours(world_model, tokenizer, args.num_neighbours)
    neighbours_of = dict(zip(catalogue.tolist(), neighbours))
    sessions = session_rows(log, np.flatnonzero(negative), args.max_prompt_tracks, include_cut=False)
    before = dict(zip(np.flatnonzero(negative).tolist(), sessions))
    plays = log.plays_frame()[["user_id", "mode", "cohort", "session_id", "position", "track_id"]]
    plays["play_id"] = plays["session_id"].astype(str) + ":" + plays["position"].astype(str)
    track_of = plays["track_id"].to_numpy(dtype=object)

    world_model.eval()
    device = world_model.device
    state_keys = accepted_inputs(world_model, "listener_states")
    windows = user_sequences(log, tokenizer, config, max_length=max_history, overlap=max_history // 2)
    collate = WorldModelCollator(tokenizer.pad_token_id, keep_index=True)
    batches = range(0, len(windows), batch_size)
    for begin in tqdm(batches, desc="feedback correction", disable=not show_progress, unit="batch"):
        batch = collate(windows[begin : begin + batch_size])
        index, score_from = batch.pop("play_index"), batch.pop("score_from")
        batch = {k: v.to(device) for k, v in batch.items()}
        scored = (index >= 0) & (torch.arange(index.shape[1])[None] >= score_from[:, None])
        scored &= torch.as_tensor(negative)[index.clamp(min=0)]
        rows, cols = torch.nonzero(scored, as_tuple=True)
        if len(rows) == 0:
            continue
        logged = batch["track_ids"][rows, cols].cpu().numpy()
        in_catalogue = [int(t) in neighbours_of for t in logged]
        if not all(in_catalogue):  # a play of a track outside the catalogue (<unk>) has no candidates to offer
            out.drop("empty", int(len(in_catalogue) - sum(in_catalogue)))
            keep = torch.as_tensor(in_catalogue)
            rows, cols, logged = rows[keep], cols[keep], logged[np.asarray(in_catalogue)]
            if len(rows) == 0:
                continue
        explore = rng.choice(catalogue, size=(len(logged), args.num_random)) if args.num_random else \
            np.zeros((len(logged), 0), dtype=np.int64)
        candidates = np.concatenate([logged[:, None], np.stack([neighbours_of[int(t)] for t in logged]), explore], 1)
        states = world_model.listener_states(**{k: v for k, v in batch.items() if k in state_keys}).states
        step_inputs = {k: v[rows, cols] for k, v in batch.items() if k not in ("track_ids", "attention_mask")}
        score = predict_and_score(world_model, utility, states[rows, cols], torch.as_tensor(candidates, device=device),
                                  step_inputs)
        total = score.total.double().cpu().numpy()
        alternatives = np.where(candidates[:, 1:] == candidates[:, :1], -np.inf, total[:, 1:])  # never the logged one
        best = alternatives.argmax(axis=1)
        for i, play in enumerate(index[rows, cols].tolist()):
            if not np.isfinite(alternatives[i, best[i]]):
                out.drop("infeasible")
                continue
            chosen_token, rejected_token = candidates[i, 1 + best[i]], candidates[i, 0]
            history = track_of[before[play]]
            out.offer(
                prompt=prompt_text(known(plays["mode"].iat[play]), known(plays["cohort"].iat[play]), history),
                chosen=[_track_id(tokenizer, chosen_token)], rejected=[_track_id(tokenizer, rejected_token)],
                chosen_utility=alternatives[i, best[i]], rejected_utility=total[i, 0], min_margin=args.min_margin,
                strategy="feedback_correction", user_id=plays["user_id"].iat[play], play_id=plays["play_id"].iat[play])
    return out


def _track_id(tokenizer, token_id) -> str:
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if not token.startswith(TRACK_PREFIX):
        raise ValueError(f"token id {token_id} ({token!r}) is not a track")
    return token[len(TRACK_PREFIX):]


__all__ = ["audio_neighbours", "feedback_correction", "negative_feedback"]
