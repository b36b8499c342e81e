"""Offline policy evaluation (`amrs_hf.evaluation.policies`): the interval, the KL to the cloned policy recomputed by
hand in the same states, the true world's answers against `SyntheticWorld.expected`, and the result's contract."""

import math

import numpy as np
import pytest
import torch

from amrs_hf.data.synthetic import SyntheticWorld, SyntheticWorldConfig
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.evaluation.policies import (
    PolicyEvaluationArguments,
    evaluate_policies,
    mean_interval,
    oracle_utility,
    true_outcomes,
)
from amrs_hf.evaluation.synthetic_check import clipped_normal_mean, true_states
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM
from amrs_hf.models.world_model import AmrsWorldModel
from amrs_hf.models.world_model.processing_world_model import set_catalogue, world_model_config
from amrs_hf.objectives import Utility
from amrs_hf.simulation import PopularPolicy, RandomPolicy, UtilityGreedyPolicy, simulate
from amrs_hf.simulation.language_policy import LanguageModelPolicy
from amrs_hf.simulation.prefixes import prefix_batch, random_cuts, session_track_batch

ARGS = PolicyEvaluationArguments(horizon=3, num_rollouts=2, num_prefixes=6, min_history=2, seed=0)
MAX_HISTORY = 16
PREDICTED_KEYS = {"engagement", "rating", "valence", "arousal", "utility"}


@pytest.fixture(scope="module")
def setup():
    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=30, num_users=10), seed=0)
    log, truth = world.generate(300, seed=0, return_truth=True)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    torch.manual_seed(0)
    config = world_model_config(log, tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    model = AmrsWorldModel(config)
    set_catalogue(model, log.catalogue_frame(), tokenizer)
    torch.manual_seed(1)
    bc = AmrsPolicyForCausalLM(AmrsPolicyConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, dropout=0.0, initializer_range=0.2, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    return world, log, truth, tokenizer, model.eval(), bc


def make_policies(setup, utility):
    _, log, _, tokenizer, model, bc = setup
    candidates = track_token_ids(tokenizer)
    lm = lambda: LanguageModelPolicy(bc, tokenizer, model.config.modes, model.config.cohorts)  # noqa: E731
    return {"random": RandomPolicy(candidates), "popular": PopularPolicy.from_log(log, tokenizer), "bc": lm(),
            "bc_again": lm(), "bc_greedy": LanguageModelPolicy(bc, tokenizer, model.config.modes, model.config.cohorts,
                                                              greedy=True),
            "greedy": UtilityGreedyPolicy(candidates, utility),
            "popular_sampled": PopularPolicy.from_log(log, tokenizer, sample=True)}


@pytest.fixture(scope="module")
def evaluation(setup):
    world, log, truth, tokenizer, model, _ = setup
    utility = Utility.load("mode_aware")
    return evaluate_policies(model, tokenizer, utility, make_policies(setup, utility), log, ARGS,
                             max_history=MAX_HISTORY, world=world, truth=truth, show_progress=False)


def test_mean_interval_by_hand():
    out = mean_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 1.959963984540054 * math.sqrt(5 / 3) / 2  # z * sample std / sqrt(n)
    assert out["mean"] == 2.5 and out["n"] == 4
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-12)
    assert out["ci95"] == pytest.approx([1.2348487, 3.7651513], abs=1e-6)
    same = mean_interval([0.25, 0.25, 0.25])
    assert same == {"mean": 0.25, "ci95": [0.25, 0.25], "n": 3}
    one = mean_interval([7.0])
    assert one["mean"] == 7.0 and one["n"] == 1 and all(math.isnan(v) for v in one["ci95"])


def test_result_contract(evaluation):
    assert set(evaluation) == {"setup", "policies", "track_counts"}
    assert evaluation["setup"]["prefixes"] == 6 and evaluation["setup"]["reference"] == "bc"
    assert evaluation["setup"]["horizon"] == 3
    policies = evaluation["policies"]
    assert list(policies) == ["random", "popular", "bc", "bc_again", "bc_greedy", "greedy", "popular_sampled"]
    for name, entry in policies.items():
        for section in ("predicted", "oracle"):
            assert set(entry[section]) == PREDICTED_KEYS, (name, section)
            for stats in entry[section].values():
                assert set(stats) == {"mean", "ci95", "n"} and stats["n"] == 6
                low, high = stats["ci95"]
                assert low <= stats["mean"] <= high
        assert set(entry["diversity"]) == {"coverage", "entropy", "gini", "ild", "repeat_rate"}
        assert all(math.isfinite(v) for v in entry["diversity"].values())
        assert set(entry["gap"]) == PREDICTED_KEYS
        for key in PREDICTED_KEYS:
            assert entry["gap"][key] == pytest.approx(entry["predicted"][key]["mean"] - entry["oracle"][key]["mean"])
        assert "kl_to_bc" in entry and "utility_gain_vs_bc" in entry and "oracle_utility_gain_vs_bc" in entry
        assert not any(key.startswith("_") for key in entry)  # the per-prefix arrays are dropped
    for stats in (policies["bc"]["utility_gain_vs_bc"], policies["bc"]["oracle_utility_gain_vs_bc"]):
        assert stats["mean"] == 0.0
    # a policy that only plays the top track of the chart covers one track per step position at most
    assert policies["popular"]["diversity"]["coverage"] <= 3 / 30 + 1e-12
    assert policies["popular"]["diversity"]["repeat_rate"] == 0.0
    assert set(evaluation["track_counts"]) == set(policies)


def test_same_seed_same_results(setup, evaluation):
    world, log, truth, tokenizer, model, _ = setup
    utility = Utility.load("mode_aware")
    again = evaluate_policies(model, tokenizer, utility, make_policies(setup, utility), log, ARGS,
                              max_history=MAX_HISTORY, world=world, truth=truth, show_progress=False)
    assert again["policies"] == evaluation["policies"]
    for name, counts in evaluation["track_counts"].items():
        np.testing.assert_array_equal(again["track_counts"][name], counts)


class Capture:
    """Wraps a policy and keeps each step's context and action."""

    def __init__(self, policy):
        self.policy, self.steps = policy, []

    def __call__(self, ctx):
        action = self.policy(ctx)
        self.steps.append((ctx, action))
        return action


def replay_setup(setup, policy):
    """The rollouts `evaluate_policies` runs for `policy`, rebuilt here; returns the captured steps and the bc policy
    reading the same session prefixes."""
    _, log, _, tokenizer, model, bc = setup
    cuts = random_cuts(log, ARGS.num_prefixes, ARGS.min_history, np.random.default_rng(ARGS.seed))
    prefix = prefix_batch(model.config, tokenizer, log, cuts, MAX_HISTORY - ARGS.horizon)
    reference = LanguageModelPolicy(bc, tokenizer, model.config.modes, model.config.cohorts)
    session = session_track_batch(tokenizer, log, cuts, MAX_HISTORY)
    for lm in (reference, policy):
        if hasattr(lm, "set_session_prefix"):  # as evaluate_policies does
            lm.set_session_prefix(*session)
    capture = Capture(policy)
    simulate(model, prefix, capture, ARGS.horizon, num_rollouts=ARGS.num_rollouts,
             generator=torch.Generator().manual_seed(ARGS.seed))
    return capture.steps, reference


def test_kl_of_a_uniform_policy_by_hand(setup, evaluation):
    tokenizer = setup[3]
    candidates = track_token_ids(tokenizer)
    steps, reference = replay_setup(setup, RandomPolicy(candidates))
    u = 1.0 / len(candidates)
    per_step = []
    for ctx, _ in steps:
        q = reference.distribution(ctx).double()
        per_step.append((u * (math.log(u) - q.log())).sum(1))  # sum_j u log(u / q_j), per rollout
    # one step by hand on one rollout, in plain Python
    q0 = reference.distribution(steps[0][0])[0].tolist()
    assert float(per_step[0][0]) == pytest.approx(sum(u * math.log(u / qj) for qj in q0), rel=1e-9)
    expected = float(torch.stack(per_step).mean())
    assert expected > 0.01  # a random policy is far from a peaked cloned one: the check is not 0 == 0
    assert evaluation["policies"]["random"]["kl_to_bc"] == pytest.approx(expected, rel=1e-5)


def test_kl_of_deterministic_policies_is_minus_log_q_of_their_action(setup, evaluation):
    _, log, _, tokenizer, _, _ = setup
    utility = Utility.load("mode_aware")
    for name, policy in (("greedy", UtilityGreedyPolicy(track_token_ids(tokenizer), utility)),
                         ("popular", PopularPolicy.from_log(log, tokenizer))):
        steps, reference = replay_setup(setup, policy)
        candidates = torch.tensor(track_token_ids(tokenizer))
        values = []
        for ctx, action in steps:
            q = reference.distribution(ctx)
            column = (candidates[None, :] == action[:, None]).float().argmax(1)
            values.append(-q.gather(1, column[:, None])[:, 0].log())
        expected = float(torch.stack(values).mean())
        assert evaluation["policies"][name]["kl_to_bc"] == pytest.approx(expected, rel=1e-5), name


def test_kl_of_a_greedy_language_model_policy_is_minus_log_of_the_references_top_probability(setup, evaluation):
    """The cloned policy played greedily is deterministic: KL(one-hot at argmax q || q) = -log max q, not
    KL(q || q) = 0."""
    _, _, _, tokenizer, model, bc = setup
    steps, reference = replay_setup(setup, LanguageModelPolicy(bc, tokenizer, model.config.modes,
                                                               model.config.cohorts, greedy=True))
    values = []
    for ctx, action in steps:
        q = reference.distribution(ctx)
        assert action.tolist() == [track_token_ids(tokenizer)[j] for j in q.argmax(1).tolist()]
        values.append(-q.max(1).values.log())
    expected = float(torch.stack(values).mean())
    assert expected > 0.1
    assert evaluation["policies"]["bc_greedy"]["kl_to_bc"] == pytest.approx(expected, rel=1e-5)


def test_kl_to_itself_is_zero_and_none_without_a_distribution(evaluation):
    policies = evaluation["policies"]
    assert policies["bc"]["kl_to_bc"] == 0.0
    assert policies["bc_again"]["kl_to_bc"] == pytest.approx(0.0, abs=1e-6)
    assert policies["popular_sampled"]["kl_to_bc"] is None
    # the same policy plays the same tracks: bc and its copy agree on everything
    assert policies["bc_again"]["predicted"] == policies["bc"]["predicted"]


def test_true_outcomes_and_oracle_utility_by_hand():
    """With no enjoyment or mood noise, the true mood after a track is the world's expected mood, so every true
    outcome of one step is `SyntheticWorld.expected` in the cut's exact state."""
    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=30, num_users=10, enjoyment_noise=0.0, mood_noise=0.0),
                           seed=0)
    log, truth = world.generate(300, seed=0, return_truth=True)
    cuts = random_cuts(log, 5, 2, np.random.default_rng(0))
    groups = true_states(world, log, truth, cuts)
    num_rollouts = 2
    tracks = np.random.default_rng(1).integers(0, 30, (len(cuts) * num_rollouts, 2))
    true = true_outcomes(world, groups, tracks, num_rollouts, np.random.default_rng(2))
    states = {}
    for index, state in groups:
        for j, k in enumerate(index):
            states[int(k)] = state.select([j])
    assert sorted(states) == list(range(len(cuts)))
    c = world.config
    for k, cut in enumerate(cuts):
        # the state a prefix ends in is the true mood after its cut play
        assert states[k].valence[0] == truth["true_post_valence"].iat[cut]
        for r in range(num_rollouts):
            row = k * num_rollouts + r
            expected = world.expected(states[k], tracks[row, :1])
            assert true["engagement"][row, 0] == pytest.approx(expected["expected_engagement"][0], abs=1e-12)
            assert true["rating"][row, 0] == pytest.approx(expected["like_probability"][0], abs=1e-12)
            assert true["valence"][row, 0] == pytest.approx(
                clipped_normal_mean(expected["expected_valence"], c.valence_report_noise)[0], abs=1e-12)
            assert true["arousal"][row, 0] == pytest.approx(
                clipped_normal_mean(expected["expected_arousal"], c.arousal_report_noise)[0], abs=1e-12)
            assert true["pre_valence"][row, 0] == states[k].valence[0]
            assert true["pre_arousal"][row, 0] == states[k].arousal[0]
    # oracle utility: "paper" is 0.5 valence + 0.5 arousal, averaged over the steps
    config = world_model_config(log, build_track_tokenizer(log.catalogue["track_id"]))
    step_ids = {"mode_ids": torch.ones(len(tracks), dtype=torch.long), "cohort_ids": torch.ones(len(tracks),
                                                                                              dtype=torch.long)}
    value = oracle_utility(Utility.load("paper"), true, step_ids, config)
    np.testing.assert_allclose(value, (0.5 * true["valence"] + 0.5 * true["arousal"]).mean(1), rtol=1e-6)
    likes = oracle_utility(Utility.from_dict({"like": 1.0}), true, step_ids, config)
    np.testing.assert_allclose(likes, true["rating"].mean(1), rtol=1e-6)


def test_max_history_must_exceed_the_horizon(setup):
    _, log, _, tokenizer, model, _ = setup
    with pytest.raises(ValueError, match="must exceed the horizon"):
        evaluate_policies(model, tokenizer, Utility.load("paper"), {}, log, ARGS, max_history=3, show_progress=False)


def test_cloned_prompt_tracks_reads_the_cloning_window(tmp_path):
    """`amrs evaluate` lets bc and dpo read what cloning trained on, as the pipeline does (else its figures differ)."""
    import json

    from amrs_hf.evaluation.policies import cloned_prompt_tracks

    assert cloned_prompt_tracks(tmp_path) is None  # a folder that does not say
    (tmp_path / "train_config.json").write_text(json.dumps({"dpo": {"beta": 0.1}}))
    assert cloned_prompt_tracks(tmp_path) is None
    (tmp_path / "train_config.json").write_text(json.dumps({"data": {"max_length": 32}}))
    assert cloned_prompt_tracks(tmp_path) == 28  # <bos>, mode, cohort, and the last token predicts nothing
