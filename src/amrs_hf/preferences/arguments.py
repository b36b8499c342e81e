"""Options of the preference builders (also the `amrs build-preferences` command-line options)."""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("feedback_correction", "rollout", "both")


@dataclass
class PreferenceArguments:
    """Which pairs to build and how. Shared options first, then each strategy's."""

    strategy: str = field(default="feedback_correction", metadata={"help": f"One of {STRATEGIES}."})
    min_margin: float = field(
        default=1e-3, metadata={"help": "Keep a pair only if chosen beats rejected by more than this utility."})
    max_prompt_tracks: int = field(default=32, metadata={"help": "History tracks in each prompt."})
    seed: int = field(default=0, metadata={"help": "Seed of candidates, prefixes, sampling and replays."})
    # --- feedback correction ---
    num_neighbours: int = field(default=10, metadata={"help": "Feedback correction: nearest tracks in audio space."})
    num_random: int = field(default=10, metadata={"help": "Feedback correction: uniformly drawn candidates."})
    skip_threshold: float = field(
        default=0.5, metadata={"help": "Feedback correction: engagement below this is negative feedback (a skip)."})
    dislike_score: float = field(
        default=2, metadata={"help": "Feedback correction: a 1-5 rating score at or below this is a dislike (logs "
                                     "without scores use the like flag)."})
    # --- rollout ---
    num_prefixes: int = field(default=256, metadata={"help": "Rollout: logged prefixes to continue."})
    num_continuations: int = field(default=4, metadata={"help": "Rollout: K continuations sampled per prefix."})
    continuation_length: int = field(default=5, metadata={"help": "Rollout: L tracks per continuation."})
    num_rollouts: int = field(default=4, metadata={"help": "Rollout: world-model replays valuing each one."})
    min_history: int = field(default=1, metadata={"help": "Rollout: plays a prefix holds at least."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout: sampling temperature of the policy."})
    batch_prefixes: int = field(default=64, metadata={"help": "Rollout: prefixes rolled out together."})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("num_continuations", "continuation_length", "num_rollouts", "num_prefixes", "batch_prefixes",
                     "min_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_continuations < 2:
            raise ValueError("num_continuations must be >= 2: a pair needs a best and a worst continuation")
        for name in ("num_neighbours", "num_random", "max_prompt_tracks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_neighbours + self.num_random < 1:
            raise ValueError("num_neighbours + num_random must be >= 1: feedback correction needs candidates")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


__all__ = ["PreferenceArguments", "STRATEGIES"]
