"""Configuration of the AMRS world model: architecture only (no device, paths or training settings).

This file is copied next to the weights by `save_pretrained` and imported on its own by
`AutoConfig.from_pretrained(..., trust_remote_code=True)`, so it imports nothing from amrs_hf.
"""

from __future__ import annotations

import difflib

from transformers import PreTrainedConfig

# Outcomes the world model predicts, in the order every report lists them (mirrors amrs_hf.data.schema.OUTCOMES).
OUTCOME_NAMES = ("engagement", "rating", "valence", "arousal")
# Mirrors amrs_hf.data.schema (a test checks they agree); copied because this file may not import amrs_hf.
DEFAULT_MODES = ("energize", "focus", "calm", "sleep")
DEFAULT_COHORTS = ("clinical", "consumer")
DEFAULT_AUDIO_FEATURES = (
    "valence", "energy", "danceability", "tempo", "acousticness", "instrumentalness", "speechiness", "loudness",
)
# Values derived from the name lists above; passing them is refused, so they can never disagree with the lists.
_DERIVED = {"num_audio_features": "audio_features", "num_modes": "modes", "num_cohorts": "cohorts",
            "num_contexts": "context_vocab"}


class AmrsWorldModelConfig(PreTrainedConfig):
    r"""Architecture of [`AmrsWorldModel`], a causal transformer over a listener's plays that predicts the outcomes
    of the next play: engagement, like, and post-listening valence and arousal (each as a Gaussian).

    Ids: mode, cohort and context ids are `1 + index` into `modes`, `cohorts` and `context_vocab`; id 0 is
    "unknown / missing" for each (use `mode_id`, `cohort_id`, `context_id`). Track ids are the track tokenizer's
    (`amrs_hf.data.tokenizer`), so `vocab_size = len(tokenizer)`; `pad_token_id` and `unk_token_id` have no ID
    embedding (a track is then its audio features alone).

    Optional inputs (`use_session_inputs`, `pre_state_in_history`, `wide_history`) default to False so that a
    checkpoint saved before they existed loads with the architecture it was trained with; `amrs train-world-model`
    turns them on.

    Every value is checked when the config is built: a bad one raises `ValueError` (transformers itself would accept
    it silently), and an unknown keyword that looks like a misspelt field (`hiden_size`) is refused too.
    """

    model_type = "amrs_world_model"

    # --- catalogue and vocabularies ---
    vocab_size: int = 74  # size of the track tokenizer: 10 specials/mode/cohort tokens + 64 tracks by default
    pad_token_id: int = 0  # the tokenizer's <pad>
    unk_token_id: int = 3  # the tokenizer's <unk>: a track outside the vocabulary, represented by its features only
    audio_features: list[str] | None = None  # catalogue feature names, in input order; None -> DEFAULT_AUDIO_FEATURES
    modes: list[str] | None = None  # session modes; None -> DEFAULT_MODES. Mode id 0 = unknown
    cohorts: list[str] | None = None  # listener cohorts; None -> DEFAULT_COHORTS. Cohort id 0 = unknown
    context_vocab: list[str] | None = None  # context strings seen in training; None -> []. Context id 0 = unknown
    # --- transformer ---
    hidden_size: int = 64  # width of every token and of the listener state
    num_hidden_layers: int = 2  # causal transformer blocks
    num_attention_heads: int = 4  # must divide hidden_size
    intermediate_size: int = 256  # MLP width inside a block (and of the prediction head)
    max_position_embeddings: int = 512  # longest history + 1 (the start token) the model can read
    dropout: float = 0.1  # residual, attention and embedding dropout
    track_id_dropout: float = 0.0  # train-time probability of hiding a track's ID embedding (teaches cold start)
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights
    # --- ablations ---
    use_history: bool = True  # False: the state ignores past plays; a prediction sees only its own step
    feed_back_outcomes: bool = True  # False: past plays enter the history by track and context only
    # --- optional per-play inputs (False in old checkpoints, whose configs lack them: they load unchanged) ---
    use_session_inputs: bool = False  # session-start flag and log time gap since the previous play, per play
    pre_state_in_history: bool = False  # a play's pre-listening valence/arousal enters its history token too
    wide_history: bool = False  # the head also reads running statistics of the listener's past outcomes and the
    #                             pre-state split by whether the play continues a session (see AmrsWorldModel)
    # --- heads and losses ---
    outcome_loss_weights: dict[str, float] | None = None  # outcome -> weight in the loss; None -> 1.0 each
    nll_beta: float = 0.0  # β-NLL (Seitzer et al., 2022): each play's Gaussian NLL weighted by its predicted variance
    #                        ** β (no gradient through the weight); 0 is the plain NLL, 1 fits the mean like MSE
    min_variance: float = 1e-4  # floor of predicted valence/arousal variances (the ceiling is 0.25, a [0,1] value's)
    tie_word_embeddings: bool = False  # nothing is tied; declared because transformers 5 reads it

    def __post_init__(self, **kwargs):
        self._refuse_unknown(kwargs)
        if self.audio_features is None:
            self.audio_features = list(DEFAULT_AUDIO_FEATURES)
        if self.modes is None:
            self.modes = list(DEFAULT_MODES)
        if self.cohorts is None:
            self.cohorts = list(DEFAULT_COHORTS)
        if self.context_vocab is None:
            self.context_vocab = []
        weights = {name: 1.0 for name in OUTCOME_NAMES}
        weights.update(self.outcome_loss_weights or {})
        self.outcome_loss_weights = weights
        for name in ("audio_features", "modes", "cohorts", "context_vocab"):
            setattr(self, name, list(getattr(self, name)))
        self._check()
        super().__post_init__(**kwargs)

    # Ids of the categorical step inputs: 0 is unknown / missing.
    def mode_id(self, mode: str | None) -> int:
        return self.modes.index(mode) + 1 if mode in self.modes else 0

    def cohort_id(self, cohort: str | None) -> int:
        return self.cohorts.index(cohort) + 1 if cohort in self.cohorts else 0

    def context_id(self, context: str | None) -> int:
        return self.context_vocab.index(context) + 1 if context in self.context_vocab else 0

    @property
    def num_audio_features(self) -> int:
        return len(self.audio_features)

    @property
    def num_modes(self) -> int:  # including the unknown id 0
        return len(self.modes) + 1

    @property
    def num_cohorts(self) -> int:
        return len(self.cohorts) + 1

    @property
    def num_contexts(self) -> int:
        return len(self.context_vocab) + 1

    def _refuse_unknown(self, kwargs: dict) -> None:
        fields = set(type(self).__dataclass_fields__)
        for key in kwargs:
            if key in _DERIVED:
                raise ValueError(f"{key} is derived from `{_DERIVED[key]}`; pass the list of names instead")
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
            if close and key not in fields:
                raise ValueError(f"unknown config argument {key!r}; did you mean {close[0]!r}?")

    def _check(self) -> None:
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):
            positive_int(name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                             f"({self.num_attention_heads})")
        for name in ("pad_token_id", "unk_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} must be an id in [0, vocab_size={self.vocab_size}), got {value!r}")
        for name in ("dropout", "track_id_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if isinstance(self.nll_beta, bool) or not isinstance(self.nll_beta, (int, float)) or not 0 <= self.nll_beta <= 1:
            raise ValueError(f"nll_beta must be in [0, 1], got {self.nll_beta!r}")
        if not isinstance(self.min_variance, (int, float)) or not 0.0 < self.min_variance < 0.25:
            raise ValueError(f"min_variance must be in (0, 0.25), got {self.min_variance!r}")
        for name in ("use_history", "feed_back_outcomes", "use_session_inputs", "pre_state_in_history",
                     "wide_history", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.tie_word_embeddings:
            raise ValueError("the world model has no output embedding to tie; tie_word_embeddings must be False")
        for name in ("audio_features", "modes", "cohorts", "context_vocab"):
            names = getattr(self, name)
            if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ValueError(f"{name} must be distinct non-empty strings, got {names!r}")
        if not self.audio_features:
            raise ValueError("audio_features must name at least one feature")
        unknown = set(self.outcome_loss_weights) - set(OUTCOME_NAMES)
        if unknown:
            raise ValueError(f"outcome_loss_weights has unknown outcomes {sorted(unknown)}; known: {OUTCOME_NAMES}")
        for name, weight in self.outcome_loss_weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0 or weight != weight:
                raise ValueError(f"outcome_loss_weights[{name!r}] must be a number >= 0, got {weight!r}")
        if not any(self.outcome_loss_weights.values()):
            raise ValueError("outcome_loss_weights are all zero: the model would learn nothing")


__all__ = ["AmrsWorldModelConfig", "OUTCOME_NAMES"]
