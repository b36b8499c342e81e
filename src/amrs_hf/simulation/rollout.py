"""Rollouts: step a world model forward from logged session prefixes under a policy, sampling listener responses.

`simulate` expands B prefixes into R = B x num_rollouts rollouts (rollout r continues prefix r // num_rollouts) and
plays `horizon` tracks in each. At every step the policy picks a track per rollout, the world model predicts the
outcomes, they are sampled and fed back as history:

- like ~ Bernoulli(like_prob);
- engagement ~ Bernoulli(engagement) by default: the track is listened to the end or skipped (a fraction listened is
  mostly near 0 or 1 in logs), which keeps the expectation; `engagement_sampling="mean"` feeds back the mean instead;
- valence ~ Normal(mean, var), arousal likewise, each clipped to [0, 1]; the sampled post-listening valence/arousal is
  the next step's pre-listening state.

Mode, cohort and context stay those of the prefix's last play. The first step's pre-state is the last prefix play's
observed valence/arousal, else that play's pre-state, else missing (override with `initial_pre_state`). Every played
step enters the history with the pre-state it was predicted from (read by models with `pre_state_in_history`).

Session inputs (read by models with `use_session_inputs`): a rollout continues the prefix's last session, so every
step has session start 0 and a time gap of `step_gap_hours` since the previous play, by default per prefix the median
gap between consecutive plays of one session in the prefix (about one track's duration), else `DEFAULT_STEP_GAP_HOURS`
(3.5 minutes). With `new_session=True` the first step opens a new session instead (session start 1, gap
`new_session_gap_hours` or unknown); an empty prefix always starts one.

The random draws per step are, in order: the policy's own (if any), four (R,) draws (engagement, like: uniform;
valence, arousal: standard normal) and, for an ensemble under "mixture" sampling, the step's member. The cached path
(`use_cache=True`, one new play per step through the KV cache) and the recompute path (`use_cache=False`, the whole
history re-encoded every step, the reference) consume the same draws, so with the same generator seed they choose the
same tracks and sampled likes/engagement, and agree on every float to float32 rounding (about 1e-6; the two paths
sum the attention in a different order). A sample could differ only if a prediction sat within rounding of a draw.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import torch

from amrs_hf.models.world_model import OUTCOME_NAMES, WorldModelPredictions

from .ensemble import EnsemblePredictions

PREDICTION_NAMES = tuple(WorldModelPredictions.__dataclass_fields__)
_STEP_IDS = ("mode_ids", "cohort_ids", "context_ids")
_PRE_STATE = ("pre_valence", "pre_arousal")
_SESSION = ("session_start", "time_gap")
DEFAULT_STEP_GAP_HOURS = 3.5 / 60  # gap between plays of a session when the prefix shows none: a typical track


@dataclasses.dataclass
class StepContext:
    """What a policy sees at a rollout step (R rollouts)."""

    step: int  # 0 .. horizon - 1
    world_model: object  # AmrsWorldModel or WorldModelEnsemble
    states: torch.Tensor  # (R, H) listener states before this step ((R, M, H) for an ensemble)
    prefix_track_ids: torch.Tensor  # (R, T) the prefix, right-padded
    prefix_mask: torch.Tensor  # (R, T) bool
    rollout_track_ids: torch.Tensor  # (R, step) tracks played so far in this rollout
    pre_valence: torch.Tensor  # (R,) the listener's state now (value 0 where unknown)
    pre_arousal: torch.Tensor
    pre_valence_mask: torch.Tensor  # (R,) bool
    pre_arousal_mask: torch.Tensor
    mode_ids: torch.Tensor  # (R,)
    cohort_ids: torch.Tensor
    context_ids: torch.Tensor
    prefix_index: torch.Tensor  # (R,) which prefix each rollout continues
    generator: torch.Generator
    session_start: torch.Tensor | None = None  # (R,) 1.0 if this step opens a session, else 0.0
    time_gap: torch.Tensor | None = None  # (R,) hours since the previous play (0 where unknown)
    session_start_mask: torch.Tensor | None = None  # (R,) bool: known
    time_gap_mask: torch.Tensor | None = None

    def score(self, candidate_ids, candidate_features=None):
        """The world model's predictions (R, N) for candidates (N,) or (R, N) at this step."""
        return self.world_model.score_candidates(
            self.states, candidate_ids, candidate_features, pre_valence=self.pre_valence,
            pre_arousal=self.pre_arousal, pre_valence_mask=self.pre_valence_mask,
            pre_arousal_mask=self.pre_arousal_mask, mode_ids=self.mode_ids, cohort_ids=self.cohort_ids,
            context_ids=self.context_ids, session_start=self.session_start, time_gap=self.time_gap,
            session_start_mask=self.session_start_mask, time_gap_mask=self.time_gap_mask)

    def history(self, pad_token_id: int = 0, padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
        """Each rollout's full track history (prefix then rollout) as (ids, mask) (R, L), padded on `padding_side`
        (left suits a causal LM policy)."""
        ids = torch.cat([self.prefix_track_ids, self.rollout_track_ids], dim=1)
        mask = torch.cat([self.prefix_mask, torch.ones_like(self.rollout_track_ids, dtype=torch.bool)], dim=1)
        # a stable sort on the mask moves padding to one side, keeping the order of real tracks
        order = torch.sort(mask.int(), dim=1, descending=padding_side == "right", stable=True).indices
        ids, mask = ids.gather(1, order), mask.gather(1, order)
        return ids.masked_fill(~mask, pad_token_id), mask


class RandomPolicy:
    """Uniform over `candidate_ids` (e.g. `track_token_ids(tokenizer)`), drawn from the rollout's generator."""

    def __init__(self, candidate_ids):
        self.candidate_ids = torch.as_tensor(candidate_ids, dtype=torch.long)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        candidates = self.candidate_ids.to(ctx.states.device)
        pick = torch.randint(len(candidates), (ctx.states.shape[0],), generator=ctx.generator,
                             device=ctx.generator.device)
        return candidates[pick.to(candidates.device)]


class GreedyPolicy:
    """The candidate maximising `utility(predictions) -> (R, N)` under the world model (for an ensemble, the
    members' mean predictions), e.g. `lambda p: p.like_prob + p.valence_mean`."""

    def __init__(self, candidate_ids, utility: Callable[[WorldModelPredictions], torch.Tensor]):
        self.candidate_ids = torch.as_tensor(candidate_ids, dtype=torch.long)
        self.utility = utility

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        candidates = self.candidate_ids.to(ctx.states.device)
        predictions = ctx.score(candidates)
        if isinstance(predictions, EnsemblePredictions):
            predictions = predictions.mean
        return candidates[self.utility(predictions).argmax(dim=1)]


@dataclasses.dataclass
class RolloutResult:
    """Everything per rollout (R rows) and step (horizon columns)."""

    tracks: torch.Tensor  # (R, horizon) long
    sampled: dict  # outcome name -> (R, horizon) sampled engagement, rating (like 0/1), valence, arousal
    predicted: dict  # prediction name -> (R, horizon): engagement, like_prob, valence_mean/var, arousal_mean/var
    pre_valence: torch.Tensor  # (R, horizon) the pre-state each step was predicted from (0 where unknown)
    pre_arousal: torch.Tensor
    pre_state_mask: torch.Tensor  # (R, horizon, 2) bool: whether pre valence / arousal was known
    prefix_index: torch.Tensor  # (R,)
    disagreement: dict | None = None  # ensemble only: prediction name -> (R, horizon) std across members
    member_index: torch.Tensor | None = None  # ensemble only: (R, horizon) member the outcomes were sampled from
    mode_ids: torch.Tensor | None = None  # (R,) the mode id every step was played in (the prefix's last play's)
    cohort_ids: torch.Tensor | None = None  # (R,)

    def expected(self, name: str) -> torch.Tensor:
        """Expected outcome per step: engagement, rating (= like_prob), valence or arousal (the means)."""
        return self.predicted[{"engagement": "engagement", "rating": "like_prob"}.get(name, f"{name}_mean")]


@torch.no_grad()
def simulate(world_model, prefix_batch: Mapping[str, torch.Tensor], policy: Callable[[StepContext], torch.Tensor],
             horizon: int, num_rollouts: int = 1, generator: torch.Generator | None = None, use_cache: bool = True,
             engagement_sampling: str = "bernoulli", ensemble_sampling: str = "rollout_member",
             initial_pre_state: tuple | None = None, step_gap_hours=None, new_session: bool = False,
             new_session_gap_hours=None) -> RolloutResult:
    """Roll `policy` forward `horizon` plays from each prefix, `num_rollouts` times, under `world_model`.

    `prefix_batch` holds the inputs of `AmrsWorldModel.listener_states` for B session prefixes ((B, T), right-padded
    by `attention_mask`; a row may be empty if its mode/cohort/context at position 0 are set) plus optionally the
    pre-state and session columns (`session_start`, `time_gap`). `world_model` is an `AmrsWorldModel` or a
    `WorldModelEnsemble`; it runs in eval mode (restored after). `ensemble_sampling`: "rollout_member" (one member
    per rollout) or "mixture" (a member per step). `initial_pre_state`: optional (pre_valence, pre_arousal) (B,)
    tensors, NaN where unknown. `step_gap_hours` (a float or (B,) tensor), `new_session` and
    `new_session_gap_hours` set the session inputs of the rollout's plays (module doc)."""
    if horizon < 1 or num_rollouts < 1:
        raise ValueError("horizon and num_rollouts must be >= 1")
    if engagement_sampling not in ("bernoulli", "mean"):
        raise ValueError(f"engagement_sampling must be 'bernoulli' or 'mean', got {engagement_sampling!r}")
    if ensemble_sampling not in ("rollout_member", "mixture"):
        raise ValueError(f"ensemble_sampling must be 'rollout_member' or 'mixture', got {ensemble_sampling!r}")
    device = world_model.device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()
    was_training = world_model.training
    world_model.eval()
    try:
        return _simulate(world_model, prefix_batch, policy, horizon, num_rollouts, generator, use_cache,
                         engagement_sampling, ensemble_sampling, initial_pre_state, device,
                         (step_gap_hours, new_session, new_session_gap_hours))
    finally:
        world_model.train(was_training)


def _simulate(world_model, prefix_batch, policy, horizon, num_rollouts, generator, use_cache, engagement_sampling,
              ensemble_sampling, initial_pre_state, device, session_options):
    prefix, lengths = _prepare_prefix(world_model, prefix_batch, device)
    batch, prefix_len = prefix["track_ids"].shape
    rollouts = batch * num_rollouts
    prefix_index = torch.arange(batch, device=device).repeat_interleave(num_rollouts)
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(batch, device=device)
    step_ids = {name: prefix[name][rows, last][prefix_index] for name in _STEP_IDS}
    pre = _initial_pre_state(prefix, lengths, rows, last, initial_pre_state, device)
    (pre_v, pre_v_mask), (pre_a, pre_a_mask) = [(v[prefix_index], m[prefix_index]) for v, m in pre]
    first_session, later_session = _session_steps(prefix, lengths, session_options, device)
    first_session = {k: v[prefix_index] for k, v in first_session.items()}
    later_session = {k: v[prefix_index] for k, v in later_session.items()}

    history_inputs = dict(prefix)
    if use_cache:
        encoded = world_model.listener_states(**history_inputs, use_cache=True)
        cache = encoded.cache.repeat_interleave(num_rollouts).reserve(horizon)
        states = encoded.next_state.repeat_interleave(num_rollouts, dim=0)
    else:  # the reference: a right-padded buffer of the whole history, re-encoded every step
        buffers = _extend(history_inputs, prefix_index, horizon)
        row_lengths = lengths[prefix_index]
        states = world_model.listener_states(**buffers).next_state

    is_ensemble = hasattr(world_model, "members")
    member = None
    if is_ensemble and ensemble_sampling == "rollout_member":
        member = torch.randint(len(world_model), (rollouts,), generator=generator, device=generator.device).to(device)
    tracks, sampled, predicted, spread, members, pre_log = [], [], [], [], [], []
    for step in range(horizon):
        session = first_session if step == 0 else later_session
        context = StepContext(
            step=step, world_model=world_model, states=states, prefix_track_ids=prefix["track_ids"][prefix_index],
            prefix_mask=prefix["attention_mask"][prefix_index],
            rollout_track_ids=torch.stack(tracks, dim=1) if tracks else torch.zeros(rollouts, 0, dtype=torch.long,
                                                                                  device=device),
            pre_valence=pre_v, pre_arousal=pre_a, pre_valence_mask=pre_v_mask, pre_arousal_mask=pre_a_mask,
            prefix_index=prefix_index, generator=generator, **step_ids, **session)
        chosen = torch.as_tensor(policy(context), device=device).long().reshape(rollouts)
        scored = context.score(chosen[:, None])
        if is_ensemble:
            if ensemble_sampling == "mixture":
                member = torch.randint(len(world_model), (rollouts,), generator=generator,
                                       device=generator.device).to(device)
            report, source = scored.mean, scored.member(member)
            spread.append({name: scored.std[name][:, 0] for name in PREDICTION_NAMES})
            members.append(member)
        else:
            report = source = scored
        source = {name: source[name][:, 0] for name in PREDICTION_NAMES}
        outcome = _sample(source, generator, engagement_sampling, device)
        tracks.append(chosen)
        sampled.append(outcome)
        predicted.append({name: report[name][:, 0] for name in PREDICTION_NAMES})
        pre_log.append((pre_v, pre_a, torch.stack([pre_v_mask, pre_a_mask], dim=-1)))
        # the play enters the history with what was known before it (pre-state, session inputs) and its outcomes
        play = {"track_ids": chosen[:, None], **{k: v[:, None] for k, v in outcome.items()},
                **{k: v[:, None] for k, v in step_ids.items()},
                **{k: v[:, None] for k, v in session.items()},
                "pre_valence": pre_v[:, None], "pre_arousal": pre_a[:, None],
                "pre_valence_mask": pre_v_mask[:, None], "pre_arousal_mask": pre_a_mask[:, None]}
        pre_v, pre_a = outcome["valence"], outcome["arousal"]
        pre_v_mask = pre_a_mask = torch.ones(rollouts, dtype=torch.bool, device=device)
        if step == horizon - 1:
            break
        if use_cache:
            states = world_model.listener_states(**play, cache=cache).next_state
        else:
            _write(buffers, play, row_lengths + step, world_model)
            states = world_model.listener_states(**buffers).next_state

    def stack(dicts):
        return {name: torch.stack([d[name] for d in dicts], dim=1) for name in dicts[0]}

    return RolloutResult(
        tracks=torch.stack(tracks, dim=1), sampled=stack(sampled), predicted=stack(predicted),
        pre_valence=torch.stack([p[0] for p in pre_log], dim=1), pre_arousal=torch.stack([p[1] for p in pre_log], 1),
        pre_state_mask=torch.stack([p[2] for p in pre_log], dim=1), prefix_index=prefix_index,
        disagreement=stack(spread) if is_ensemble else None,
        member_index=torch.stack(members, dim=1) if is_ensemble else None, mode_ids=step_ids["mode_ids"],
        cohort_ids=step_ids["cohort_ids"])


def _sample(predictions: dict, generator, engagement_sampling: str, device) -> dict:
    shape, gen_device = predictions["engagement"].shape, generator.device
    u_engagement = torch.rand(shape, generator=generator, device=gen_device).to(device)
    u_like = torch.rand(shape, generator=generator, device=gen_device).to(device)
    z_valence = torch.randn(shape, generator=generator, device=gen_device).to(device)
    z_arousal = torch.randn(shape, generator=generator, device=gen_device).to(device)
    engagement = predictions["engagement"]
    if engagement_sampling == "bernoulli":
        engagement = (u_engagement < engagement).to(engagement.dtype)
    return {
        "engagement": engagement,
        "rating": (u_like < predictions["like_prob"]).to(engagement.dtype),
        "valence": (predictions["valence_mean"] + predictions["valence_var"].sqrt() * z_valence).clamp(0.0, 1.0),
        "arousal": (predictions["arousal_mean"] + predictions["arousal_var"].sqrt() * z_arousal).clamp(0.0, 1.0),
    }


def _prepare_prefix(world_model, prefix_batch, device):
    """The prefix as explicit tensors on `device`: outcomes as (value with 0 where missing, mask), ids defaulted."""
    if "track_ids" not in prefix_batch:
        raise ValueError("prefix_batch needs track_ids (B, T)")
    known = {"track_ids", "attention_mask", "audio_features", *OUTCOME_NAMES, *(f"{o}_mask" for o in OUTCOME_NAMES),
             *_STEP_IDS, *_PRE_STATE, *(f"{n}_mask" for n in _PRE_STATE), *_SESSION,
             *(f"{n}_mask" for n in _SESSION)}
    unknown = set(prefix_batch) - known
    if unknown:
        raise ValueError(f"prefix_batch has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    track_ids = torch.as_tensor(prefix_batch["track_ids"], device=device).long()
    mask = prefix_batch.get("attention_mask")
    mask = torch.ones_like(track_ids, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=device)
    mask = mask.bool()
    if (~mask[:, :-1] & mask[:, 1:]).any():
        raise ValueError("prefix attention_mask must be right-padded: real plays first, then padding")
    prefix = {"track_ids": track_ids, "attention_mask": mask}
    if prefix_batch.get("audio_features") is not None:
        prefix["audio_features"] = torch.as_tensor(prefix_batch["audio_features"], device=device).float()
    for name in (*OUTCOME_NAMES, *_PRE_STATE, *_SESSION):
        value, observed = _observed(prefix_batch.get(name), prefix_batch.get(f"{name}_mask"), track_ids.shape, device)
        # outcomes count only on real plays; a pre-state is kept at position 0 of an empty prefix (its start)
        prefix[name], prefix[f"{name}_mask"] = value, observed if name.startswith("pre_") else observed & mask
    for name in _STEP_IDS:
        ids = prefix_batch.get(name)
        prefix[name] = torch.zeros_like(track_ids) if ids is None else torch.as_tensor(ids, device=device).long()
    return prefix, mask.sum(1)


def _observed(value, mask, shape, device):
    if value is None:
        return torch.zeros(shape, device=device), torch.zeros(shape, dtype=torch.bool, device=device)
    value = torch.as_tensor(value, device=device).float()
    observed = ~torch.isnan(value)
    if mask is not None:
        observed = observed & torch.as_tensor(mask, device=device).bool()
    return torch.where(observed, value, 0.0), observed


def _session_steps(prefix, lengths, options, device):
    """Session inputs (B,) of the first rollout step and of the later ones: value, and known mask (module doc)."""
    step_gap_hours, new_session, new_session_gap_hours = options
    batch = lengths.shape[0]
    if step_gap_hours is None:  # per prefix: the median gap between consecutive plays of one session
        within = prefix["attention_mask"] & prefix["session_start_mask"] & (prefix["session_start"] == 0)
        within &= prefix["time_gap_mask"]
        gaps = torch.where(within, prefix["time_gap"], torch.nan)
        gap = gaps.nanmedian(dim=1).values if gaps.shape[1] else gaps.new_full((batch,), torch.nan)
        gap = torch.where(torch.isnan(gap), DEFAULT_STEP_GAP_HOURS, gap)
    else:
        gap = torch.as_tensor(step_gap_hours, dtype=torch.float32, device=device).expand(batch).clone()
    if torch.isnan(gap).any() or (gap < 0).any():
        raise ValueError(f"step_gap_hours must be >= 0, got {step_gap_hours!r}")
    known = torch.ones(batch, dtype=torch.bool, device=device)
    later = {"session_start": torch.zeros(batch, device=device), "time_gap": gap.float(),
             "session_start_mask": known, "time_gap_mask": known}
    opens = (lengths == 0) | bool(new_session)
    if new_session_gap_hours is None:
        first_gap, first_gap_known = torch.zeros(batch, device=device), torch.zeros_like(known)
    else:
        first_gap = torch.as_tensor(new_session_gap_hours, dtype=torch.float32, device=device).expand(batch)
        first_gap_known = torch.ones_like(known)
    first = {"session_start": opens.float(), "time_gap": torch.where(opens, first_gap, later["time_gap"]),
             "session_start_mask": known, "time_gap_mask": torch.where(opens, first_gap_known, known)}
    return first, later


def _initial_pre_state(prefix, lengths, rows, last, initial_pre_state, device):
    """Per prefix and per component: (value, known) from the override, else the last play's post-state, else its
    pre-state (for an empty prefix, the pre-state at position 0)."""
    out = []
    for i, name in enumerate(("valence", "arousal")):
        has_play = lengths > 0
        post, post_known = prefix[name][rows, last], prefix[f"{name}_mask"][rows, last] & has_play
        pre_name = f"pre_{name}"
        before, before_known = prefix[pre_name][rows, last], prefix[f"{pre_name}_mask"][rows, last]
        value = torch.where(post_known, post, before)
        known = post_known | before_known
        if initial_pre_state is not None and initial_pre_state[i] is not None:
            override, override_known = _observed(initial_pre_state[i], None, lengths.shape, device)
            value, known = torch.where(override_known, override, value), override_known | known
        out.append((value, known))
    return out


def _extend(inputs: dict, index: torch.Tensor, horizon: int) -> dict:
    """Rows `index` of every (B, T, ...) input, padded with `horizon` empty steps (masks False, values 0)."""
    out = {}
    for name, value in inputs.items():
        value = value[index]
        pad = value.new_zeros((value.shape[0], horizon, *value.shape[2:]))
        out[name] = torch.cat([value, pad], dim=1)
    return out


def _write(buffers: dict, play: dict, column: torch.Tensor, world_model) -> None:
    """Write one play per row at `column` (R,) of the right-padded buffers, marking it real and observed."""
    rows = torch.arange(column.shape[0], device=column.device)
    track_ids = play["track_ids"][:, 0]
    buffers["track_ids"][rows, column] = track_ids
    buffers["attention_mask"][rows, column] = True
    if "audio_features" in buffers:
        buffers["audio_features"][rows, column] = world_model.track_features[track_ids]
    for name in OUTCOME_NAMES:
        buffers[name][rows, column] = play[name][:, 0]
        buffers[f"{name}_mask"][rows, column] = True
    for name in (*_PRE_STATE, *_SESSION):
        buffers[name][rows, column] = play[name][:, 0]
        buffers[f"{name}_mask"][rows, column] = play[f"{name}_mask"][:, 0]
    for name in _STEP_IDS:
        buffers[name][rows, column] = play[name][:, 0]


__all__ = ["DEFAULT_STEP_GAP_HOURS", "GreedyPolicy", "RandomPolicy", "RolloutResult", "StepContext", "simulate"]
