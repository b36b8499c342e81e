"""Rollout starting points taken from a log: a listener's history up to a chosen play (the "cut").

Preference building and policy evaluation both start rollouts from logged histories. A prefix is a listener's plays in
time order (the order the world model reads them in) up to and including the cut play, cut to its last `max_plays`;
`prefix_batch` turns prefixes into the world model's inputs, processed exactly as in training (`user_sequences`);
`session_track_batch` gives the tracks of each cut's session so far, what a session-level policy reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from amrs_hf.data.schema import ListeningLog
from amrs_hf.data.tokenizer import track_token
from amrs_hf.models.world_model.processing_world_model import WorldModelCollator, user_sequences

_ORDER = ["user_id", "timestamp", "session_id", "position"]


def history_rank(log: ListeningLog) -> np.ndarray:
    """Each play's index in its listener's history, in the order `user_sequences` reads them (time order)."""
    frame = log.plays_frame()[_ORDER]
    order = frame.sort_values(_ORDER, kind="stable", na_position="first")
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order.index.to_numpy()] = order.groupby("user_id", sort=False).cumcount().to_numpy()
    return rank


def one_cut_per_listener(log: ListeningLog, min_plays: int, max_prefixes: int, rng: np.random.Generator) -> np.ndarray:
    """One cut play (a row of `log.plays`) per listener with at least `min_plays` plays: a random play among those
    with `min_plays - 1` or more plays before it. At most `max_prefixes` listeners (a random subset), sorted by id."""
    rank = history_rank(log)
    users = np.asarray(log.plays["user_id"], dtype=object)
    eligible = pd.DataFrame({"user": users, "row": np.arange(len(users))})[rank >= min_plays - 1]
    if eligible.empty:
        raise ValueError(f"no listener of this log has {min_plays} plays; lower min_plays (the warm-up)")
    cuts = eligible.groupby("user", sort=True)["row"].apply(lambda rows: rng.choice(rows.to_numpy()))
    if len(cuts) > max_prefixes:
        cuts = cuts.iloc[np.sort(rng.choice(len(cuts), max_prefixes, replace=False))]
    return cuts.to_numpy(dtype=np.int64)


def random_cuts(log: ListeningLog, num_cuts: int, min_plays: int, rng: np.random.Generator) -> np.ndarray:
    """`num_cuts` cut plays drawn without replacement from every listener's plays that have at least `min_plays - 1`
    plays before them (all of them if fewer are eligible), in row order."""
    eligible = np.flatnonzero(history_rank(log) >= min_plays - 1)
    if len(eligible) == 0:
        raise ValueError(f"no listener of this log has {min_plays} plays; lower min_plays")
    return np.sort(rng.choice(eligible, size=min(num_cuts, len(eligible)), replace=False))


def prefix_rows(log: ListeningLog, cut_rows, max_plays: int) -> list[np.ndarray]:
    """For each cut, the rows of `log.plays` of its prefix in history order (at most `max_plays`, the cut last)."""
    rank = history_rank(log)
    users = np.asarray(log.plays["user_id"], dtype=object)
    by_user = pd.Series(np.arange(len(users))).groupby(users).apply(lambda rows: rows.to_numpy()[
        np.argsort(rank[rows.to_numpy()], kind="stable")]).to_dict()
    out = []
    for cut in cut_rows:
        rows = by_user[users[cut]]
        out.append(rows[max(0, rank[cut] + 1 - max_plays) : rank[cut] + 1])
    return out


def session_rows(log: ListeningLog, cut_rows, max_plays: int, include_cut: bool = True) -> list[np.ndarray]:
    """For each cut, the rows of its session's plays up to the cut (included or not), in listening order, at most
    the last `max_plays`: what a session-level policy has seen."""
    frame = log.plays_frame()[["session_id", "position"]]
    frame["row"] = np.arange(len(frame))
    by_session = {s: g.sort_values("position", kind="stable")["row"].to_numpy()
                  for s, g in frame.groupby("session_id", sort=False)}
    out = []
    for cut in cut_rows:
        rows = by_session[frame["session_id"].iat[cut]]
        upto = rows[: int(np.flatnonzero(rows == cut)[0]) + (1 if include_cut else 0)]
        out.append(upto[len(upto) - max_plays:] if max_plays > 0 else upto[:0])
    return out


def session_track_batch(tokenizer, log: ListeningLog, cut_rows, max_plays: int) -> tuple:
    """The track token ids of each cut's session up to the cut, right-padded: (ids, mask) (B, L)."""
    tracks = np.asarray(log.plays["track_id"], dtype=object)
    rows = session_rows(log, cut_rows, max_plays)
    length = max([len(r) for r in rows] + [1])
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, : len(r)] = torch.as_tensor(tokenizer.convert_tokens_to_ids([track_token(t) for t in tracks[r]]))
            mask[i, : len(r)] = True
    return ids, mask


def prefix_batch(config, tokenizer, log: ListeningLog, cut_rows, max_plays: int) -> dict:
    """The world model's inputs for each prefix (right-padded, one row per cut in the order of `cut_rows`; several
    cuts may share a listener). A prefix cut short of the listener's whole history is processed with the play
    before it, then that play is dropped, so its first play keeps what training shows for it (session start, time
    gap, the mood carried over from the previous play)."""
    windows = []
    for rows in prefix_rows(log, cut_rows, max_plays + 1):
        extra = len(rows) > max_plays and len(rows) + 1 < config.max_position_embeddings
        if len(rows) > max_plays and not extra:
            rows = rows[1:]
        # one listener's prefix alone: user_sequences orders it by time and reads it as one window
        (window,) = user_sequences(log.subset(np.sort(rows)), tokenizer, config, max_length=len(rows) + 1)
        if extra:
            window = {k: (v[1:] if isinstance(v, list) else v) for k, v in window.items()}
        windows.append(window)
    return WorldModelCollator(tokenizer.pad_token_id)(windows)


__all__ = ["history_rank", "one_cut_per_listener", "prefix_batch", "prefix_rows", "random_cuts", "session_rows",
           "session_track_batch"]
