"""Preference pairs for DPO, scored by the world model under the utility.

- `feedback_correction`: a logged play with negative feedback is rejected in favour of the candidate (audio
  neighbours plus random exploration) with the highest predicted utility (the AMRS paper's strategy);
- `rollout_preferences`: the policy's own sampled continuations, valued by world-model replays; best vs worst.

`build_preferences` runs the strategy (or both) the arguments name and returns a `PreferenceSet` whose
`to_dataset()` is what `amrs dpo` trains on.
"""

from __future__ import annotations

from .arguments import STRATEGIES, PreferenceArguments
from .feedback import audio_neighbours, feedback_correction, negative_feedback
from .pairs import DROP_REASONS, PAIR_FEATURES, EmptyPreferencesError, PreferenceSet, completion_text, prompt_text
from .rollout import rollout_preferences


def build_preferences(world_model, tokenizer, log, utility, args: PreferenceArguments, policy_model=None,
                      max_history: int = 64, show_progress: bool = True) -> PreferenceSet:
    """Pairs from `log` (the training listeners) by `args.strategy`; `policy_model` is needed for rollouts."""
    out = PreferenceSet()
    if args.strategy in ("feedback_correction", "both"):
        out.extend(feedback_correction(world_model, tokenizer, log, utility, args, max_history=max_history,
                                       show_progress=show_progress))
    if args.strategy in ("rollout", "both"):
        if policy_model is None:
            raise ValueError("the rollout strategy samples continuations from a policy: pass policy_model "
                             "(--policy_path on the command line)")
        out.extend(rollout_preferences(world_model, policy_model, tokenizer, log, utility, args,
                                       max_history=max_history, show_progress=show_progress))
    return out


__all__ = [
    "DROP_REASONS", "EmptyPreferencesError", "PAIR_FEATURES", "PreferenceArguments", "PreferenceSet", "STRATEGIES",
    "audio_neighbours", "build_preferences", "completion_text", "feedback_correction", "negative_feedback",
    "prompt_text", "rollout_preferences",
]
