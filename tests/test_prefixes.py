"""Rollout starting points cut from a log (`amrs_hf.simulation.prefixes`), checked by hand on a tiny synthetic log whose
rows are shuffled, so that row order and listening (time) order differ."""

import numpy as np
import pytest
import torch

from amrs_hf.data.synthetic import SyntheticWorld, SyntheticWorldConfig
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token
from amrs_hf.models.world_model.processing_world_model import world_model_config
from amrs_hf.simulation.prefixes import (
    history_rank,
    one_cut_per_listener,
    prefix_batch,
    prefix_rows,
    random_cuts,
    session_rows,
    session_track_batch,
)


@pytest.fixture(scope="module")
def log():
    ordered = SyntheticWorld(SyntheticWorldConfig(num_tracks=30, num_users=10), seed=0).generate(300, seed=0)
    return ordered.subset(np.random.default_rng(1).permutation(ordered.num_plays))


@pytest.fixture(scope="module")
def frame(log):
    return log.plays_frame()


@pytest.fixture(scope="module")
def tokenizer(log):
    return build_track_tokenizer(log.catalogue["track_id"])


def time_order(frame) -> dict:
    """Listener -> their rows in listening order, by hand: sorted on (timestamp, session, position)."""
    out = {}
    for row in range(len(frame)):
        out.setdefault(frame["user_id"].iat[row], []).append(row)
    key = lambda r: (frame["timestamp"].iat[r], frame["session_id"].iat[r], frame["position"].iat[r])  # noqa: E731
    return {user: sorted(rows, key=key) for user, rows in out.items()}


def test_history_rank_is_the_index_in_time_order(log, frame):
    rank = history_rank(log)
    assert not np.array_equal(rank, np.arange(len(frame)))  # the rows are shuffled: rank is not row order
    for rows in time_order(frame).values():
        assert rank[rows].tolist() == list(range(len(rows)))


@pytest.mark.parametrize("max_plays", [1, 4, 1000])
def test_prefix_rows_are_the_listeners_plays_up_to_the_cut(log, frame, max_plays):
    order = time_order(frame)
    cuts = [0, 7, 123, 299, 7]  # a repeated cut is allowed
    prefixes = prefix_rows(log, cuts, max_plays)
    assert len(prefixes) == len(cuts)
    for cut, rows in zip(cuts, prefixes):
        history = order[frame["user_id"].iat[cut]]
        k = history.index(cut)
        assert rows.tolist() == history[max(0, k + 1 - max_plays): k + 1]
        assert rows[-1] == cut and len(rows) == min(max_plays, k + 1)
        assert (np.diff(frame["timestamp"].to_numpy()[rows]) >= 0).all()


def test_session_rows_are_the_session_up_to_the_cut(log, frame):
    cuts = [5, 42, 250]
    for include_cut in (True, False):
        for max_plays in (0, 2, 100):
            for cut, rows in zip(cuts, session_rows(log, cuts, max_plays, include_cut)):
                session, position = frame["session_id"].iat[cut], frame["position"].iat[cut]
                same = [r for r in range(len(frame)) if frame["session_id"].iat[r] == session
                        and (frame["position"].iat[r] < position or (include_cut and r == cut))]
                expected = sorted(same, key=lambda r: frame["position"].iat[r])
                expected = expected[len(expected) - max_plays:] if max_plays else []
                assert rows.tolist() == expected, (cut, include_cut, max_plays)
    # a session's first play has nothing before it
    first = int(np.flatnonzero(frame["position"].to_numpy() == 0)[0])
    assert session_rows(log, [first], 10, include_cut=False)[0].tolist() == []
    assert session_rows(log, [first], 10)[0].tolist() == [first]


def test_random_cuts_respect_min_plays(log, frame):
    rank, order = history_rank(log), time_order(frame)
    for min_plays in (1, 5, 30):
        eligible = {r for r in range(len(frame)) if rank[r] >= min_plays - 1}
        cuts = random_cuts(log, 20, min_plays, np.random.default_rng(0))
        assert len(cuts) == 20 and len(set(cuts.tolist())) == 20 and (np.diff(cuts) > 0).all()
        assert set(cuts.tolist()) <= eligible
        for cut in cuts:  # at least min_plays plays in the prefix, counted by hand
            assert order[frame["user_id"].iat[cut]].index(cut) + 1 >= min_plays
    # asking for more cuts than there are eligible plays gives all of them, in row order
    eligible = np.flatnonzero(rank >= 49)
    np.testing.assert_array_equal(random_cuts(log, 10_000, 50, np.random.default_rng(0)), eligible)
    np.testing.assert_array_equal(random_cuts(log, 7, 3, np.random.default_rng(4)),
                                  random_cuts(log, 7, 3, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="min_plays"):
        random_cuts(log, 5, 10_000, np.random.default_rng(0))


def test_one_cut_per_listener(log, frame):
    counts = frame["user_id"].value_counts()
    rank = history_rank(log)
    cuts = one_cut_per_listener(log, 20, 100, np.random.default_rng(0))
    users = frame["user_id"].to_numpy()[cuts].tolist()
    assert users == sorted(counts.index[counts >= 20])  # one per listener with >= 20 plays, sorted by id
    assert (rank[cuts] >= 19).all()
    few = one_cut_per_listener(log, 20, 2, np.random.default_rng(0))
    assert len(few) == 2 and set(few.tolist()) <= set(range(len(frame)))
    few_users = frame["user_id"].to_numpy()[few].tolist()
    assert few_users == sorted(few_users) and set(few_users) <= set(users)
    with pytest.raises(ValueError, match="min_plays"):
        one_cut_per_listener(log, 10_000, 5, np.random.default_rng(0))


def test_session_track_batch_is_right_padded_session_tracks(log, frame, tokenizer):
    cuts = [5, 42, 250]
    ids, mask = session_track_batch(tokenizer, log, cuts, 6)
    rows = session_rows(log, cuts, 6)
    assert ids.shape == mask.shape == (3, max(len(r) for r in rows))
    for i, r in enumerate(rows):
        expected = tokenizer.convert_tokens_to_ids([track_token(t) for t in frame["track_id"].to_numpy()[r]])
        assert ids[i, : len(r)].tolist() == expected
        assert mask[i].tolist() == [True] * len(r) + [False] * (ids.shape[1] - len(r))
        assert (ids[i, len(r):] == tokenizer.pad_token_id).all()


def test_prefix_batch_ends_each_row_at_the_cut(log, frame, tokenizer):
    config = world_model_config(log, tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)
    cuts = [3, 20, 100, 299, 20]
    batch = prefix_batch(config, tokenizer, log, cuts, 5)
    lengths = batch["attention_mask"].sum(1)
    for i, (cut, rows) in enumerate(zip(cuts, prefix_rows(log, cuts, 5))):
        n = int(lengths[i])
        assert n == len(rows)
        expected = tokenizer.convert_tokens_to_ids([track_token(t) for t in frame["track_id"].to_numpy()[rows]])
        assert batch["track_ids"][i, :n].tolist() == expected  # the prefix in listening order
        assert batch["track_ids"][i, n - 1] == tokenizer.convert_tokens_to_ids(track_token(frame["track_id"].iat[cut]))
        assert (batch["track_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert batch["mode_ids"][i, n - 1] == config.mode_id(frame["mode"].iat[cut])
        torch.testing.assert_close(batch["engagement"][i, :n],
                                   torch.tensor(frame["engagement"].to_numpy()[rows], dtype=torch.float32))
    # two cuts of one listener give identical rows
    for name, value in batch.items():
        torch.testing.assert_close(value[1], value[4], rtol=0, atol=0, equal_nan=True, msg=name)


def test_a_cut_short_prefix_reads_its_first_play_as_training_does(log, frame, tokenizer):
    """The first play of a prefix cut to `max_plays` keeps the inputs the full history gives it (session start, time
    gap, mood carried over), as in a training window, instead of looking like the start of the listener's log."""
    from amrs_hf.models.world_model.processing_world_model import WorldModelCollator, user_sequences

    config = world_model_config(log, tokenizer, max_position_embeddings=512, use_session_inputs=True,
                                pre_state_in_history=True)
    user = frame["user_id"].iat[0]
    rows = time_order(frame)[user]
    cut, max_plays = rows[-1], 5
    batch = prefix_batch(config, tokenizer, log, [cut], max_plays)
    full = WorldModelCollator(tokenizer.pad_token_id)(
        user_sequences(log.select_users([user]), tokenizer, config, max_length=len(rows) + 1))
    for name in ("session_start", "time_gap", "pre_valence", "pre_arousal", "track_ids"):
        torch.testing.assert_close(batch[name][0], full[name][0, -max_plays:], rtol=0, atol=0, equal_nan=True)
    assert not torch.isnan(batch["time_gap"][0, 0])  # the play before it is known: so is the gap
