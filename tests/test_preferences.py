"""Preference building: feedback correction picks the world model's best candidate over the logged negative play,
pairs that teach nothing are dropped and counted, and an empty set is an error."""

import numpy as np
import pytest
import torch

from amrs_hf.data.synthetic import SyntheticWorld, SyntheticWorldConfig
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.models.world_model import AmrsWorldModel
from amrs_hf.models.world_model.processing_world_model import (
    WorldModelCollator,
    set_catalogue,
    user_sequences,
    world_model_config,
)
from amrs_hf.objectives import Utility
from amrs_hf.preferences import (
    EmptyPreferencesError,
    PreferenceArguments,
    PreferenceSet,
    audio_neighbours,
    build_preferences,
    feedback_correction,
    negative_feedback,
)
from amrs_hf.preferences.scoring import predict_and_score
from amrs_hf.simulation.prefixes import session_rows


@pytest.fixture(scope="module")
def setup():
    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=40, num_users=30), seed=0)
    log = world.generate(600, seed=0)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    torch.manual_seed(0)
    config = world_model_config(log, tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
    model = AmrsWorldModel(config)
    set_catalogue(model, log.catalogue_frame(), tokenizer)
    return log, tokenizer, model.eval()


def test_negative_feedback_is_dislike_or_skip(setup):
    log, _, _ = setup
    frame = log.plays_frame()
    negative = negative_feedback(log, skip_threshold=0.5, dislike_score=2)
    expected = (frame["rating_score"].to_numpy() <= 2) | (frame["engagement"].to_numpy() < 0.5)
    np.testing.assert_array_equal(negative, expected)
    assert 0 < negative.sum() < len(negative)


def test_audio_neighbours_are_nearest_other_tracks(setup):
    _, tokenizer, model = setup
    ids, neighbours = audio_neighbours(model, tokenizer, k=3)
    features = model.track_features[torch.as_tensor(ids)].double()
    distances = torch.cdist(features, features)
    distances.fill_diagonal_(float("inf"))
    nearest = torch.as_tensor(ids)[distances.argsort(dim=1)[:, :3]]
    assert (neighbours != ids[:, None]).all()
    torch.testing.assert_close(torch.as_tensor(neighbours), nearest, rtol=0, atol=0)


def test_feedback_correction_chooses_the_best_candidate_over_the_logged_play(setup):
    log, tokenizer, model = setup
    utility = Utility.load("mode_aware")
    args = PreferenceArguments(num_neighbours=4, num_random=4, min_margin=0.0)
    pairs = feedback_correction(model, tokenizer, log, utility, args, max_history=64, show_progress=False)
    dataset = pairs.to_dataset()
    negative = np.flatnonzero(negative_feedback(log, args.skip_threshold, args.dislike_score))
    summary = pairs.summary()
    assert summary["considered"] == len(negative)
    assert summary["pairs"] + sum(summary["dropped"].values()) == len(negative)
    assert summary["pairs"] > len(negative) // 2

    frame = log.plays_frame()
    play_ids = frame["session_id"].astype(str) + ":" + frame["position"].astype(str)
    row_of = dict(zip(play_ids, range(len(frame))))
    for pair in dataset.select(range(10)):
        row = row_of[pair["play_id"]]
        assert pair["rejected"] == f" t:{frame['track_id'].iat[row]}"  # the logged track, leading space
        assert pair["chosen"] != pair["rejected"] and pair["chosen"].startswith(" t:")
        assert pair["margin"] == pytest.approx(pair["chosen_utility"] - pair["rejected_utility"])
        assert pair["margin"] > 0
        # the prompt: mode, cohort, then the session's tracks before the play
        history = " ".join(f"t:{t}" for t in frame["track_id"].to_numpy()[session_rows(log, [row], 32, False)[0]])
        assert pair["prompt"] == " ".join(filter(None, [f"<mode:{frame['mode'].iat[row]}>",
                                                       f"<cohort:{frame['cohort'].iat[row]}>", history]))


def test_chosen_is_the_argmax_of_the_utility(setup):
    """With every other track as a candidate, the chosen one is the argmax of the utility in the listener's state,
    recomputed here from the model's own listener states."""
    log, tokenizer, model = setup
    utility = Utility.load("paper")  # 0.5 valence + 0.5 arousal, no limits
    args = PreferenceArguments(num_neighbours=39, num_random=0, min_margin=0.0)
    dataset = feedback_correction(model, tokenizer, log, utility, args, max_history=64,
                                  show_progress=False).to_dataset()
    frame = log.plays_frame()
    play_ids = (frame["session_id"].astype(str) + ":" + frame["position"].astype(str)).to_numpy()
    window = user_sequences(log, tokenizer, model.config, max_length=64)[0]
    batch = WorldModelCollator(tokenizer.pad_token_id, keep_index=True)([window])
    index = batch.pop("play_index")[0]
    batch.pop("score_from")
    negative = negative_feedback(log, args.skip_threshold, args.dislike_score)
    t = next(t for t, row in enumerate(index.tolist()) if negative[row])
    states = model.listener_states(**{k: v for k, v in batch.items() if not k.startswith("pre_")}).states
    tracks = torch.as_tensor(track_token_ids(tokenizer))
    step = {k: v[:, t] for k, v in batch.items() if k not in ("track_ids", "attention_mask")}
    with torch.no_grad():
        total = predict_and_score(model, utility, states[:, t], tracks[None], step).total[0]
    total[tracks == batch["track_ids"][0, t]] = -float("inf")  # never the logged track
    (pair,) = [p for p in dataset if p["play_id"] == play_ids[index[t]]]
    best = tokenizer.convert_ids_to_tokens(int(tracks[total.argmax()]))
    assert pair["chosen"] == f" {best}"
    assert pair["chosen_utility"] == pytest.approx(float(total.max()), abs=1e-6)


def test_ties_are_dropped_and_an_empty_set_is_an_error(setup):
    log, tokenizer, model = setup
    args = PreferenceArguments(num_neighbours=2, num_random=0, min_margin=1e9)
    pairs = build_preferences(model, tokenizer, log, Utility.load("paper"), args, show_progress=False)
    assert pairs.summary()["pairs"] == 0 and pairs.summary()["dropped"]["tie"] > 0
    with pytest.raises(EmptyPreferencesError, match="nothing for DPO to learn"):
        pairs.to_dataset()


def test_offer_drops_identical_and_empty_pairs():
    pairs = PreferenceSet()
    common = dict(prompt="<mode:calm>", chosen_utility=1.0, rejected_utility=0.0, min_margin=0.0, strategy="x")
    assert not pairs.offer(chosen=["a"], rejected=["a"], **common)
    assert not pairs.offer(chosen=[], rejected=["a"], **common)
    assert not pairs.offer(chosen=["b"], rejected=["a"], **{**common, "chosen_utility": 0.0})
    assert pairs.offer(chosen=["b", "c"], rejected=["a", "d"], **common)
    assert pairs.summary() == {"pairs": 1, "considered": 4,
                               "dropped": {"tie": 1, "identical": 1, "empty": 1, "infeasible": 0}}
    row = pairs.to_dataset()[0]
    assert (row["chosen"], row["rejected"]) == (" t:b t:c", " t:a t:d")


def test_rollout_strategy_needs_a_policy(setup):
    log, tokenizer, model = setup
    with pytest.raises(ValueError, match="policy_model"):
        build_preferences(model, tokenizer, log, Utility.load("paper"), PreferenceArguments(strategy="rollout"))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strategy"):
        PreferenceArguments(strategy="greedy")
    with pytest.raises(ValueError, match="num_continuations"):
        PreferenceArguments(num_continuations=1)
