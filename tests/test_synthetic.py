"""The synthetic world: determinism, schema, true propensities, the causal model's promises, calibration."""

import numpy as np
import pandas as pd
import pytest

from amrs_hf.data import CATALOGUE_FEATURES, COHORTS, MODES, PLAY_FEATURES, load_log, save_log
from amrs_hf.data.calibration import (
    SITUNES_REFERENCE,
    STATISTICS,
    TOLERANCES,
    affect_statistics,
    comparison_table,
    within_tolerance,
)
from amrs_hf.data.io import CATALOGUE_FILE, PLAYS_FILE
from amrs_hf.data.synthetic import SyntheticWorld, SyntheticWorldConfig
from amrs_hf.data.validation import build_log


def small_world(seed=0, **overrides) -> SyntheticWorld:
    return SyntheticWorld(SyntheticWorldConfig(num_tracks=64, num_users=40, **overrides), seed=seed)


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def logged(world):
    return world.generate(3000, return_truth=True)


# ---------------------------------------------------------------------------------------------- determinism, schema


def test_same_seed_is_bit_identical_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        save_log(small_world(seed).generate(1500), tmp_path / name)
    for file in (PLAYS_FILE, CATALOGUE_FILE):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
        assert (tmp_path / "a" / file).read_bytes() != (tmp_path / "c" / file).read_bytes()


def test_generate_seed_changes_sessions_not_world(world):
    first, second = world.generate(500, seed=1), world.generate(500, seed=2)
    assert first.plays_frame()["track_id"].tolist() != second.plays_frame()["track_id"].tolist()
    assert first.catalogue_frame().equals(second.catalogue_frame())


def test_log_matches_schema_exactly(logged):
    log, _ = logged
    assert log.plays.features == PLAY_FEATURES
    assert log.catalogue.features == CATALOGUE_FEATURES
    assert log.num_plays == 3000 and log.source == "synthetic"
    plays = log.plays_frame()
    assert plays.equals(plays.sort_values(["user_id", "session_id", "position"]).reset_index(drop=True))
    assert set(plays["mode"]) <= set(MODES) and set(plays["cohort"]) <= {"clinical", "consumer"}
    lengths = plays.groupby("session_id")["position"].agg(["min", "max", "size"])
    assert (lengths["min"] == 0).all() and (lengths["max"] == lengths["size"] - 1).all()
    assert lengths["size"].iloc[:-1].between(5, 40).all()  # the last session may be cut to hit num_plays
    assert (plays.groupby("user_id")["timestamp"].diff().dropna() > 0).all()
    # The validators accept it unchanged (what load_saved_log will run on it).
    rebuilt = build_log(plays, log.catalogue_frame(), source="synthetic")
    assert rebuilt.plays_frame().equals(plays)


def test_observation_rates(world):
    plays = world.generate(4000).plays_frame()
    assert plays["engagement"].notna().all()
    assert plays["rating"].notna().mean() == pytest.approx(0.7, abs=0.04)
    assert (plays["rating"].isna() == plays["rating_score"].isna()).all()
    assert (plays["rating"].dropna() == (plays["rating_score"].dropna() >= 4)).all()
    assert (plays["valence"].isna() == plays["arousal"].isna()).all()
    assert plays["pre_valence"].notna().mean() == pytest.approx(0.5, abs=0.04)
    sparse = small_world(rating_rate=0.0, pre_report_rate=0.0).generate(300).plays_frame()
    assert sparse["rating"].isna().all() and sparse["pre_valence"].isna().all()


# ------------------------------------------------------------------------------------------------- logging policy


def test_propensity_is_the_logging_probability(world, logged):
    log, truth = logged
    n_tracks = world.num_tracks
    modes = np.array([MODES.index(m) for m in log.plays["mode"]])
    probs = world.logging_probabilities(truth["user_index"].to_numpy(), modes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert probs.min() >= world.config.epsilon / n_tracks
    logged_probs = probs[np.arange(len(probs)), truth["track_index"].to_numpy()]
    np.testing.assert_allclose(np.asarray(log.plays["propensity"]), logged_probs, rtol=1e-6)
    assert [world.track_ids[i] for i in truth["track_index"]] == log.plays["track_id"]


def test_propensities_match_the_sampling(world):
    # E[1 / pi(logged track)] = number of tracks exactly when the tracks are drawn from pi.
    propensity = np.asarray(world.generate(20000, seed=3).plays["propensity"], dtype=np.float64)
    assert np.mean(1.0 / propensity) == pytest.approx(world.num_tracks, rel=0.05)


# --------------------------------------------------------------------------------------------- the causal model


def test_mood_carries_over_within_a_session(logged):
    _, truth = logged
    same_session = truth["session_index"].to_numpy()[1:] == truth["session_index"].to_numpy()[:-1]
    for dim in ("valence", "arousal"):
        np.testing.assert_array_equal(truth[f"true_pre_{dim}"].to_numpy()[1:][same_session],
                                      truth[f"true_post_{dim}"].to_numpy()[:-1][same_session])


def test_repeats_hurt(world):
    rng = np.random.default_rng(0)
    users = rng.integers(0, world.num_users, 500)
    outcomes = {}
    for policy in ("replay", "diverse"):
        state = world.start_sessions(users, ["focus"] * len(users), seed=1)
        fixed, order = rng.integers(0, world.num_tracks, len(users)), np.argsort(rng.random((len(users), 64)), axis=1)
        like, engagement = [], []
        for t in range(10):
            track = fixed if policy == "replay" else order[:, t]  # diverse: never the same track twice
            expected = world.expected(state, track)
            like.append(expected["like_probability"].mean())
            engagement.append(expected["expected_engagement"].mean())
            _, state = world.step(state, track, rng)
        outcomes[policy] = (np.mean(like[2:]), np.mean(engagement[2:]))
    assert outcomes["replay"][0] < outcomes["diverse"][0] - 0.1
    assert outcomes["replay"][1] < outcomes["diverse"][1] - 0.05


def test_sleep_mode_prefers_low_energy_tracks():
    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=400, num_users=200), seed=0)
    users = np.repeat(np.arange(world.num_users), 20)
    low, high = np.flatnonzero(world.energy < 0.25), np.flatnonzero(world.energy > 0.75)
    like = {}
    for name, tracks in (("low", low), ("high", high)):
        state = world.start_sessions(users, ["sleep"] * len(users), seed=0)
        like[name] = world.expected(state, np.resize(tracks, len(users)))["like_probability"].mean()
    assert like["low"] > like["high"] + 0.1


def test_expected_is_the_mean_of_step(world):
    users = np.resize(np.arange(world.num_users), 40000)
    state = world.start_sessions(users, ["calm"] * len(users), seed=2)
    _, state = world.step(state, np.resize(np.arange(world.num_tracks), len(users)), 3)  # some history
    track = np.resize(np.arange(world.num_tracks)[::-1], len(users))
    expected = world.expected(state, track)
    outcomes, after = world.step(state, track, 4)
    assert outcomes["rating"].mean() == pytest.approx(expected["like_probability"].mean(), abs=0.01)
    assert outcomes["rating_score"].mean() == pytest.approx(expected["expected_rating_score"].mean(), abs=0.02)
    assert outcomes["engagement"].mean() == pytest.approx(expected["expected_engagement"].mean(), abs=0.01)
    assert after.valence.mean() == pytest.approx(expected["expected_valence"].mean(), abs=0.003)
    assert after.arousal.mean() == pytest.approx(expected["expected_arousal"].mean(), abs=0.003)
    np.testing.assert_array_equal(outcomes["pre_valence"] > 0, outcomes["pre_valence"] > 0)  # all recorded
    assert not any(np.isnan(v).any() for v in outcomes.values())


def test_clinical_listeners_are_calmer_and_more_responsive():
    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=64, num_users=4000), seed=0)
    clinical = world.cohort == COHORTS.index("clinical")
    assert world.baseline_arousal[clinical].mean() < world.baseline_arousal[~clinical].mean() - 0.05
    assert world.arousal_response[clinical].mean() > 1.3 * world.arousal_response[~clinical].mean()


def test_respond_replays_a_session(world, logged):
    log, _ = logged
    session = log.sessions()[0]
    last = session["track_id"][-1]
    replayed = world.respond(session, [last, *world.track_ids[:3]], seed=5)
    assert list(replayed.index) == [last, *world.track_ids[:3]]
    assert replayed.equals(world.respond(session, [last, *world.track_ids[:3]], seed=5))
    fresh = world.respond({**session, "track_id": []}, last, seed=5)
    assert replayed.loc[last, "fatigue"] > fresh.loc[last, "fatigue"]
    assert replayed.loc[last, "like_probability"] < fresh.loc[last, "like_probability"]


def test_step_checks_its_input(world):
    state = world.start_sessions([0, 1, 2], "energize", seed=0)
    assert len(state.select([0, 0, 1, 2])) == 4 and state.position == 0
    with pytest.raises(ValueError, match="one track per session"):
        world.step(state, [1, 2])
    with pytest.raises(ValueError, match="sum to 1"):
        SyntheticWorldConfig(consumer_mode_probs=(0.5, 0.5, 0.5, 0.5))


# ------------------------------------------------------------------------------------------------------- adapter


def test_synthetic_source_generates_and_reloads(tmp_path):
    log = load_log("synthetic", num_plays=400, seed=1, num_tracks=64, num_users=30)
    assert log.num_plays == 400 and log.catalogue.num_rows == 64
    save_log(log, tmp_path)
    reloaded = load_log("synthetic", str(tmp_path))
    pd.testing.assert_frame_equal(reloaded.plays_frame(), log.plays_frame())
    with pytest.raises(ValueError, match="only when generating"):
        load_log("synthetic", str(tmp_path), epsilon=0.5)


# --------------------------------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def default_statistics():
    return affect_statistics(SyntheticWorld(seed=0).generate(30000))


def test_default_world_is_calibrated_to_situnes(default_statistics):
    misses = {name: (round(default_statistics[name], 3), SITUNES_REFERENCE[name])
              for name, ok in within_tolerance(default_statistics).items() if not ok}
    assert not misses, misses
    table = comparison_table(default_statistics)
    assert table.count("\n") == len(STATISTICS) + 1 and "**no**" not in table


def read_situnes_raw(directory):
    """A minimal reader of SiTunes stages 2-3 onto the schema (one play per session), independent of the adapter."""
    music = pd.read_csv(directory / "music_info.csv", index_col=0)
    plays = pd.concat([pd.read_csv(directory / f"stage{s}_interactions.csv").assign(stage=s) for s in (2, 3)])
    track_seconds = plays["item_id"].map(music.set_index("item_id")["duration"]) / 1000.0
    affect = {"valence": "emo_post_valence", "arousal": "emo_post_arousal",
              "pre_valence": "emo_pre_valence", "pre_arousal": "emo_pre_arousal"}
    frame = pd.DataFrame({
        "user_id": plays["user_id"].astype(str),
        "session_id": plays["stage"].astype(str) + "-" + plays["inter_id"].astype(str),
        "position": 0,
        "track_id": plays["item_id"].astype(str),
        "engagement": (plays["duration"] / track_seconds).clip(0.0, 1.0),
        "rating": (plays["rating"] >= 4).astype(int),
        "rating_score": plays["rating"],
        **{column: (plays[raw] + 1.0) / 2.0 for column, raw in affect.items()},
    })
    catalogue = music.rename(columns={"item_id": "track_id", "general_genre": "genre"})
    catalogue = catalogue.assign(track_id=catalogue["track_id"].astype(str), duration_s=catalogue["duration"] / 1000)
    return build_log(frame, catalogue[list(CATALOGUE_FEATURES)], source="situnes-raw")


def test_calibration_against_the_real_situnes_logs(situnes_dir, default_statistics):
    real = affect_statistics(read_situnes_raw(situnes_dir))
    assert real["mood_pairs"] == 1406
    for name in STATISTICS:  # the stored reference is what the raw files give
        assert real[name] == pytest.approx(SITUNES_REFERENCE[name], abs=1.5e-3), name
    assert all(within_tolerance(default_statistics, real, TOLERANCES).values())


def test_situnes_adapter_agrees_with_the_raw_reader(situnes_dir):
    raw = affect_statistics(read_situnes_raw(situnes_dir))
    adapted = affect_statistics(load_log("situnes", str(situnes_dir), stages=(2, 3)))
    for name in STATISTICS:
        assert adapted[name] == pytest.approx(raw[name], abs=1e-6), name
