"""The synthetic check with known truth: how close does the world model come to the true response model?

On the synthetic world (docs/synthetic_world.md) the response model is known, so the best any predictor can do is
known as well: the **ceiling** is the fit of the world's noise-free expectations of every play (`generate(...,
return_truth=True)`: computed with the listener's true latent parameters and true mood) to what the log observed.
The check, on a user-disjoint split of one world's log:

1. **Fidelity against the ceiling.** The world model is trained on the train listeners (`train_world_model`), the
   `FeatureOnly` baseline on the same plays. On the held-out listeners' plays after their first `warmup_plays` (in
   each listener's time order, the order the world model reads them in), each predictor is scored with the same
   metrics (`outcome_metrics`): R² of valence, arousal and engagement, AUC of like. `ratio` = model / ceiling.
   The criterion: ratio >= `min_ratio` (0.9) and model R² > feature-only R², for valence and arousal.
2. **Rollout agreement.** For held-out listeners (one prefix each: their plays up to a random play after the first
   `warmup_plays`) the same track sequences are played `horizon` steps forward in the world model (`simulate`) and in
   the true world (`SyntheticWorld.step`, started from the exact latent state the log was in after the prefix:
   session set point, true mood, fatigue, recent sound, the session's tracks). Tracks come from a history-free
   policy, drawn up front so both worlds see the same ones: `logging` (the world's own logging policy for that
   listener and mode) and `uniform` (uniform over the catalogue, off the logging distribution). Per rollout, the
   session-level average of each recorded outcome (engagement fraction, like, valence and arousal reports) is taken
   over the horizon, in expectation given each step's state (world: `expected`, reports as the mean of the clipped
   report; world model: its predicted means, likewise), which keeps the mean and removes sampling noise. Prefixes are
   independent, so the paired difference (world model - true world) of the per-prefix averages has a standard error.
   **Tolerance** (fixed before any model was trained): the 95% confidence interval of the mean difference lies
   within +-`tolerance` = 0.05 on the [0, 1] scale of each outcome (an equivalence test, so a noisy comparison
   fails rather than passes). 0.05 is half the largest shift of session mood a policy can cause in this world
   (about +0.09 valence, +0.11 / -0.07 arousal; docs/synthetic_world.md) and a quarter of the like-rate gap between
   the logging policy and uniform tracks: a simulator biased by less still orders those policies correctly.

Beside the criterion, `observable_bound` reports what the true model itself reaches from what the log records (a
Kalman filter with every true parameter but only the self-reports, not the true mood), and from only what the world
model's inputs show: how much of the gap to the ceiling any predictor could close.

`ceiling_check(data_args, model_args, training_args, check_args)` runs all of it and returns one dict;
`render_markdown(result)` formats it. The command (`amrs_hf.scripts.synthetic_check`):

    amrs synthetic-check --config recipes/synthetic/world_model/config_ceiling.yaml \
        --output_dir outputs/synthetic_check

writes `synthetic_check.json` and `synthetic_check.md` to the output folder and exits 1 when the check fails.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr

from amrs_hf.data.schema import MODES, ListeningLog, listening_order
from amrs_hf.data.splits import cold_start_split
from amrs_hf.data.synthetic import SessionState, SyntheticWorld, SyntheticWorldConfig
from amrs_hf.models.world_model.training_world_model import (
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
    train_world_model,
)
from amrs_hf.data.tokenizer import track_token
from amrs_hf.models.world_model.processing_world_model import WorldModelCollator, predict_plays, user_sequences
from amrs_hf.simulation.rollout import StepContext, simulate

from .baselines import FeatureHistory, FeatureOnly
from .metrics import outcome_metrics, regression_metrics

CRITERION_OUTCOMES = ("valence", "arousal")
ROLLOUT_OUTCOMES = ("engagement", "like", "valence", "arousal")
ROLLOUT_POLICIES = ("logging", "uniform")
RESULT_FILE, REPORT_FILE = "synthetic_check.json", "synthetic_check.md"
Z95 = 1.959963984540054


@dataclass
class SyntheticCheckArguments:
    """What the check measures and how strictly. The world, split and history length come from `DataArguments`
    (`data_options`: `num_plays`, `seed` and any `SyntheticWorldConfig` field), the model from `WorldModelArguments`,
    training from `WorldModelTrainingArguments`."""

    warmup_plays: int = field(
        default=10, metadata={"help": "Each held-out listener's first plays: history only, never scored."}
    )
    min_ratio: float = field(
        default=0.9, metadata={"help": "Least share of the ceiling R² the model must reach (valence and arousal)."}
    )
    num_prefixes: int = field(
        default=300, metadata={"help": "Held-out listeners rolled forward (one prefix each; fewer if fewer qualify)."}
    )
    horizon: int = field(default=10, metadata={"help": "Plays rolled forward from each prefix."})
    num_rollouts: int = field(default=4, metadata={"help": "Rollouts (track sequences) per prefix and policy."})
    rollout_policies: list[str] = field(
        default_factory=lambda: list(ROLLOUT_POLICIES),
        metadata={"help": "History-free policies rolled in both worlds: logging, uniform."},
    )
    tolerance: float = field(
        default=0.05, metadata={"help": "The 95%% CI of each session-level mean difference must lie within +-this."}
    )
    rollout_seed: int = field(default=0, metadata={"help": "Seed of the prefixes, tracks and sampled outcomes."})

    def __post_init__(self):
        unknown = set(self.rollout_policies) - set(ROLLOUT_POLICIES)
        if unknown:
            raise ValueError(f"rollout_policies has unknown {sorted(unknown)}; known: {ROLLOUT_POLICIES}")
        if self.warmup_plays < 1 or self.horizon < 1 or self.num_rollouts < 1 or self.num_prefixes < 2:
            raise ValueError("need warmup_plays >= 1, horizon >= 1, num_rollouts >= 1 and num_prefixes >= 2")


# ------------------------------------------------------------------------------------------------ world and split


def generate_world(data_args) -> tuple[SyntheticWorld, ListeningLog, pd.DataFrame]:
    """The world, log and truth of `data_args` (the same log `load_log("synthetic", **data_options)` gives)."""
    if data_args.data_source != "synthetic" or data_args.data_path:
        raise ValueError("the synthetic check needs data_source: synthetic, generated in memory (no data_path)")
    options = dict(data_args.data_options or {})
    num_plays, seed = int(options.pop("num_plays", 20_000)), int(options.pop("seed", 0))
    world = SyntheticWorld(SyntheticWorldConfig(**options), seed=seed)
    log, truth = world.generate(num_plays, seed=seed, return_truth=True)
    return world, log, truth


def split_with_truth(log: ListeningLog, truth: pd.DataFrame, data_args) -> tuple[dict, pd.DataFrame]:
    """The cold-start split of `log` and the truth rows of its test plays (aligned with `splits["test"].plays`)."""
    if data_args.split != "cold_start":
        raise ValueError(f"the synthetic check holds listeners out: split must be cold_start, got {data_args.split!r}")
    splits = cold_start_split(log, data_args.split_fractions, seed=data_args.split_seed)
    users = np.asarray(log.plays["user_id"], dtype=object)
    rows = np.flatnonzero(np.isin(users, np.asarray(splits["test"].plays.unique("user_id"), dtype=object)))
    test_sessions = np.asarray(splits["test"].plays["session_id"], dtype=object)
    if len(rows) != splits["test"].num_plays or not np.array_equal(
            np.asarray(log.plays["session_id"], dtype=object)[rows], test_sessions):
        raise RuntimeError("the test split's plays are not the full log's rows of its users, in order")
    return splits, truth.iloc[rows].reset_index(drop=True)


def history_rank(log: ListeningLog) -> np.ndarray:
    """Each play's index in its listener's history, in the order `user_sequences` reads them (time order)."""
    frame = log.plays_frame()[["user_id", "timestamp", "session_id", "position"]]
    order = listening_order(frame)
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order.index.to_numpy()] = order.groupby("user_id", sort=False).cumcount().to_numpy()
    return rank


# --------------------------------------------------------------------------------------------- fidelity vs ceiling


def ceiling_predictions(truth: pd.DataFrame) -> dict:
    """The true model's noise-free expectations in the form `outcome_metrics` takes."""
    return {
        "engagement": (truth["expected_engagement"].to_numpy(), None),
        "rating": (truth["like_probability"].to_numpy(), None),
        "valence": (truth["expected_valence"].to_numpy(), None),
        "arousal": (truth["expected_arousal"].to_numpy(), None),
    }


def _headline(metrics: dict) -> dict:
    """The figure compared with the ceiling per outcome: R² (engagement, valence, arousal), AUC (like)."""
    return {
        "engagement": metrics["engagement"].get("r2", float("nan")),
        "like_auc": metrics["rating"].get("auc", float("nan")),
        "valence": metrics["valence"].get("r2", float("nan")),
        "arousal": metrics["arousal"].get("r2", float("nan")),
    }


def observable_bound(world: SyntheticWorld, test: ListeningLog, test_truth: pd.DataFrame,
                     session_boundaries: str = "known", pre_in_history: bool = True) -> dict:
    """What the true model can predict from what the log records: a Kalman filter over each listener's plays with
    the world's equations and every listener's true latent parameters, but only the observed self-reports (no true
    mood). Returns outcome -> (mean, None) for valence and arousal, aligned with `test.plays`.

    The filter tracks (session set point, mood) per listener. A new session resets it to the listener's true baseline
    with the world's situational spread; a pre-listening report updates the mood, the track moves it with the world's
    dynamics (the enjoyment lift by its expectation and variance given the true appeal), and the post-listening report
    updates it again. Linear-Gaussian (clipping to [0, 1] is ignored) and blind to ratings, so a slight underestimate.
    `session_boundaries="inferred"` restarts only where the world model's inputs reveal a new session (it reads no
    session ids or times): the mode changes, or the play has no pre-state although the previous play has a
    post-state (inside a session that post-state would have been carried forward as the pre-state,
    `carry_mood_forward`). `pre_in_history=False` lets a pre-listening report inform only its own play (past plays
    enter the world model's history by their outcomes, not their pre-states)."""
    c = world.config
    frame = test.plays_frame()
    rank = history_rank(test)
    users = test_truth["user_index"].to_numpy()
    tracks = test_truth["track_index"].to_numpy()
    sessions = test_truth["session_index"].to_numpy()
    modes = frame["mode"].to_numpy()
    if session_boundaries not in ("known", "inferred"):
        raise ValueError(f"session_boundaries must be 'known' or 'inferred', got {session_boundaries!r}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(32)  # E over enjoyment noise of the (bounded) lift
    weights = weights / weights.sum()
    out = {}
    for name in ("valence", "arousal"):
        if name == "valence":
            baseline, spread = world.baseline_valence, c.session_valence_std
            report_var, response, pull = c.valence_report_noise ** 2, world.valence_response, world.valence
            lifts = world._lift(test_truth["appeal"].to_numpy()[:, None] + c.enjoyment_noise * nodes[None, :])
            lift_mean = lifts @ weights
            lift_var = np.maximum((lifts ** 2) @ weights - lift_mean ** 2, 0.0)
        else:
            baseline, spread = world.baseline_arousal, c.session_arousal_std
            report_var, response, pull = c.arousal_report_noise ** 2, world.arousal_response, world.energy
            lift_mean = lift_var = np.zeros(len(users))
        pre = frame[f"pre_{name}"].to_numpy(dtype=np.float64)
        post = frame[name].to_numpy(dtype=np.float64)
        predicted = np.full(len(users), np.nan)
        mean = np.zeros((world.num_users, 2))  # per listener: (set point, mood)
        cov = np.zeros((world.num_users, 2, 2))
        last_session = np.full(world.num_users, -1)
        last_mode = np.full(world.num_users, None, dtype=object)
        last_post_seen = np.zeros(world.num_users, dtype=bool)

        def update(m, p, y):  # condition on a report y = mood + noise where observed
            seen = ~np.isnan(y)
            gain = p[:, :, 1] / (p[:, 1, 1] + report_var)[:, None]
            m_new = m + gain * np.where(seen, y - m[:, 1], 0.0)[:, None]
            p_new = p - gain[:, :, None] * p[:, 1, None, :]
            return np.where(seen[:, None], m_new, m), np.where(seen[:, None, None], p_new, p)

        for r in range(int(rank.max()) + 1):
            rows = np.flatnonzero(rank == r)
            u = users[rows]
            new = sessions[rows] != last_session[u]
            if session_boundaries == "inferred":  # a new session shows only as a mode change or an uncarried gap
                new &= (modes[rows] != last_mode[u]) | (np.isnan(pre[rows]) & last_post_seen[u])
            new |= r == 0
            mean[u[new]] = baseline[u[new], None]
            cov[u[new]] = spread ** 2
            last_session[u], last_mode[u], last_post_seen[u] = sessions[rows], modes[rows], ~np.isnan(post[rows])
            m, p = update(mean[u], cov[u], pre[rows])
            if not pre_in_history:
                m_kept, p_kept = mean[u], cov[u]
            rho, lam = world.persistence[u], response[u]
            step = np.zeros((len(rows), 2, 2))
            step[:, 0, 0], step[:, 1, 0], step[:, 1, 1] = 1.0, 1.0 - rho, rho - lam
            shift = lam * pull[tracks[rows]] + lift_mean[rows]
            noise = c.mood_noise ** 2 + lift_var[rows]

            def advance(m, p):
                m = np.einsum("nij,nj->ni", step, m)
                m[:, 1] += shift
                p = step @ p @ step.transpose(0, 2, 1)
                p[:, 1, 1] += noise
                return m, p

            m, p = advance(m, p)
            predicted[rows] = np.clip(m[:, 1], 0.0, 1.0)
            if not pre_in_history:
                m, p = advance(m_kept, p_kept)
            mean[u], cov[u] = update(m, p, post[rows])
        out[name] = (predicted, None)
    return out


PREDICTORS = ("ceiling", "world_model", "feature_only", "feature_history")  # scored on every outcome; others are bounds


def score_against_ceiling(test: ListeningLog, predictors: dict, data_args, check_args: SyntheticCheckArguments) -> dict:
    """Score `predictors` (name -> outcome -> (mean, var or None); `ceiling`, `world_model` and `feature_only`
    required, `feature_history` and the bounds reported) on the test plays after each listener's first warm-up
    plays, and apply the criterion."""
    scored = history_rank(test) >= check_args.warmup_plays
    if scored.sum() < 10:
        raise ValueError(f"only {int(scored.sum())} held-out plays come after {check_args.warmup_plays} warm-up "
                         "plays: generate more plays or hold out more listeners")
    frame = test.plays.select_columns(["engagement", "rating", "valence", "arousal"]).to_pandas()
    observed = {o: np.where(scored, frame[o].to_numpy(dtype=np.float64), np.nan) for o in frame.columns}
    metrics, figures = {}, {}
    for name, predicted in predictors.items():
        if name in PREDICTORS:
            metrics[name] = outcome_metrics(observed, predicted, data_args.engagement_threshold)
            figures[name] = _headline(metrics[name])
        else:  # a bound: valence and arousal only
            metrics[name] = {o: regression_metrics(observed[o], *predicted[o]) for o in CRITERION_OUTCOMES}
            figures[name] = {o: metrics[name][o]["r2"] for o in CRITERION_OUTCOMES}
    ceiling = figures["ceiling"]
    ratio = {o: figures["world_model"][o] / ceiling[o] for o in ceiling}
    # like: also the share of the ceiling's lift above chance, (AUC - 0.5) / (ceiling AUC - 0.5)
    ratio["like_auc_above_chance"] = (figures["world_model"]["like_auc"] - 0.5) / (ceiling["like_auc"] - 0.5)
    other_ratios = {name: {o: figures[name][o] / ceiling[o] for o in CRITERION_OUTCOMES}
                    for name in figures if name != "ceiling"}
    checks = {}
    for o in CRITERION_OUTCOMES:
        checks[f"{o}_ratio"] = bool(ratio[o] >= check_args.min_ratio)
        checks[f"{o}_beats_feature_only"] = bool(figures["world_model"][o] > figures["feature_only"][o])
    return {
        "warmup_plays": check_args.warmup_plays,
        "scored_plays": int(scored.sum()),
        "test_listeners": int(len(set(test.plays["user_id"]))),
        "figures": figures,
        "ratio": ratio,
        "ratios_of_ceiling": other_ratios,
        "checks": checks,
        "passed": all(checks.values()),
        "metrics": metrics,
    }


def fidelity_against_ceiling(model, tokenizer, world: SyntheticWorld, splits: dict, test_truth: pd.DataFrame,
                             data_args, check_args: SyntheticCheckArguments,
                             baseline: Optional[FeatureOnly] = None) -> dict:
    """Ceiling, world model and feature-only baseline on the test listeners' plays after their first warm-up plays,
    with the linear models given the history summary (`FeatureHistory`, reported) and the observable bounds
    (`observable_bound`) beside them."""
    test = splits["test"]
    predictors = {
        "ceiling": ceiling_predictions(test_truth),
        "world_model": predict_plays(model, test, tokenizer, max_length=data_args.max_history),
        "feature_only": (baseline or FeatureOnly().fit(splits["train"])).predict(test),
        "feature_history": FeatureHistory().fit(splits["train"]).predict(test),
        "observable_bound": observable_bound(world, test, test_truth),
    }
    # the bound for what this model's inputs show; with session inputs and past pre-states it is the observable bound
    config = model.config
    if not (getattr(config, "use_session_inputs", False) and getattr(config, "pre_state_in_history", False)):
        predictors["world_model_information_bound"] = observable_bound(
            world, test, test_truth, session_boundaries="known" if config.use_session_inputs else "inferred",
            pre_in_history=config.pre_state_in_history)
    return score_against_ceiling(test, predictors, data_args, check_args)


# --------------------------------------------------------------------------------------------------- rollouts


def choose_prefixes(test: ListeningLog, check_args: SyntheticCheckArguments, rng: np.random.Generator) -> np.ndarray:
    """One cut play per chosen held-out listener (a row of `test.plays`): a random play after their first
    `warmup_plays - 1`, so every prefix holds at least `warmup_plays` plays. Listeners sorted by id."""
    rank = history_rank(test)
    users = np.asarray(test.plays["user_id"], dtype=object)
    eligible = pd.DataFrame({"user": users, "row": np.arange(len(users))})[rank >= check_args.warmup_plays - 1]
    cuts = eligible.groupby("user", sort=True)["row"].apply(lambda rows: rng.choice(rows.to_numpy()))
    if len(cuts) > check_args.num_prefixes:
        cuts = cuts.iloc[np.sort(rng.choice(len(cuts), check_args.num_prefixes, replace=False))]
    if len(cuts) < 2:
        raise ValueError(f"{len(cuts)} held-out listeners have {check_args.warmup_plays} plays: too few to roll out")
    return cuts.to_numpy(dtype=np.int64)


def true_states(world: SyntheticWorld, test: ListeningLog, test_truth: pd.DataFrame, cut_rows) -> list:
    """The world's exact latent state after each cut play, as (prefix indices, SessionState) groups of equal
    session position (a `SessionState` advances its sessions in lockstep, so one group per position)."""
    plays = test.plays.select_columns(["session_id", "position", "mode"]).to_pandas()
    session_rows = plays.groupby("session_id", sort=False).indices
    groups = {}
    for k, row in enumerate(cut_rows):
        rows = session_rows[plays["session_id"].iat[row]]
        rows = rows[plays["position"].to_numpy()[rows] <= plays["position"].iat[row]]
        rows = rows[np.argsort(plays["position"].to_numpy()[rows], kind="stable")]
        groups.setdefault(len(rows), []).append((k, row, rows))
    rate = world.config.recent_sound_rate
    out = []
    for _, members in sorted(groups.items()):
        index = np.array([k for k, _, _ in members])
        last = np.array([row for _, row, _ in members])
        history = np.stack([test_truth["track_index"].to_numpy()[rows] for _, _, rows in members]).astype(np.int32)
        recent = world.audio_z[history[:, 0]]
        for t in range(1, history.shape[1]):
            recent = (1.0 - rate) * recent + rate * world.audio_z[history[:, t]]
        truth = test_truth.iloc[last]
        state = SessionState(
            user=truth["user_index"].to_numpy(np.int64),
            mode=np.array([MODES.index(m) for m in plays["mode"].to_numpy()[last]], dtype=np.int64),
            set_valence=truth["set_valence"].to_numpy(), set_arousal=truth["set_arousal"].to_numpy(),
            valence=truth["true_post_valence"].to_numpy(), arousal=truth["true_post_arousal"].to_numpy(),
            fatigue=truth["fatigue"].to_numpy(), recent=recent, history=history)
        out.append((index, state))
    return out


def clipped_normal_mean(mean, std):
    """E[clip(X, 0, 1)] for X ~ N(mean, std²): the expected value of a report bounded to [0, 1]."""
    mean, std = np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    a, b = -mean / std, (1.0 - mean) / std
    pdf = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    return mean * (ndtr(b) - ndtr(a)) + std * (pdf(a) - pdf(b)) + (1.0 - ndtr(b))


def _true_rollouts(world, groups, tracks, num_rollouts, rng) -> dict:
    """Per-step expected recorded outcomes (R, horizon) in the true world, playing `tracks` (R, horizon)."""
    c = world.config
    horizon = tracks.shape[1]
    out = {o: np.empty(tracks.shape) for o in ROLLOUT_OUTCOMES}
    for index, state in groups:
        rollout_rows = (index[:, None] * num_rollouts + np.arange(num_rollouts)).reshape(-1)
        state = state.select(np.repeat(np.arange(len(index)), num_rollouts))
        for t in range(horizon):
            expected = world.expected(state, tracks[rollout_rows, t])
            _, state = world.step(state, tracks[rollout_rows, t], rng)
            out["engagement"][rollout_rows, t] = expected["expected_engagement"]
            out["like"][rollout_rows, t] = expected["like_probability"]
            out["valence"][rollout_rows, t] = clipped_normal_mean(state.valence, c.valence_report_noise)
            out["arousal"][rollout_rows, t] = clipped_normal_mean(state.arousal, c.arousal_report_noise)
    return out


class ReplayTracks:
    """A policy that plays given tracks: `token_ids` (R, horizon), column `step` at each step."""

    def __init__(self, token_ids: torch.Tensor):
        self.token_ids = token_ids

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.token_ids[:, ctx.step].to(ctx.states.device)


def _prefix_batch(model, tokenizer, test: ListeningLog, cut_rows, max_plays: int) -> dict:
    """The world model's input for each prefix (the listener's last `max_plays` plays up to the cut, processed as in
    training by `user_sequences`), one row per prefix in the order of `cut_rows` (one prefix per listener)."""
    rank = history_rank(test)
    users = np.asarray(test.plays["user_id"], dtype=object)
    mine = [(users == users[cut]) & (rank <= rank[cut]) & (rank > rank[cut] - max_plays) for cut in cut_rows]
    rows = np.sort(np.concatenate([np.flatnonzero(m) for m in mine]))
    windows = user_sequences(test.subset(rows), tokenizer, model.config, max_length=max_plays + 1)
    by_user = {users[rows[w["play_index"][0]]]: w for w in windows}
    if len(by_user) != len(windows):
        raise RuntimeError("a prefix did not fit one window")
    return WorldModelCollator(tokenizer.pad_token_id)([by_user[users[cut]] for cut in cut_rows])


def rollout_agreement(model, tokenizer, world: SyntheticWorld, test: ListeningLog, test_truth: pd.DataFrame,
                      data_args, check_args: SyntheticCheckArguments) -> dict:
    """Session-level averages of the same track sequences in the world model and in the true world (module doc)."""
    rng = np.random.default_rng([check_args.rollout_seed, 1])
    cut_rows = choose_prefixes(test, check_args, rng)
    num_prefixes, num_rollouts, horizon = len(cut_rows), check_args.num_rollouts, check_args.horizon
    max_plays = data_args.max_history - horizon  # the prefix plus the rollout must fit max_position_embeddings
    prefix = _prefix_batch(model, tokenizer, test, cut_rows, max_plays)
    groups = true_states(world, test, test_truth, cut_rows)
    users = np.repeat(test_truth["user_index"].to_numpy()[cut_rows], num_rollouts)
    modes = np.repeat(np.array([MODES.index(m) for m in np.asarray(test.plays["mode"], dtype=object)[cut_rows]]),
                      num_rollouts)
    track_tokens = np.asarray(tokenizer.convert_tokens_to_ids([track_token(t) for t in world.track_ids]))
    results = {}
    for p, policy in enumerate(check_args.rollout_policies):
        policy_rng = np.random.default_rng([check_args.rollout_seed, 2, p])
        if policy == "uniform":
            tracks = policy_rng.integers(0, world.num_tracks, (len(users), horizon))
        else:  # the logging policy is history-free: its draws for the whole horizon can be made up front
            cdf = np.cumsum(world.logging_probabilities(users, modes), axis=1)
            cdf[:, -1] = 1.0
            tracks = np.stack([np.searchsorted(row, policy_rng.random(horizon), side="right") for row in cdf])
        world_rng = np.random.default_rng([check_args.rollout_seed, 3, p])
        true = _true_rollouts(world, groups, tracks, num_rollouts, world_rng)
        generator = torch.Generator(device=model.device).manual_seed(check_args.rollout_seed * 1000 + p)
        rolled = simulate(model, prefix, ReplayTracks(torch.as_tensor(track_tokens[tracks])), horizon,
                          num_rollouts=num_rollouts, generator=generator)
        if not np.array_equal(rolled.tracks.cpu().numpy(), track_tokens[tracks]):
            raise RuntimeError("the world model's rollouts did not play the given tracks")
        predicted = {name: value.double().cpu().numpy() for name, value in rolled.predicted.items()}
        modelled = {
            "engagement": predicted["engagement"],
            "like": predicted["like_prob"],
            "valence": clipped_normal_mean(predicted["valence_mean"], np.sqrt(predicted["valence_var"])),
            "arousal": clipped_normal_mean(predicted["arousal_mean"], np.sqrt(predicted["arousal_var"])),
        }
        per_outcome = {}
        for o in ROLLOUT_OUTCOMES:
            # session-level average per rollout, then per prefix (rollouts of one prefix are not independent)
            world_avg = true[o].mean(axis=1).reshape(num_prefixes, num_rollouts).mean(axis=1)
            model_avg = modelled[o].mean(axis=1).reshape(num_prefixes, num_rollouts).mean(axis=1)
            diff = model_avg - world_avg
            se = float(diff.std(ddof=1) / math.sqrt(num_prefixes))
            mean = float(diff.mean())
            per_outcome[o] = {
                "true_world": float(world_avg.mean()),
                "world_model": float(model_avg.mean()),
                "difference": mean,
                "standard_error": se,
                "ci95": [mean - Z95 * se, mean + Z95 * se],
                "within_tolerance": bool(abs(mean) + Z95 * se <= check_args.tolerance),
            }
        results[policy] = per_outcome
    checks = {f"{policy}_{o}": results[policy][o]["within_tolerance"] for policy in results for o in ROLLOUT_OUTCOMES}
    return {
        "prefixes": num_prefixes,
        "num_rollouts": num_rollouts,
        "horizon": horizon,
        "tolerance": check_args.tolerance,
        "policies": results,
        "checks": checks,
        "passed": all(checks.values()),
    }


# ------------------------------------------------------------------------------------------------ the whole check


def evaluate_check(model, tokenizer, world, splits, test_truth, data_args, check_args,
                   baseline: Optional[FeatureOnly] = None) -> dict:
    """Both parts of the check for a given (trained or not) world model."""
    fidelity = fidelity_against_ceiling(model, tokenizer, world, splits, test_truth, data_args, check_args, baseline)
    rollouts = rollout_agreement(model, tokenizer, world, splits["test"], test_truth, data_args, check_args)
    return {"fidelity": fidelity, "rollouts": rollouts, "passed": fidelity["passed"] and rollouts["passed"]}


def ceiling_check(data_args, model_args, training_args, check_args: Optional[SyntheticCheckArguments] = None) -> dict:
    """Generate the world's log with its truth, split it by listener, train the world model and the feature-only
    baseline on the train listeners and run the check (module doc). Returns one dict (see `render_markdown`)."""
    check_args = check_args or SyntheticCheckArguments()
    start = time.perf_counter()
    world, log, truth = generate_world(data_args)
    splits, test_truth = split_with_truth(log, truth, data_args)
    model, tokenizer = train_world_model(splits, log, data_args, model_args, training_args)
    trained = time.perf_counter()
    baseline = FeatureOnly().fit(splits["train"])
    result = evaluate_check(model, tokenizer, world, splits, test_truth, data_args, check_args, baseline)
    result["setup"] = {
        "plays": log.num_plays,
        "listeners": {name: int(len(set(s.plays["user_id"]))) for name, s in splits.items()},
        "plays_per_split": {name: s.num_plays for name, s in splits.items()},
        "world": dataclasses.asdict(world.config) | {"seed": world.seed},
        "data": _jsonable(dataclasses.asdict(data_args)),
        "model": _jsonable(dataclasses.asdict(model_args)),
        "training": {k: training_args.to_dict()[k] for k in (
            "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "weight_decay",
            "warmup_steps", "lr_scheduler_type", "seed")},
        "check": dataclasses.asdict(check_args),
        "seconds": {"train": round(trained - start, 1), "total": round(time.perf_counter() - start, 1)},
        "torch_threads": torch.get_num_threads(),
    }
    return result


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def render_markdown(result: dict) -> str:
    """The check as Markdown: the ceiling table and the rollout table, each with its verdict."""
    fid, roll = result["fidelity"], result["rollouts"]
    f = fid["figures"]
    lines = ["## Synthetic check with known truth", ""]
    if "setup" in result:
        s = result["setup"]
        lines += [f"World: {s['plays']:,} plays, seed {s['world']['seed']}, {s['world']['num_users']:,} listeners x "
                  f"{s['world']['num_tracks']:,} tracks; listeners train/valid/test "
                  f"{s['listeners']['train']}/{s['listeners']['valid']}/{s['listeners']['test']}; "
                  f"{s['seconds']['total']:.0f} s ({s['seconds']['train']:.0f} s generating and training).", ""]
    lines += [f"Held-out listeners' plays after their first {fid['warmup_plays']} ({fid['scored_plays']:,} plays "
              "scored). R² (like: AUC); ratio = world model / ceiling.", "",
              "| outcome | ceiling (true model) | world model | feature-only | ratio | criterion |"
              + (" feature + history (reported) |" if "feature_history" in f else ""),
              "|---|---|---|---|---|---|" + ("---|" if "feature_history" in f else "")]
    names = {"valence": "valence R²", "arousal": "arousal R²", "engagement": "engagement R²", "like_auc": "like AUC"}
    for key, label in names.items():
        if key in CRITERION_OUTCOMES:
            verdict = ("pass" if fid["checks"][f"{key}_ratio"] and fid["checks"][f"{key}_beats_feature_only"]
                       else "FAIL")
        else:
            verdict = "(reported)"
        lines.append(f"| {label} | {f['ceiling'][key]:.3f} | {f['world_model'][key]:.3f} | "
                     f"{f['feature_only'][key]:.3f} | {fid['ratio'][key]:.2f} | {verdict} |"
                     + (f" {f['feature_history'][key]:.3f} |" if "feature_history" in f else ""))
    bounds = {"observable_bound": "true model, true parameters, the log's reports only (Kalman filter)",
              "world_model_information_bound": "the same, seeing only what this world model's inputs show "
                                               "(without session inputs: session starts only where a mode change "
                                               "or a missing pre-state reveals one; without past pre-states)"}
    if any(name in f for name in bounds):
        lines += ["", "What the log lets any predictor reach (diagnostic; the criterion stays the ceiling):", "",
                  "| bound | valence R² (ratio) | arousal R² (ratio) |", "|---|---|---|"]
        for name, label in bounds.items():
            if name in f:
                r = fid["ratios_of_ceiling"][name]
                lines.append(f"| {label} | {f[name]['valence']:.3f} ({r['valence']:.2f}) | "
                             f"{f[name]['arousal']:.3f} ({r['arousal']:.2f}) |")
    lines += ["", f"Rollouts: {roll['prefixes']} held-out prefixes x {roll['num_rollouts']} track sequences x "
              f"{roll['horizon']} plays, the same tracks in both worlds; session-level averages, difference = world "
              f"model - true world with its 95% CI; tolerance: the CI within +-{roll['tolerance']}.", "",
              "| policy | outcome | true world | world model | difference (95% CI) | within |",
              "|---|---|---|---|---|---|"]
    for policy, per_outcome in roll["policies"].items():
        for o, r in per_outcome.items():
            lines.append(f"| {policy} | {o} | {r['true_world']:.3f} | {r['world_model']:.3f} | "
                         f"{r['difference']:+.3f} ({r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}) | "
                         f"{'yes' if r['within_tolerance'] else 'NO'} |")
    lines += ["", f"**{'PASSED' if result['passed'] else 'FAILED'}** (fidelity "
              f"{'passed' if fid['passed'] else 'failed'}, rollouts {'passed' if roll['passed'] else 'failed'})", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # kept for old commands; the command is `amrs synthetic-check`
    from amrs_hf.scripts.synthetic_check import main

    sys.exit(main())
