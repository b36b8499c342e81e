"""Evaluating recommender policies offline: world-model rollouts from held-out listeners' histories.

Every policy starts from the same prefixes (a held-out listener's plays up to a random cut, `random_cuts`) and plays
`horizon` tracks, `num_rollouts` times per prefix, under the world model, with the same random seed (common random
numbers, so differences between policies are not sampling noise). Per policy:

- **predicted** engagement, like probability ("rating"), valence, arousal (the world model's predicted means per
  step) and the utility (`rollout_value`), each averaged over steps and rollouts per prefix, then over prefixes: the
  mean and a 95% interval (mean +- 1.96 standard errors across prefixes; several prefixes may share a listener, so
  the interval is somewhat narrow when listeners are few);
- the **diversity profile** of all recommended tracks (coverage, entropy, Gini, intra-list diversity, repeat rate);
- **kl_to_bc**: the mean over rollout steps of KL(policy || cloned policy) between their next-track distributions
  in the same state (a deterministic policy contributes -log p_bc(its track)); null for a policy without a
  distribution;
- with the synthetic world's truth, **oracle**: the same recommendations answered by the true world, from the exact
  latent state each prefix ended in (`SyntheticWorld.expected`: expected engagement and like probability, the
  expected post-listening report), valued by the same utility; and the paired gap predicted - true.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from amrs_hf.data.schema import ListeningLog
from amrs_hf.data.tokenizer import TRACK_PREFIX, track_token_ids
from amrs_hf.models.world_model import WorldModelPredictions
from amrs_hf.simulation.language_policy import LanguageModelPolicy
from amrs_hf.simulation.policies import PopularPolicy, UtilityGreedyPolicy
from amrs_hf.simulation.prefixes import prefix_batch, random_cuts, session_track_batch
from amrs_hf.simulation.rollout import RandomPolicy
from amrs_hf.simulation.rollout import simulate
from amrs_hf.simulation.scoring import rollout_scores

from .diversity import diversity_profile, track_frequency_curve
from .synthetic_check import clipped_normal_mean, true_states

Z95 = 1.959963984540054
OUTCOMES = ("engagement", "rating", "valence", "arousal", "utility")
_PREDICTED = {"engagement": "engagement", "rating": "like_prob", "valence": "valence_mean", "arousal": "arousal_mean"}


@dataclasses.dataclass
class PolicyEvaluationArguments:
    """Rollouts every policy is evaluated by (fields are also the `amrs evaluate` options)."""

    horizon: int = dataclasses.field(default=10, metadata={"help": "Tracks each policy recommends per rollout."})
    num_rollouts: int = dataclasses.field(default=4, metadata={"help": "Rollouts per prefix."})
    num_prefixes: int = dataclasses.field(default=200, metadata={"help": "Held-out prefixes (cuts) rolled out."})
    min_history: int = dataclasses.field(default=1, metadata={"help": "Plays a prefix holds at least."})
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the prefixes and of every policy's rollouts."})

    def __post_init__(self):
        for name in ("horizon", "num_rollouts", "num_prefixes", "min_history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def mean_interval(per_prefix: np.ndarray) -> dict:
    """Mean and 95% normal interval of per-prefix values."""
    values = np.asarray(per_prefix, dtype=np.float64)
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"mean": mean, "ci95": [mean - Z95 * se, mean + Z95 * se], "n": int(len(values))}


class _KLRecorder:
    """Wraps a policy; at each step records KL(policy || reference) between their next-track distributions."""

    def __init__(self, policy, reference, candidate_ids: torch.Tensor):
        self.policy, self.reference, self.candidate_ids = policy, reference, candidate_ids
        self.kl: list[torch.Tensor] = []
        deterministic = isinstance(policy, UtilityGreedyPolicy) or (isinstance(policy, PopularPolicy)
                                                                     and not policy.sample)
        deterministic |= isinstance(policy, LanguageModelPolicy) and policy.greedy  # plays the argmax, not samples
        self.kind = None if reference is None else (
            "deterministic" if deterministic
            else "distribution" if hasattr(policy, "distribution") or isinstance(policy, RandomPolicy) else None)

    def __call__(self, ctx):
        action = self.policy(ctx)
        if self.kind is None:
            return action
        q = _aligned(self.reference, self.reference.distribution(ctx), self.candidate_ids).clamp(min=1e-30)
        if self.kind == "deterministic":  # KL(one-hot || q) = -log q(action)
            column = torch.searchsorted(self.candidate_ids.to(action.device), action)
            kl = -q.log().gather(1, column[:, None].to(q.device))[:, 0]
        else:
            if isinstance(self.policy, RandomPolicy):
                p = _aligned(self.policy, torch.full((len(action), len(self.policy.candidate_ids)),
                                                     1.0 / len(self.policy.candidate_ids)), self.candidate_ids)
            else:
                p = _aligned(self.policy, self.policy.distribution(ctx), self.candidate_ids)
            p = p.to(q.device)
            kl = torch.where(p > 0, p * (p.clamp(min=1e-30).log() - q.log()), 0.0).sum(-1)
        self.kl.append(kl.float().cpu())
        return action

    def mean(self) -> float | None:
        return float(torch.stack(self.kl).mean()) if self.kl else None


def _aligned(policy, probs: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """A distribution over `policy.candidate_ids` as one over `candidate_ids` (all track tokens)."""
    own = torch.as_tensor(policy.candidate_ids).to(probs.device)
    full = candidate_ids.to(probs.device)
    if own.shape == full.shape and torch.equal(own, full):
        return probs
    position = torch.full((int(full.max()) + 1,), -1, dtype=torch.long, device=probs.device)
    position[full] = torch.arange(len(full), device=probs.device)
    out = probs.new_zeros(probs.shape[0], len(full))
    return out.index_copy(1, position[own], probs)


def _step_ids(prefix: dict, num_rollouts: int) -> dict:
    lengths = prefix["attention_mask"].bool().sum(1)
    last, rows = (lengths - 1).clamp(min=0), torch.arange(len(lengths))
    return {name: prefix[name][rows, last].repeat_interleave(num_rollouts) for name in ("mode_ids", "cohort_ids")}


def _per_prefix(values: torch.Tensor | np.ndarray, num_prefixes: int) -> np.ndarray:
    """(R, horizon) or (R,) per rollout -> (num_prefixes,) averages (rollouts of a prefix are adjacent)."""
    values = np.asarray(values.detach().cpu().double() if torch.is_tensor(values) else values, dtype=np.float64)
    if values.ndim == 2:
        values = values.mean(axis=1)
    return values.reshape(num_prefixes, -1).mean(axis=1)


@torch.no_grad()
def evaluate_policies(world_model, tokenizer, utility, policies: dict, log: ListeningLog,
                      args: PolicyEvaluationArguments | None = None, max_history: int = 64,
                      reference: str | None = "bc", world=None, truth=None, show_progress: bool = True) -> dict:
    """Roll every policy of `policies` (name -> callable on a `StepContext`) out from the same held-out prefixes of
    `log` under `world_model` and measure it (module doc). `reference`: the name of the cloned policy in `policies`
    the KL is taken to. `world`, `truth`: the `SyntheticWorld` and the truth frame aligned with `log.plays` (from
    `generate(..., return_truth=True)`), to add the true world's answers. Returns {"setup": ..., "policies": {name:
    {"predicted", "diversity", "kl_to_bc", "oracle"?, ...}}} plus per-policy recommended-track counts under
    "track_counts" for plots."""
    args = args or PolicyEvaluationArguments()
    config = world_model.config
    rng = np.random.default_rng(args.seed)
    cuts = random_cuts(log, args.num_prefixes, args.min_history, rng)
    if max_history <= args.horizon:
        raise ValueError(f"max_history ({max_history}) must exceed the horizon ({args.horizon})")
    prefix = prefix_batch(config, tokenizer, log, cuts, max_history - args.horizon)
    session = session_track_batch(tokenizer, log, cuts, max_history)
    candidate_ids = torch.as_tensor(track_token_ids(tokenizer))
    features = world_model.track_features.detach().double().cpu().numpy()
    num_prefixes, step_ids = len(cuts), _step_ids(prefix, args.num_rollouts)
    groups = true_states(world, log, truth, cuts) if world is not None else None
    reference_policy = policies.get(reference) if reference else None
    out, counts = {}, {}
    for policy in policies.values():
        if hasattr(policy, "set_session_prefix"):  # a language-model policy reads the session so far
            policy.set_session_prefix(*session)
    for name, policy in tqdm(policies.items(), desc="evaluating policies", disable=not show_progress, unit="policy"):
        recorder = _KLRecorder(policy, None if name == reference else reference_policy, candidate_ids)
        generator = torch.Generator(device=world_model.device).manual_seed(args.seed)
        result = simulate(world_model, prefix, recorder, args.horizon, num_rollouts=args.num_rollouts,
                          generator=generator)
        scores = rollout_scores(utility, result, config.modes, config.cohorts,
                                track_features=world_model.track_features)
        values = scores.unconstrained.mean(dim=1)  # safety limits are reported, not folded into the mean
        predicted = {o: mean_interval(_per_prefix(result.predicted[key], num_prefixes)) for o, key in _PREDICTED.items()}
        predicted["utility"] = mean_interval(_per_prefix(values, num_prefixes))
        tracks = result.tracks.cpu().numpy()
        entry = {
            "predicted": predicted,
            "diversity": diversity_profile(tracks, candidate_ids.numpy(), features),
            "kl_to_bc": recorder.mean() if name != reference else 0.0,
            "safety_violation_rate": float((~scores.feasible).double().mean()),
        }
        if groups is not None:
            true = true_outcomes(world, groups, _world_tracks(world, tokenizer, tracks), args.num_rollouts,
                                 np.random.default_rng([args.seed, 7]))
            true_values = oracle_utility(utility, true, step_ids, config)
            entry["oracle"] = {o: mean_interval(_per_prefix(true[o], num_prefixes)) for o in _PREDICTED}
            entry["oracle"]["utility"] = mean_interval(_per_prefix(true_values, num_prefixes))
            entry["_oracle_utility_per_prefix"] = _per_prefix(true_values, num_prefixes)
            entry["gap"] = {o: entry["predicted"][o]["mean"] - entry["oracle"][o]["mean"] for o in OUTCOMES}
        entry["_utility_per_prefix"] = _per_prefix(values, num_prefixes)
        counts[name] = track_frequency_curve(tracks, candidate_ids.numpy())
        out[name] = entry
    result = {
        "setup": {**dataclasses.asdict(args), "prefixes": num_prefixes,
                  "listeners": int(len({log.plays["user_id"][int(c)] for c in cuts})), "reference": reference},
        "policies": out,
        "track_counts": counts,
    }
    _paired_gains(result, reference)
    return result


def _paired_gains(result: dict, reference: str | None) -> None:
    """Per policy, the utility gain over the reference paired by prefix (mean and 95% interval), predicted and true;
    the per-prefix arrays are dropped afterwards."""
    policies = result["policies"]
    base = policies.get(reference) if reference else None
    for entry in policies.values():
        for key, label in (("_utility_per_prefix", "utility_gain_vs_bc"),
                           ("_oracle_utility_per_prefix", "oracle_utility_gain_vs_bc")):
            if base is not None and key in entry and key in base:
                entry[label] = mean_interval(entry[key] - base[key])
    for entry in policies.values():
        entry.pop("_utility_per_prefix", None)
        entry.pop("_oracle_utility_per_prefix", None)


def _world_tracks(world, tokenizer, token_ids: np.ndarray) -> np.ndarray:
    """Track token ids -> the world's track indices."""
    tokens = np.asarray(tokenizer.convert_ids_to_tokens(token_ids.reshape(-1).tolist()), dtype=object)
    index = [world.track_index[t[len(TRACK_PREFIX):]] for t in tokens]
    return np.asarray(index, dtype=np.int64).reshape(token_ids.shape)


def true_outcomes(world, groups, tracks: np.ndarray, num_rollouts: int, rng) -> dict:
    """The true world's expected recorded outcomes (R, horizon) of playing `tracks` (R, horizon; world indices) from
    each prefix's exact latent state (`true_states` groups), and the true mood before each step."""
    c = world.config
    names = (*_PREDICTED, "pre_valence", "pre_arousal")
    out = {name: np.empty(tracks.shape) for name in names}
    for index, state in groups:
        rows = (index[:, None] * num_rollouts + np.arange(num_rollouts)).reshape(-1)
        state = state.select(np.repeat(np.arange(len(index)), num_rollouts))
        for t in range(tracks.shape[1]):
            expected = world.expected(state, tracks[rows, t])
            out["pre_valence"][rows, t], out["pre_arousal"][rows, t] = state.valence, state.arousal
            _, state = world.step(state, tracks[rows, t], rng)
            out["engagement"][rows, t] = expected["expected_engagement"]
            out["rating"][rows, t] = expected["like_probability"]
            out["valence"][rows, t] = clipped_normal_mean(state.valence, c.valence_report_noise)
            out["arousal"][rows, t] = clipped_normal_mean(state.arousal, c.arousal_report_noise)
    return out


def oracle_utility(utility, true: dict, step_ids: dict, config) -> np.ndarray:
    """The utility (R,) of the true world's answers, averaged over steps like `rollout_value` (no disagreement: the
    truth is known)."""
    shape = true["engagement"].shape
    tensor = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in true.items()}
    predictions = WorldModelPredictions(
        engagement=tensor["engagement"], like_prob=tensor["rating"], valence_mean=tensor["valence"],
        arousal_mean=tensor["arousal"], valence_var=torch.zeros(shape), arousal_var=torch.zeros(shape))
    known = torch.ones(shape, dtype=torch.bool)
    score = utility.score(predictions, step_ids["mode_ids"].cpu(), step_ids["cohort_ids"].cpu(), modes=config.modes,
                          cohorts=config.cohorts, pre_valence=tensor["pre_valence"], pre_valence_mask=known,
                          pre_arousal=tensor["pre_arousal"], pre_arousal_mask=known)
    return score.unconstrained.double().mean(dim=1).numpy()


def load_policy(path, tokenizer, option: str = "policy path"):
    """The causal-LM policy saved in `path` (eval mode), refused unless it was built on `tokenizer`'s vocabulary (the
    world model's): a policy cloned on another catalogue would have its track ids read as the wrong tracks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from amrs_hf.simulation.ensemble import check_model_folder

    check_model_folder(path, "amrs_policy", option)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    own, theirs = AutoTokenizer.from_pretrained(path).get_vocab(), tokenizer.get_vocab()
    if own != theirs:
        only = sorted(set(own) ^ set(theirs))[:3]
        moved = [t for t in set(own) & set(theirs) if own[t] != theirs[t]][:3]
        raise ValueError(f"{option} {str(path)!r}: its tokenizer ({len(own)} tokens) is not the world model's "
                         f"({len(theirs)}): {'tokens in only one: ' + str(only) if only else 'ids differ: ' + str(moved)}. "
                         "Train the policy and the world model on the same log's catalogue (the pipeline does).")
    return model


def prompt_tracks(max_length: int) -> int:
    """The history tracks a policy cloned on `max_length`-token windows learned to read: <bos>, mode and cohort take
    three tokens and the window's last token predicts nothing."""
    return max(1, max_length - 4)


def cloned_prompt_tracks(policy_path) -> int | None:
    """`prompt_tracks` of the cloning window in the `train_config.json` that `amrs train-policy` and `amrs pipeline`
    write beside a cloned policy, or None when the folder does not say."""
    import json
    import os

    from amrs_hf.models.policy.dpo import TRAIN_CONFIG_FILE

    path = os.path.join(str(policy_path), TRAIN_CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        max_length = json.load(f).get("data", {}).get("max_length")
    return prompt_tracks(max_length) if isinstance(max_length, int) else None


def standard_policies(world_model, tokenizer, utility, bc_model, dpo_model, train_log: ListeningLog,
                      max_prompt_tracks: int | None = None) -> dict:
    """The five policies the report compares: random, popular (the training log's play counts), bc and dpo (the
    language-model policies; dpo left out when `dpo_model` is None), greedy (the highest predicted utility at every
    step, no anchor to the logs). `max_prompt_tracks`: the tracks the language-model policies read (default: what
    fits their positions); give what behaviour cloning trained on (`max_length - 4`: <bos>, mode, cohort, and the
    window's last token predicts nothing), else long sessions reach positions the cloned policy never learned."""
    config = world_model.config
    candidates = track_token_ids(tokenizer)
    kwargs = {"max_history": max_prompt_tracks}
    return {
        "random": RandomPolicy(candidates),
        "popular": PopularPolicy.from_log(train_log, tokenizer),
        "bc": LanguageModelPolicy(bc_model, tokenizer, config.modes, config.cohorts, **kwargs),
        **({"dpo": LanguageModelPolicy(dpo_model, tokenizer, config.modes, config.cohorts, **kwargs)}
           if dpo_model else {}),
        "greedy": UtilityGreedyPolicy(candidates, utility),
    }


__all__ = [
    "OUTCOMES",
    "cloned_prompt_tracks",
    "prompt_tracks",
    "load_policy",
    "standard_policies",
    "PolicyEvaluationArguments",
    "evaluate_policies",
    "mean_interval",
    "oracle_utility",
    "true_outcomes",
]
