"""Ranking metrics against hand-computed values, and next-track queries drawn from a log."""

import math

import numpy as np
import pytest
import torch

from amrs_hf.data import load_log
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.evaluation.ranking import (
    hit_rate_at_k,
    ndcg_at_k,
    popularity_scores,
    ranking_metrics,
    target_ranks,
)
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM
from amrs_hf.models.policy.training_policy import next_track_scores, policy_sequences, windows

SCORES = np.array([[0.1, 0.5, 0.3, 0.5],   # target 2: two higher scores -> rank 2
                   [1.0, 1.0, 1.0, 1.0],   # target 3: all tied, lower indices first -> rank 3
                   [0.9, 0.1, 0.2, 0.3]])  # target 0: the best -> rank 0
TARGETS = np.array([2, 3, 0])


def test_target_ranks_by_hand():
    assert target_ranks(SCORES, TARGETS).tolist() == [2, 3, 0]
    assert target_ranks(SCORES, [1, 0, 3]).tolist() == [0, 0, 1]  # row 0: the tie at 0.5 goes to index 1


def test_hit_rate_and_ndcg_by_hand():
    ranks = [2, 3, 0]
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(ranks, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 3) == pytest.approx((1 / math.log2(4) + 0 + 1) / 3)  # 0.5
    assert ndcg_at_k(ranks, 4) == pytest.approx((0.5 + 1 / math.log2(5) + 1) / 3)
    assert ranking_metrics(ranks, k=3) == {"hr@3": pytest.approx(2 / 3), "ndcg@3": pytest.approx(0.5),
                                           "num_queries": 3}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="targets must be column indices"):
        target_ranks(SCORES, [0, 1, 4])
    with pytest.raises(ValueError, match=r"\(queries, items\)"):
        target_ranks(SCORES[0], [0])


def test_popularity_counts_plays():
    log = load_log("synthetic", None, num_plays=500, seed=3, num_tracks=40, num_users=20)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    counts = popularity_scores(log, tokenizer)
    played = log.plays_frame()["track_id"].value_counts()
    assert counts.sum() == 500 and counts[list(log.catalogue["track_id"]).index(played.index[0])] == played.iloc[0]


@pytest.mark.parametrize("context", ["session", "history"])
def test_queries_are_every_play_after_the_first_of_its_session(context):
    log = load_log("synthetic", None, num_plays=400, seed=1, num_tracks=30, num_users=10)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    frame = log.plays_frame().sort_values(["user_id", "timestamp", "session_id", "position"], kind="stable")
    expected = frame[frame["position"] > 0]["track_id"]
    column = {t: i for i, t in enumerate(log.catalogue["track_id"])}
    torch.manual_seed(0)
    model = AmrsPolicyForCausalLM(AmrsPolicyConfig(vocab_size=len(tokenizer), hidden_size=16, num_attention_heads=2,
                                                   intermediate_size=32, max_position_embeddings=64))
    # short windows: every query is still scored exactly once, across window boundaries
    scores, targets = next_track_scores(model, tokenizer, log, context=context, max_length=16)
    assert scores.shape == (len(expected), len(track_token_ids(tokenizer))) and np.isfinite(scores).all()
    if context == "session":
        assert targets.tolist() == [column[t] for t in expected]
    else:
        assert sorted(targets.tolist()) == sorted(column[t] for t in expected)


def test_windows_score_each_token_once():
    sequences = [{"input_ids": [1] + list(range(10, 30)), "is_track": [False] + [True] * 20,
                  "is_query": [False] + [True] * 20}]
    cut = windows(sequences, max_length=8, overlap=3)
    assert all(len(w["input_ids"]) <= 8 and w["input_ids"][0] == 1 for w in cut)
    scored = [t for w in cut for p, t in enumerate(w["input_ids"]) if p >= w["score_from"]]
    assert scored == list(range(10, 30))


def test_sequences_mask_headers(tmp_path):
    log = load_log("synthetic", None, num_plays=60, seed=2, num_tracks=20, num_users=3)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    seq = policy_sequences(log, tokenizer, "session")[0]
    tokens = tokenizer.convert_ids_to_tokens(seq["input_ids"])
    assert tokens[0] == "<bos>" and tokens[1].startswith("<mode:") and tokens[2].startswith("<cohort:")
    assert seq["is_track"][:3] == [False] * 3 and all(seq["is_track"][3:])
    assert seq["is_query"][3] is False and all(seq["is_query"][4:])
