"""The synthetic check with known truth (amrs_hf.evaluation.synthetic_check, `amrs synthetic-check`): its pieces, its verdicts, and the check
itself on a small world."""

import json
import pathlib

import numpy as np
import pytest
import torch

from amrs_hf.cli import main as amrs
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.evaluation.baselines import FeatureOnly
from amrs_hf.evaluation.synthetic_check import (
    SyntheticCheckArguments,
    ceiling_check,
    ceiling_predictions,
    choose_prefixes,
    clipped_normal_mean,
    evaluate_check,
    generate_world,
    history_rank,
    observable_bound,
    render_markdown,
    score_against_ceiling,
    split_with_truth,
    true_states,
)
from amrs_hf.models.world_model import AmrsWorldModel
from amrs_hf.models.world_model.processing_world_model import set_catalogue, world_model_config
from amrs_hf.models.world_model.training_world_model import (
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
)
from amrs_hf.scripts.synthetic_check import make_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "synthetic" / "world_model" / "config_ceiling.yaml"
# A small world: 60 listeners, 100 tracks, 4,000 plays; 30% of the listeners held out.
SMALL_WORLD = {"num_plays": 4000, "seed": 0, "num_users": 60, "num_tracks": 100}
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def small_data_args(**options) -> DataArguments:
    return DataArguments(data_options={**SMALL_WORLD, **options}, split_fractions=[0.6, 0.1, 0.3], max_history=32)


def training_args(tmp_path, **overrides) -> WorldModelTrainingArguments:
    args = dict(output_dir=str(tmp_path / "model"), report_to="none", disable_tqdm=True, eval_strategy="no",
                save_strategy="no", load_best_model_at_end=False, per_device_train_batch_size=8,
                learning_rate=5e-3, num_train_epochs=30, logging_steps=1000, use_cpu=True, seed=0)
    return WorldModelTrainingArguments(**{**args, **overrides})


@pytest.fixture(scope="module")
def small():
    data_args = small_data_args()
    world, log, truth = generate_world(data_args)
    splits, test_truth = split_with_truth(log, truth, data_args)
    return data_args, world, log, splits, test_truth


def untrained_model(log, splits, data_args, seed=0):
    torch.manual_seed(seed)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    config = world_model_config(splits["train"], tokenizer, max_position_embeddings=data_args.max_history + 1,
                                **TINY_MODEL)
    model = AmrsWorldModel(config).eval()
    set_catalogue(model, log.catalogue_frame(), tokenizer)
    return model, tokenizer


# ---- the pieces ----
def test_test_truth_is_aligned_with_the_test_plays(small):
    data_args, world, log, splits, test_truth = small
    test = splits["test"].plays_frame()
    assert len(test_truth) == len(test)
    assert list(world.user_ids[test_truth["user_index"]]) == list(test["user_id"])
    assert list(world.track_ids[test_truth["track_index"]]) == list(test["track_id"])
    train_users, test_users = set(splits["train"].plays["user_id"]), set(test["user_id"])
    assert not train_users & test_users


def test_history_rank_is_each_listeners_time_order(small):
    *_, splits, _ = small
    frame = splits["test"].plays_frame()
    frame["rank"] = history_rank(splits["test"])
    for _, plays in frame.groupby("user_id"):
        ordered = plays.sort_values("rank")
        assert list(ordered["rank"]) == list(range(len(plays)))
        assert ordered["timestamp"].is_monotonic_increasing


def test_true_states_reproduce_the_logged_next_play(small):
    """The rollouts start the true world from its exact state after a prefix: from that state, the next logged track
    has exactly the noise-free expectations the log's truth recorded for it."""
    data_args, world, log, splits, test_truth = small
    test = splits["test"]
    frame = test.plays_frame()
    rng = np.random.default_rng(0)
    not_last = np.flatnonzero((frame["session_id"].to_numpy()[:-1] == frame["session_id"].to_numpy()[1:]))
    cuts = rng.choice(not_last, 40, replace=False)  # rows are in (user, session, position) order: next = row + 1
    for index, state in true_states(world, test, test_truth, cuts):
        following = cuts[index] + 1
        expected = world.expected(state, test_truth["track_index"].to_numpy()[following])
        for name in ("expected_valence", "expected_arousal", "like_probability", "expected_engagement", "fatigue"):
            np.testing.assert_allclose(expected[name], test_truth[name].to_numpy()[following], rtol=0, atol=1e-9)


def test_clipped_normal_mean():
    rng = np.random.default_rng(0)
    for mean, std in ((0.5, 0.1), (0.05, 0.12), (0.97, 0.08), (-0.2, 0.3), (0.3, 1e-9)):
        draws = np.clip(mean + std * rng.standard_normal(2_000_000), 0.0, 1.0)
        assert clipped_normal_mean(mean, std) == pytest.approx(draws.mean(), abs=3e-4)


def test_prefixes_hold_the_warmup_plays(small):
    data_args, world, log, splits, test_truth = small
    args = SyntheticCheckArguments(num_prefixes=10)
    cuts = choose_prefixes(splits["test"], args, np.random.default_rng(0))
    users = np.asarray(splits["test"].plays["user_id"], dtype=object)[cuts]
    assert len(cuts) == 10 and len(set(users)) == 10
    assert (history_rank(splits["test"])[cuts] >= args.warmup_plays - 1).all()


# ---- the verdicts ----
def test_the_criterion_passes_for_the_truth_and_fails_for_the_baseline(small):
    """The criterion can be met (by the true model itself) and can fail (by a history-free model)."""
    data_args, world, log, splits, test_truth = small
    baseline = FeatureOnly().fit(splits["train"]).predict(splits["test"])
    args = SyntheticCheckArguments()
    truth_as_model = score_against_ceiling(splits["test"], {
        "ceiling": ceiling_predictions(test_truth), "world_model": ceiling_predictions(test_truth),
        "feature_only": baseline}, data_args, args)
    assert truth_as_model["passed"]
    assert truth_as_model["ratio"]["valence"] == pytest.approx(1.0)
    baseline_as_model = score_against_ceiling(splits["test"], {
        "ceiling": ceiling_predictions(test_truth), "world_model": baseline, "feature_only": baseline},
        data_args, args)
    assert not baseline_as_model["passed"]
    assert baseline_as_model["ratio"]["valence"] < 0.6 and baseline_as_model["ratio"]["arousal"] < 0.6


def test_observable_bound_lies_between_the_baseline_and_the_ceiling(small):
    """The true model restricted to the log's reports beats a history-free model and cannot beat the true state;
    restricted further to the world model's information, it loses more."""
    data_args, world, log, splits, test_truth = small
    predictors = {
        "ceiling": ceiling_predictions(test_truth),
        "world_model": FeatureOnly().fit(splits["train"]).predict(splits["test"]),
        "feature_only": FeatureOnly().fit(splits["train"]).predict(splits["test"]),
        "observable_bound": observable_bound(world, splits["test"], test_truth),
        "world_model_information_bound": observable_bound(world, splits["test"], test_truth,
                                                          session_boundaries="inferred", pre_in_history=False),
    }
    figures = score_against_ceiling(splits["test"], predictors, data_args, SyntheticCheckArguments())["figures"]
    for outcome in ("valence", "arousal"):
        assert (figures["feature_only"][outcome] < figures["world_model_information_bound"][outcome]
                < figures["observable_bound"][outcome] < figures["ceiling"][outcome]), outcome


def test_an_untrained_model_fails(small):
    data_args, world, log, splits, test_truth = small
    model, tokenizer = untrained_model(log, splits, data_args)
    args = SyntheticCheckArguments(num_prefixes=12, num_rollouts=2, horizon=5)
    result = evaluate_check(model, tokenizer, world, splits, test_truth, data_args, args)
    assert not result["passed"]
    assert not result["fidelity"]["checks"]["valence_ratio"] and not result["fidelity"]["checks"]["arousal_ratio"]
    assert not result["rollouts"]["passed"]
    # its like rate (about 0.5) is far from the true world's; engagement (about 0.5 against 0.84) too
    assert not result["rollouts"]["policies"]["uniform"]["engagement"]["within_tolerance"]
    assert "FAILED" in render_markdown(result)


# ---- the check on a small world ----
def test_check_on_a_small_world(small, tmp_path):
    """Seconds: a tiny model, 30 epochs of 4,000 plays. What it honestly reaches at this size (training seeds 0-2:
    valence R² 0.23-0.34 against a ceiling of 0.74, arousal 0.21-0.22 against 0.58; feature-only 0.22 and 0.14)."""
    data_args = small_data_args()
    args = SyntheticCheckArguments(num_prefixes=18, num_rollouts=4, horizon=5)
    result = ceiling_check(data_args, WorldModelArguments(**TINY_MODEL, dropout=0.0, track_id_dropout=0.0),
                           training_args(tmp_path), args)
    fidelity, rollouts = result["fidelity"], result["rollouts"]
    figures = fidelity["figures"]
    # the ceiling is a real target: the true model explains most of the report variance
    assert 0.5 < figures["ceiling"]["valence"] < 0.85 and 0.45 < figures["ceiling"]["arousal"] < 0.8
    # the model reads the listener's history: it beats the history-free baseline on both affect outcomes ...
    assert fidelity["checks"]["valence_beats_feature_only"] and fidelity["checks"]["arousal_beats_feature_only"]
    # ... but stays far from 90% of the ceiling (30-45% and about 37% here); the check reports the failure
    assert fidelity["ratio"]["valence"] < 0.9 and fidelity["ratio"]["arousal"] < 0.9
    assert not fidelity["passed"] and not result["passed"]
    # rolled forward on the same tracks as the true world, its mean engagement agrees within the tolerance
    for policy in ("logging", "uniform"):
        assert rollouts["policies"][policy]["engagement"]["within_tolerance"], policy
    assert rollouts["prefixes"] == 13 and set(rollouts["policies"]) == {"logging", "uniform"}  # all with 10+ plays
    # a linear model given the history summary is reported beside them: the mood persists, so history helps it too
    for outcome in ("valence", "arousal"):
        assert figures["feature_history"][outcome] > figures["feature_only"][outcome] + 0.05, outcome
    markdown = render_markdown(result)
    assert "| valence R² |" in markdown and "| uniform | like |" in markdown
    assert "feature + history (reported) |" in markdown
    json.dumps(result)  # everything is plain data


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the world model reaches 83% / 84% of the true-state ceiling for valence / arousal (R² 0.566 / 0.534 against "
    "0.681 / 0.632), not 90%; the true model with every true parameter, fed the same log, reaches 91% / 91%. Its "
    "rollouts agree with the true world within the tolerance (figures in docs/world_model.md, 'Synthetic check with "
    "known truth')"))
def test_ceiling_criterion_at_full_size(tmp_path):
    """The issue's criterion with the full-size recipe (minutes on 2 CPU cores): >= 90% of the ceiling R² for valence
    and arousal, above the feature-only baseline, and rollouts within the tolerance. Strict xfail: once the world
    model passes, this test fails until the marker is removed."""
    check_args, data_args, model_args, train_args = make_parser().parse_args_and_config(
        ["--config", str(RECIPE), "--output_dir", str(tmp_path / "check")])
    result = ceiling_check(data_args, model_args, train_args, check_args)
    assert result["fidelity"]["ratio"]["valence"] >= 0.9, result["fidelity"]["figures"]
    assert result["fidelity"]["ratio"]["arousal"] >= 0.9, result["fidelity"]["figures"]
    assert result["fidelity"]["passed"] and result["rollouts"]["passed"]


# ---- the recipe command ----
def test_recipe_command_runs(tmp_path):
    """The README's command (`amrs synthetic-check`) with the recipe, shrunk to a tiny world and one epoch: it writes
    the JSON and Markdown and its exit status is the verdict."""
    assert RECIPE.is_file()
    out = tmp_path / "check"
    status = amrs(["synthetic-check", "--config", str(RECIPE), "--output_dir", str(out), "--data_options", json.dumps(SMALL_WORLD),
                   "--split_fractions", "0.6", "0.1", "0.3", "--max_history", "32", "--num_train_epochs", "1",
                   "--hidden_size", "32", "--intermediate_size", "64", "--eval_strategy", "no", "--save_strategy",
                   "no", "--load_best_model_at_end", "false", "--num_prefixes", "8", "--horizon", "4",
                   "--report_to", "none"])
    result = json.loads((out / "synthetic_check.json").read_text())
    assert status == (0 if result["passed"] else 1)
    assert (out / "synthetic_check.md").read_text().startswith("## Synthetic check with known truth")
    assert result["setup"]["plays"] == SMALL_WORLD["num_plays"]


def test_command_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        amrs(["synthetic-check", "--help"])
    assert exit_.value.code == 0 and "--min_ratio" in capsys.readouterr().out
