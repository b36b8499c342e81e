"""Preference pairs as TRL reads them, and the bookkeeping shared by the builders.

A pair is text: `prompt` = `<mode:m> <cohort:c> t:<history> ...`, `chosen` / `rejected` = whitespace-separated track
tokens with a leading space (TRL tokenizes prompt + completion; without the space the first completion token would
merge with the prompt's last and become <unk>). Beside the text each row keeps the scores behind the choice:
`chosen_utility`, `rejected_utility`, `margin`, the strategy, the listener and (for feedback correction) the logged
play it corrects.

Pairs that cannot teach anything are dropped and counted: equal scores (margin at or below `min_margin`), identical
chosen and rejected, empty completions, and (feedback correction) plays where no candidate is feasible. If nothing is
left, `PreferenceSet.to_dataset` raises instead of letting DPO train on nothing.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import datasets

from amrs_hf.data.tokenizer import tracks_to_text
from amrs_hf.models.policy.tokenization_policy import prompt_text

PAIR_FEATURES = datasets.Features({
    "prompt": datasets.Value("string"),
    "chosen": datasets.Value("string"),
    "rejected": datasets.Value("string"),
    "chosen_utility": datasets.Value("float64"),
    "rejected_utility": datasets.Value("float64"),
    "margin": datasets.Value("float64"),
    "strategy": datasets.Value("string"),
    "user_id": datasets.Value("string"),
    "play_id": datasets.Value("string"),  # the corrected logged play as "session_id:position" (feedback), else ""
})
DROP_REASONS = ("tie", "identical", "empty", "infeasible")


class EmptyPreferencesError(ValueError):
    """No usable pair was built: DPO would learn nothing."""


def known(value):
    """`value`, or None where a log column is missing (None or NaN): a prompt leaves unknown modes/cohorts out."""
    return None if value is None or (isinstance(value, float) and value != value) else value


def completion_text(track_ids) -> str:
    """` t:a t:b`: a completion with the leading space TRL needs ("" for no tracks)."""
    text = tracks_to_text(track_ids)
    return f" {text}" if text else ""


@dataclasses.dataclass
class PreferenceSet:
    """Pairs being built plus the count of what was dropped, by reason."""

    rows: list = dataclasses.field(default_factory=list)
    dropped: Counter = dataclasses.field(default_factory=Counter)
    considered: int = 0

    def offer(self, *, prompt: str, chosen, rejected, chosen_utility: float, rejected_utility: float,
              min_margin: float, strategy: str, user_id: str = "", play_id: str = "") -> bool:
        """Keep the pair unless it is empty, identical or not better by more than `min_margin`; count the drop."""
        self.considered += 1
        chosen, rejected = list(chosen), list(rejected)
        margin = float(chosen_utility) - float(rejected_utility)
        reason = ("empty" if not chosen or not rejected else "identical" if chosen == rejected
                  else "tie" if not margin > min_margin else None)
        if reason:
            self.dropped[reason] += 1
            return False
        self.rows.append({
            "prompt": prompt, "chosen": completion_text(chosen), "rejected": completion_text(rejected),
            "chosen_utility": float(chosen_utility), "rejected_utility": float(rejected_utility), "margin": margin,
            "strategy": strategy, "user_id": str(user_id), "play_id": str(play_id),
        })
        return True

    def drop(self, reason: str, count: int = 1) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; known: {DROP_REASONS}")
        self.considered += count
        self.dropped[reason] += count

    def extend(self, other: "PreferenceSet") -> "PreferenceSet":
        self.rows += other.rows
        self.dropped.update(other.dropped)
        self.considered += other.considered
        return self

    def summary(self) -> dict:
        return {"pairs": len(self.rows), "considered": self.considered,
                "dropped": {reason: int(self.dropped.get(reason, 0)) for reason in DROP_REASONS}}

    def to_dataset(self) -> datasets.Dataset:
        if not self.rows:
            raise EmptyPreferencesError(
                f"no preference pair left out of {self.considered} considered (dropped: {self.summary()['dropped']}); "
                "nothing for DPO to learn from. Lower min_margin, add candidates or prefixes, or check that the log "
                "has negative feedback (feedback correction) and the policy varies its continuations (rollout).")
        return datasets.Dataset.from_list(self.rows, features=PAIR_FEATURES)


__all__ = ["DROP_REASONS", "EmptyPreferencesError", "PAIR_FEATURES", "PreferenceSet", "completion_text",
           "known", "prompt_text"]
