"""Rollout preferences: the policy proposes, the world model judges.

From each sampled prefix of a training listener's history (`random_cuts`; the world model reads the whole history,
the policy its prompt: mode, cohort and the current session's tracks so far), the current policy samples
`num_continuations` continuations of `continuation_length` tracks inside the world model (K rollouts of the
`LanguageModelPolicy`). Each continuation is then replayed `num_rollouts` times in the world model (fresh sampled
responses each time) and valued by its expected utility: the utility of every step's predicted outcomes, averaged over
steps and replays. chosen = the best continuation, rejected = the worst, kept if the gap exceeds `min_margin`.
Safety limits come first: a continuation that broke a limit in any replay is never chosen, and is the rejected one
whenever there is one (kept whatever the utility gap, since safe beats unsafe); a prefix whose continuations are all
unsafe gives no pair (counted as infeasible).

With `rounds` > 1 the DPO stage calls this again with the improved policy (iterative DPO inside the simulator).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from amrs_hf.data.schema import ListeningLog
from amrs_hf.data.tokenizer import TRACK_PREFIX
from amrs_hf.simulation.language_policy import LanguageModelPolicy
from amrs_hf.simulation.prefixes import prefix_batch, random_cuts, session_rows, session_track_batch
from amrs_hf.simulation.replay import ReplayTracks
from amrs_hf.simulation.rollout import simulate
from amrs_hf.simulation.scoring import rollout_scores

from .arguments import PreferenceArguments
from .pairs import PreferenceSet, known, prompt_text


@torch.no_grad()
def rollout_preferences(world_model, policy_model, tokenizer, log: ListeningLog, utility,
                        args: PreferenceArguments | None = None, max_history: int = 64,
                        show_progress: bool = True) -> PreferenceSet:
    """Pairs from `policy_model`'s own continuations of prefixes of `log` (see the module doc); `max_history`:
    plays the world model reads, the continuation included."""
    args = args or PreferenceArguments()
    config = world_model.config
    rng = np.random.default_rng(args.seed)
    cuts = random_cuts(log, args.num_prefixes, args.min_history, rng)
    max_plays = max_history - args.continuation_length
    if max_plays < 1:
        raise ValueError(f"max_history ({max_history}) must exceed continuation_length ({args.continuation_length})")
    policy = LanguageModelPolicy(policy_model, tokenizer, config.modes, config.cohorts,
                                 max_history=args.max_prompt_tracks, temperature=args.temperature)
    plays = log.plays_frame()[["user_id", "mode", "cohort", "track_id"]]
    k, n, length = args.num_continuations, args.num_rollouts, args.continuation_length
    out = PreferenceSet()
    chunks = range(0, len(cuts), args.batch_prefixes)
    for c, begin in enumerate(tqdm(chunks, desc="rollout preferences", disable=not show_progress, unit="batch")):
        chunk = cuts[begin : begin + args.batch_prefixes]
        prefix = prefix_batch(config, tokenizer, log, chunk, max_plays)
        policy.set_session_prefix(*session_track_batch(tokenizer, log, chunk, args.max_prompt_tracks))
        generator = torch.Generator(device=world_model.device).manual_seed(args.seed * 100_003 + c)
        proposed = simulate(world_model, prefix, policy, length, num_rollouts=k, generator=generator).tracks
        replayed = simulate(world_model, prefix, ReplayTracks(proposed.repeat_interleave(n, dim=0)), length,
                            num_rollouts=k * n, generator=generator)
        scores = rollout_scores(utility, replayed, config.modes, config.cohorts,
                                track_features=world_model.track_features)
        # expected utility per continuation (limits ignored) and whether any replay broke a safety limit
        value = scores.unconstrained.mean(1).view(len(chunk), k, n).mean(-1).double().cpu().numpy()
        unsafe = (~scores.feasible).any(1).view(len(chunk), k, n).any(-1).cpu().numpy()
        tracks = proposed.view(len(chunk), k, length).cpu().numpy()
        for i, (cut, rows) in enumerate(zip(chunk, session_rows(log, chunk, args.max_prompt_tracks))):
            if unsafe[i].all():
                out.drop("infeasible")
                continue
            # chosen: the best safe continuation; rejected: an unsafe one if any, else the worst
            best = int(np.where(unsafe[i], -np.inf, value[i]).argmax())
            worst = int(np.where(unsafe[i], value[i], np.inf).argmin() if unsafe[i].any() else value[i].argmin())
            out.offer(
                prompt=prompt_text(known(plays["mode"].iat[cut]), known(plays["cohort"].iat[cut]),
                                   plays["track_id"].to_numpy()[rows]),
                chosen=_track_ids(tokenizer, tracks[i, best]), rejected=_track_ids(tokenizer, tracks[i, worst]),
                chosen_utility=value[i, best], rejected_utility=value[i, worst],
                min_margin=args.min_margin if not unsafe[i, worst] else -np.inf,
                strategy="rollout", user_id=plays["user_id"].iat[cut])
    return out


def _track_ids(tokenizer, token_ids) -> list[str]:
    tokens = tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
    return [t[len(TRACK_PREFIX):] for t in tokens if t.startswith(TRACK_PREFIX)]


__all__ = ["rollout_preferences"]
