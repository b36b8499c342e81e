"""Splits of a listening log.

- `cold_start_splits`: the strict cold-start protocol. Users, not plays, are divided into train/valid/test, so every
  test listener is a stranger to the model. Seeded Monte-Carlo repeats (default 10, as in the AMRS paper).
- `temporal_split`: one global cutoff in time. Everything in train happens before the first cutoff and everything in
  test at or after the second, for every user.

Both return `{"train": ListeningLog, "valid": ListeningLog, "test": ListeningLog}`; the catalogue is shared, so a track
never played in train still has its audio features.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np

from .schema import ListeningLog

SPLIT_NAMES = ("train", "valid", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if (len(fractions) != 3 or not all(isinstance(f, numbers.Real) and math.isfinite(f) and f >= 0 for f in fractions)
            or not np.isclose(sum(fractions), 1.0)):
        raise ValueError(
            f"fractions must be three finite non-negative numbers (train, valid, test) summing to 1, got {fractions}"
        )
    return tuple(float(f) for f in fractions)


def cold_start_split(
    log: ListeningLog, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, ListeningLog]:
    """One user-disjoint split: each user's plays all land in exactly one of train/valid/test."""
    _, f_valid, f_test = _check_fractions(fractions)
    users = np.array(sorted(set(log.plays["user_id"])))
    if len(users) < 3:
        raise ValueError(f"a cold-start split needs at least 3 users, the log has {len(users)}")
    users = users[np.random.default_rng(seed).permutation(len(users))]
    n_test = max(1, int(round(f_test * len(users)))) if f_test > 0 else 0
    n_valid = max(1, int(round(f_valid * len(users)))) if f_valid > 0 else 0
    if n_test + n_valid >= len(users):
        raise ValueError(f"{len(users)} users are too few for fractions {tuple(fractions)}: train would be empty")
    groups = {
        "test": users[:n_test],
        "valid": users[n_test : n_test + n_valid],
        "train": users[n_test + n_valid :],
    }
    return {name: log.select_users(groups[name]) for name in SPLIT_NAMES}


def cold_start_splits(
    log: ListeningLog, num_repeats: int = 10, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[dict[str, ListeningLog]]:
    """Seeded Monte-Carlo repeats of `cold_start_split`; repeat `r` uses seed `seed + r`."""
    return [cold_start_split(log, fractions, seed=seed + repeat) for repeat in range(num_repeats)]


def temporal_split(
    log: ListeningLog,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    cutoffs: Optional[tuple[float, float]] = None,
) -> dict[str, ListeningLog]:
    """A global temporal split: train = plays before `cutoffs[0]`, valid = between, test = at or after `cutoffs[1]`.

    Without `cutoffs`, they are the timestamp quantiles at the train and train+valid fractions; a part whose fraction
    is 0 is empty (so (1, 0, 0) puts every play in train). `cutoffs` must be two finite numbers in time order. Every
    play needs a timestamp.
    """
    if cutoffs is not None:
        if (len(cutoffs) != 2 or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c)
                                         for c in cutoffs)):
            raise ValueError(f"cutoffs must be two finite numbers (Unix seconds), got {cutoffs}")
        if cutoffs[0] > cutoffs[1]:
            raise ValueError(f"cutoffs must be in time order, got {cutoffs}")
    timestamps = log.plays.with_format("arrow")["timestamp"]
    missing = timestamps.null_count
    if missing:
        raise ValueError(
            f"a temporal split needs a timestamp on every play; {missing} of {log.num_plays} plays have none "
            "(use cold_start_splits, or give the log timestamps)"
        )
    values = timestamps.to_numpy(zero_copy_only=False)
    if cutoffs is None:
        f_train, f_valid, f_test = _check_fractions(fractions)
        if not len(values):
            return {name: log.subset([], cutoffs=(0.0, 0.0)) for name in SPLIT_NAMES}
        first, second = (float(q) for q in np.quantile(values, [f_train, f_train + f_valid], method="lower"))
        after_all = float(np.nextafter(values.max(), np.inf))  # later than every play
        if f_test == 0:
            second = after_all
            if f_valid == 0:
                first = after_all
        cutoffs = (first, second)
    first, second = cutoffs
    masks = {"train": values < first, "valid": (values >= first) & (values < second), "test": values >= second}
    return {name: log.subset(np.flatnonzero(masks[name]), cutoffs=cutoffs) for name in SPLIT_NAMES}
