"""Top-k ranking metrics for next-track recommendation, and the policy's next-track evaluation.

A query is a held-out play with a known true next track; a recommender scores every catalogue track and the true
track's rank (0 = first) gives

    HR@k   = share of queries whose true track ranks in the top k
    NDCG@k = mean over queries of 1 / log2(rank + 2) if rank < k else 0    (one relevant item: the ideal DCG is 1)

Ties are broken by catalogue order (the lower index ranks first), so a recommender that scores everything equally is
not credited with every tie (it ranks like a fixed list). The most-popular baseline scores each track by its plays in
the training listeners' log.
"""

from __future__ import annotations

import numpy as np


def target_ranks(scores, targets) -> np.ndarray:
    """0-based rank of `targets[q]` among the columns of `scores[q]` (Q, N), higher score first; ties go to the
    lower column index."""
    scores, targets = np.asarray(scores, dtype=float), np.asarray(targets, dtype=int)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (queries, items) and targets (queries,), got {scores.shape} and "
                         f"{targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must be column indices in [0, {scores.shape[1]})")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    true = scores[np.arange(len(targets)), targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    return ((scores > true) | ((scores == true) & (columns < targets[:, None]))).sum(axis=1)


def hit_rate_at_k(ranks, k: int = 10) -> float:
    ranks = np.asarray(ranks)
    return float((ranks < k).mean()) if len(ranks) else float("nan")


def ndcg_at_k(ranks, k: int = 10) -> float:
    ranks = np.asarray(ranks)
    if not len(ranks):
        return float("nan")
    return float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def ranking_metrics(ranks, k: int = 10) -> dict:
    """{"hr@k", "ndcg@k", "num_queries"} from 0-based ranks."""
    return {f"hr@{k}": hit_rate_at_k(ranks, k), f"ndcg@{k}": ndcg_at_k(ranks, k), "num_queries": int(len(ranks))}


def popularity_scores(log, tokenizer) -> np.ndarray:
    """Plays of each catalogue track in `log`, in the order of `track_token_ids(tokenizer)`."""
    from amrs_hf.data.tokenizer import track_token, track_token_ids

    ids = track_token_ids(tokenizer)
    column = {token_id: i for i, token_id in enumerate(ids)}
    counts = np.zeros(len(ids))
    played = tokenizer.convert_tokens_to_ids([track_token(t) for t in log.plays["track_id"]])
    np.add.at(counts, [column[i] for i in played if i in column], 1)
    return counts


def next_track_metrics(model, tokenizer, test_log, train_log, k: int = 10, context: str = "session",
                       max_length: int = 64, batch_size: int = 64) -> dict:
    """HR@k and NDCG@k of the policy on every play of `test_log` after the first of its session (full ranking over
    the catalogue's track tokens), with the most-popular baseline (fitted on `train_log`) on the same queries."""
    from amrs_hf.models.policy.training_policy import next_track_scores

    scores, targets = next_track_scores(model, tokenizer, test_log, context=context, max_length=max_length,
                                        batch_size=batch_size)
    result = ranking_metrics(target_ranks(scores, targets), k)
    popular = np.broadcast_to(popularity_scores(train_log, tokenizer), scores.shape)
    baseline = ranking_metrics(target_ranks(popular, targets), k)
    result.update({f"popular_{name}": value for name, value in baseline.items() if name != "num_queries"})
    result["num_tracks"] = int(scores.shape[1])
    return result


__all__ = ["hit_rate_at_k", "ndcg_at_k", "next_track_metrics", "popularity_scores", "ranking_metrics",
           "target_ranks"]
