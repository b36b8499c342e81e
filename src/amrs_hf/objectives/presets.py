"""Built-in utility presets, as plain dicts in the `Utility.from_dict` format (YAML copies in `recipes/objectives/`).

- `paper`: the AMRS paper's objective, 0.5 x predicted valence + 0.5 x predicted arousal in every mode, nothing else.
- `mode_aware` (the default): affect targets that depend on the session's mode, on the [0, 1] affect scale where 0.5
  is neutral: energize wants high arousal (>= 0.7) and positive valence; focus a moderate arousal band (0.4-0.6);
  calm low arousal (<= 0.3) and positive valence; sleep very low arousal (<= 0.15), with the largest arousal weight.
  Engagement and like count too; small diversity and pessimism weights; clinical listeners in sleep mode may never
  be played a track predicted to raise their arousal by more than 0.05.
"""

DEFAULT_PRESET = "mode_aware"

PRESETS = {
    "paper": {
        "name": "paper",
        "affect": {"default": {"valence": {"weight": 0.5}, "arousal": {"weight": 0.5}}},
    },
    "mode_aware": {
        "name": "mode_aware",
        "affect": {
            "energize": {"valence": {"weight": 0.5, "target": 0.8, "band": 0.2},
                         "arousal": {"weight": 1.0, "target": 0.85, "band": 0.15}},
            "focus": {"valence": {"weight": 0.5, "target": 0.7, "band": 0.2},
                      "arousal": {"weight": 1.0, "target": 0.5, "band": 0.1}},
            "calm": {"valence": {"weight": 0.5, "target": 0.75, "band": 0.15},
                     "arousal": {"weight": 1.0, "target": 0.15, "band": 0.15}},
            "sleep": {"valence": {"weight": 0.25, "target": 0.6, "band": 0.2},
                      "arousal": {"weight": 1.5, "target": 0.0, "band": 0.15}},
            # an unknown mode: the paper's linear affect reward, at half weight
            "default": {"valence": {"weight": 0.25}, "arousal": {"weight": 0.0}},
        },
        "engagement": 0.3,
        "like": 0.3,
        "diversity": {"weight": 0.05, "window": 5, "repeat_penalty": 1.0},
        "pessimism": 0.5,
        "safety": [{"cohort": "clinical", "mode": "sleep", "max_arousal_increase": 0.05}],
    },
}

__all__ = ["DEFAULT_PRESET", "PRESETS"]
