"""Configuration of the AMRS recommender policy: architecture only (no device, paths or training settings).

This file is copied next to the weights by `save_pretrained` and imported on its own by
`AutoConfig.from_pretrained(..., trust_remote_code=True)`, so it imports nothing from amrs_hf.
"""

from __future__ import annotations

import difflib

from transformers import PreTrainedConfig


class AmrsPolicyConfig(PreTrainedConfig):
    r"""Architecture of [`AmrsPolicyForCausalLM`], a small causal transformer language model over the track
    tokenizer's vocabulary (`amrs_hf.data.tokenizer.build_track_tokenizer`): it reads `<bos>`, the session's mode and
    the listener's cohort, then the tracks heard so far, and predicts the next token; a recommendation is the next
    track tokens it generates.

    `vocab_size = len(tokenizer)` and the special ids are the tokenizer's. `num_layers` and `num_heads` are accepted
    as aliases of `num_hidden_layers` and `num_attention_heads` (the names transformers' caches read).

    Every value is checked when the config is built: a bad one raises `ValueError` (transformers itself would accept
    it silently), and an unknown keyword that looks like a misspelt field (`hiden_size`) is refused too.
    """

    model_type = "amrs_policy"
    attribute_map = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads"}

    # --- vocabulary (the track tokenizer's) ---
    vocab_size: int = 74  # len(tokenizer): 4 specials + 4 modes + 2 cohorts + 64 tracks by default
    pad_token_id: int = 0  # the tokenizer's <pad>
    bos_token_id: int = 1  # the tokenizer's <bos>: every sequence starts with it
    eos_token_id: int = 2  # the tokenizer's <eos>
    # --- transformer ---
    hidden_size: int = 64  # width of every token
    num_hidden_layers: int = 2  # causal transformer blocks
    num_attention_heads: int = 4  # must divide hidden_size
    intermediate_size: int = 256  # MLP width inside a block
    max_position_embeddings: int = 128  # longest sequence (<bos>, mode, cohort and tracks) the model reads
    dropout: float = 0.1  # residual, attention and embedding dropout
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights
    # --- output and generation ---
    tie_word_embeddings: bool = True  # the output layer shares the token embedding (one vector per track)
    use_cache: bool = True  # generate() keeps keys/values (DynamicCache) instead of recomputing the prefix

    def __post_init__(self, **kwargs):
        for alias, name in self.attribute_map.items():  # dataclass init does not see the aliases
            if alias in kwargs:
                setattr(self, name, kwargs.pop(alias))
        self._refuse_unknown(kwargs)
        self._check()
        super().__post_init__(**kwargs)

    def _refuse_unknown(self, kwargs: dict) -> None:
        fields = set(type(self).__dataclass_fields__)
        for key in kwargs:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
            if close and key not in fields:
                raise ValueError(f"unknown config argument {key!r}; did you mean {close[0]!r}?")

    def _check(self) -> None:
        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                             f"({self.num_attention_heads})")
        ids = {}
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not is_int(value) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} must be an id in [0, vocab_size={self.vocab_size}), got {value!r}")
            ids.setdefault(value, []).append(name)
        shared = [names for names in ids.values() if len(names) > 1]
        if shared:
            raise ValueError(f"{' and '.join(shared[0])} must be different tokens")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in ("tie_word_embeddings", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


__all__ = ["AmrsPolicyConfig"]
