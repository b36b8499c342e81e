"""The AMRS world model: a causal transformer over a listener's plays that predicts how they respond to a track.

Layout (B listeners x T plays). A completed play t becomes one history token

    x_t = track_t + step_t + outcomes_t
        track_t    = ID embedding (zero for <pad>/<unk>) + projected audio features
        step_t     = mode + cohort + context embeddings
                     [+ projected session inputs: session-start flag, log1p(hours since the previous play), each
                        with a known flag; `use_session_inputs`]
        outcomes_t = projected (value, observed flag) of engagement, rating, valence, arousal
                     [+ projected pre-listening valence/arousal and their observed flags; `pre_state_in_history`]

and the transformer reads [start, x_0, ..., x_{T-1}] with a causal mask. The hidden state at token t ("the listener
state" before play t) has seen plays < t in full and nothing of play t. The prediction for play t combines that state
with what is known before listening (mode, cohort, context, the session inputs, pre-listening valence/arousal) and
the candidate track:

    head(state_t + step_t + pre_state_t, candidate track)  ->  engagement, like, valence ~ N(m, v), arousal ~ N(m, v)

With `wide_history` the listener state also ends with a summary of the outcomes read so far (the mean of each
observed outcome, whether any was, the last valence and arousal reported), which the head reads beside the
pre-state split by whether the play continues a session (a carried-over mood is not a fresh report); the cache carries
the running totals, so a rollout's step costs the same.

So a play's track and outcomes reach only later predictions; its step inputs (and, with `pre_state_in_history`, its
pre-state) reach its own prediction and later ones; without it, its pre-state reaches only its own. The hidden state after
the last play (`next_state`) is the state for recommending the next track; `score_candidates` scores any number of
tracks for any number of listeners from such states in one call. With `use_cache=True` the keys and values of the
tokens read so far are kept (`WorldModelCache`), so a rollout feeds one play per step; without it the whole history is
recomputed (the reference path; tests check they agree).

This file is copied next to the weights by `save_pretrained`; it imports only torch, transformers and its config.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_world_model import OUTCOME_NAMES, AmrsWorldModelConfig

# Raw head outputs, in order: engagement logit, like logit, valence mean logit, valence variance logit, arousal ...
_NUM_HEAD_OUTPUTS = 6
MAX_VARIANCE = 0.25  # the largest variance a value in [0, 1] can have
# `wide_history`: running totals per listener (sums and counts of the four outcomes, the last valence and arousal
# reported after a play), and the summary of them that ends the listener state (means, observed flags, last reports).
HISTORY_TOTALS = 2 * len(OUTCOME_NAMES) + 2
HISTORY_SUMMARY = 2 * len(OUTCOME_NAMES) + 2
# What the head reads of the summary and the step: logit-scale means and last reports, flags, and the pre-state of a
# play that continues a session (mood carried over from the track before) apart from one that opens a session.
_WIDE_HISTORY_INPUTS = HISTORY_SUMMARY + 4


class WorldModelCache:
    """Keys/values of every layer for the tokens read so far, plus what a continuation needs.

    `key_mask` (B, S) marks real tokens (a right-padded batch leaves holes that later tokens skip), `positions` (B,)
    counts the real tokens of each row (the next position id) and `last_state` (B, H) is the listener state after the
    last real play. A forward pass given a cache extends it in place and returns it; use `copy()` to branch. Without
    autograd the keys/values live in buffers grown by doubling (`reserve` pre-sizes them), so a step writes in place.
    """

    def __init__(self, num_layers: int):
        self.keys: list = [None] * num_layers
        self.values: list = [None] * num_layers
        self.key_mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.last_state: torch.Tensor | None = None
        self.history_totals: torch.Tensor | None = None  # (B, HISTORY_TOTALS) running sums/counts (`wide_history`)
        self.length = 0  # slots used (same for every row)

    def get_seq_length(self) -> int:
        return self.length

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' key/value (B, heads, n, head_dim) after the cached ones; return all of them."""
        end = self.length + key.shape[2]
        past_k, past_v = self.keys[layer_idx], self.values[layer_idx]
        if past_k is None or torch.is_grad_enabled():
            past_k = key if past_k is None else torch.cat([past_k[:, :, : self.length], key], dim=2)
            past_v = value if past_v is None else torch.cat([past_v[:, :, : self.length], value], dim=2)
        else:
            past_k, past_v = _fit(past_k, end), _fit(past_v, end)
            past_k[:, :, self.length : end] = key
            past_v[:, :, self.length : end] = value
        self.keys[layer_idx], self.values[layer_idx] = past_k, past_v
        return past_k[:, :, :end], past_v[:, :, :end]

    def commit(self, token_mask: torch.Tensor, last_state: torch.Tensor,
               history_totals: torch.Tensor | None = None) -> None:
        """Record the tokens just written by every layer: their mask (B, n), the new last state and, with
        `wide_history`, the running totals of the outcomes read so far."""
        n = token_mask.shape[1]
        if self.key_mask is None:
            self.key_mask = token_mask.clone()
        else:
            self.key_mask = _fit(self.key_mask, self.length + n, dim=1)
            self.key_mask[:, self.length : self.length + n] = token_mask
        added = token_mask.sum(1)
        self.positions = added if self.positions is None else self.positions + added
        self.length += n
        self.last_state = last_state
        self.history_totals = history_totals

    def reserve(self, extra: int) -> "WorldModelCache":
        """Pre-size the buffers for `extra` more tokens, so the next steps grow nothing."""
        for cache in (self.keys, self.values):
            for i, t in enumerate(cache):
                if t is not None:
                    cache[i] = _fit(t, self.length + extra, exact=True)
        if self.key_mask is not None:
            self.key_mask = _fit(self.key_mask, self.length + extra, dim=1, exact=True)
        return self

    def _map(self, fn) -> "WorldModelCache":
        new = WorldModelCache(len(self.keys))
        new.keys = [None if t is None else fn(t[:, :, : self.length]) for t in self.keys]
        new.values = [None if t is None else fn(t[:, :, : self.length]) for t in self.values]
        new.key_mask = None if self.key_mask is None else fn(self.key_mask[:, : self.length])
        new.positions = None if self.positions is None else fn(self.positions)
        new.last_state = None if self.last_state is None else fn(self.last_state)
        new.history_totals = None if self.history_totals is None else fn(self.history_totals)
        new.length = self.length
        return new

    def copy(self) -> "WorldModelCache":
        return self._map(torch.clone)

    def repeat_interleave(self, repeats: int) -> "WorldModelCache":
        """Each row `repeats` times in a row (row b becomes rows b*repeats ... b*repeats + repeats - 1)."""
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def select(self, index: torch.Tensor) -> "WorldModelCache":
        return self._map(lambda t: t.index_select(0, index))


def _logit(values: torch.Tensor) -> torch.Tensor:
    """Logits of values in [0, 1], clamped away from 0 and 1 (the scale of the head's outputs)."""
    return torch.logit(values.clamp(0.02, 0.98))


def _fit(t: torch.Tensor, size: int, dim: int = 2, exact: bool = False) -> torch.Tensor:
    """`t` with at least `size` slots along `dim` (grown by doubling unless `exact`; new slots are zero)."""
    if t.shape[dim] >= size:
        return t
    shape = list(t.shape)
    shape[dim] = size if exact else max(size, 2 * t.shape[dim])
    grown = t.new_zeros(shape)
    grown.narrow(dim, 0, t.shape[dim]).copy_(t)
    return grown


@dataclass
class WorldModelPredictions(ModelOutput):
    """Predicted outcomes, each of the batch shape ((B, T) per play, (B, N) per candidate)."""

    engagement: torch.FloatTensor | None = None  # expected fraction listened, (0, 1)
    like_prob: torch.FloatTensor | None = None  # probability of a like (rating = 1)
    valence_mean: torch.FloatTensor | None = None  # post-listening valence ~ Normal(mean, var), mean in (0, 1)
    valence_var: torch.FloatTensor | None = None
    arousal_mean: torch.FloatTensor | None = None
    arousal_var: torch.FloatTensor | None = None


@dataclass
class WorldModelStates(ModelOutput):
    """Listener states: `states` (B, T, H) before each given play, `next_state` (B, H) after the last real one."""

    states: torch.FloatTensor | None = None
    next_state: torch.FloatTensor | None = None
    cache: WorldModelCache | None = None


@dataclass
class AmrsWorldModelOutput(ModelOutput):
    """`loss` is the weighted sum of the per-outcome masked means; predictions are (B, T) for the given plays."""

    loss: torch.FloatTensor | None = None
    engagement_loss: torch.FloatTensor | None = None  # BCE with soft targets
    rating_loss: torch.FloatTensor | None = None  # BCE of like_prob against rating
    valence_loss: torch.FloatTensor | None = None  # Gaussian negative log-likelihood
    arousal_loss: torch.FloatTensor | None = None
    engagement: torch.FloatTensor | None = None
    like_prob: torch.FloatTensor | None = None
    valence_mean: torch.FloatTensor | None = None
    valence_var: torch.FloatTensor | None = None
    arousal_mean: torch.FloatTensor | None = None
    arousal_var: torch.FloatTensor | None = None
    states: torch.FloatTensor | None = None
    next_state: torch.FloatTensor | None = None
    cache: WorldModelCache | None = None

    def predictions(self) -> WorldModelPredictions:
        return WorldModelPredictions(**{name: self[name] for name in WorldModelPredictions.__dataclass_fields__})


class WorldModelAttention(nn.Module):
    def __init__(self, config: AmrsWorldModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.dropout
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj.is_residual_projection = True

    def forward(self, hidden_states, attention_mask, cache=None):
        batch, length, hidden = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        if cache is not None:
            key, value = cache.update(self.layer_idx, key, value)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, hidden))


class WorldModelBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: AmrsWorldModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = WorldModelAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.mlp_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.mlp_out.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, attention_mask, cache=None):
        hidden_states = hidden_states + self.dropout(self.attn(self.attn_norm(hidden_states), attention_mask, cache))
        mlp = self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(hidden_states))))
        return hidden_states + self.dropout(mlp)


class AmrsWorldModel(PreTrainedModel):
    config_class = AmrsWorldModelConfig
    base_model_prefix = "world_model"
    main_input_name = "track_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["WorldModelBlock"]

    def __init__(self, config: AmrsWorldModelConfig):
        super().__init__(config)
        hidden, num_features = config.hidden_size, config.num_audio_features
        # A track: ID embedding (dropped for <pad>/<unk>) + its audio features, normalised (see set_catalogue_features).
        self.track_embedding = nn.Embedding(config.vocab_size, hidden)
        self.feature_proj = nn.Linear(num_features, hidden)
        self.register_buffer("track_features", torch.zeros(config.vocab_size, num_features))
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        # What is known before listening: the step's mode, cohort and context (id 0 = unknown), and the pre-state.
        self.mode_embedding = nn.Embedding(config.num_modes, hidden)
        self.cohort_embedding = nn.Embedding(config.num_cohorts, hidden)
        self.context_embedding = nn.Embedding(config.num_contexts, hidden)
        self.pre_state_proj = nn.Linear(4, hidden)  # pre valence, pre arousal, their observed flags
        if config.use_session_inputs:  # session start, log1p(gap hours), their known flags
            self.session_proj = nn.Linear(4, hidden)
        if config.pre_state_in_history:  # a past play's pre-state, as part of its history token
            self.history_pre_state_proj = nn.Linear(4, hidden)
        # What a play revealed, fed back as history: four outcome values and four observed flags.
        self.outcome_proj = nn.Linear(2 * len(OUTCOME_NAMES), hidden)
        self.start_state = nn.Parameter(torch.zeros(hidden))
        self.position_embedding = nn.Embedding(config.max_position_embeddings, hidden)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(WorldModelBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        # Head: listener part and candidate part meet by addition, so N candidates x B listeners cost one MLP pass.
        self.head_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.head_listener = nn.Linear(hidden, hidden)
        self.head_candidate = nn.Linear(hidden, hidden)
        self.head_hidden = nn.Linear(hidden, hidden)
        self.head_out = nn.Linear(hidden, _NUM_HEAD_OUTPUTS)
        # Wide part: what the step itself shows (pre-state, the candidate's audio features) maps linearly straight onto
        # the outputs, so the plain relations a ridge regression finds are there from the first steps (the deep path
        # reaches them only through several small-initialised layers); the transformer and MLP add the rest.
        self.head_wide_state = nn.Linear(4, _NUM_HEAD_OUTPUTS)
        self.head_wide_track = nn.Linear(num_features, _NUM_HEAD_OUTPUTS, bias=False)
        if config.wide_history:  # running statistics of the history and the carried-over pre-state, to both paths
            self.head_wide_history = nn.Linear(_WIDE_HISTORY_INPUTS, _NUM_HEAD_OUTPUTS, bias=False)
            self.history_summary_proj = nn.Linear(_WIDE_HISTORY_INPUTS, hidden)
        self.head_dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            scale = math.sqrt(2 * self.config.num_hidden_layers) if getattr(module, "is_residual_projection", 0) else 1
            init.normal_(module.weight, mean=0.0, std=std / scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, AmrsWorldModel):
            init.normal_(module.start_state, mean=0.0, std=std)
            init.zeros_(module.track_features)
            init.zeros_(module.feature_mean)
            init.ones_(module.feature_std)

    @property
    def state_size(self) -> int:
        """Width of a listener state: the transformer's hidden size, plus the history summary with `wide_history`."""
        return self.config.hidden_size + (HISTORY_SUMMARY if self.config.wide_history else 0)

    def get_input_embeddings(self):
        return self.track_embedding

    def set_input_embeddings(self, value):
        self.track_embedding = value

    # ---- catalogue ----
    @torch.no_grad()
    def set_catalogue_features(self, features, feature_mean=None, feature_std=None) -> None:
        """Store the catalogue's normalised audio features, one row per tokenizer id (rows of non-track ids unused),
        so callers can pass track ids alone; optionally the raw mean/std that normalised them, so
        `normalize_audio_features` can map a new track's raw features the same way."""
        features = torch.as_tensor(features, dtype=self.track_features.dtype, device=self.track_features.device)
        if features.shape != self.track_features.shape:
            raise ValueError(f"catalogue features must be (vocab_size, num_audio_features) = "
                             f"{tuple(self.track_features.shape)}, got {tuple(features.shape)}")
        self.track_features.copy_(torch.nan_to_num(features))
        for buffer, value in ((self.feature_mean, feature_mean), (self.feature_std, feature_std)):
            if value is not None:
                buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype, device=buffer.device))

    def normalize_audio_features(self, raw: torch.Tensor) -> torch.Tensor:
        """z-score raw audio features (..., F) with the stored statistics; a missing (NaN) feature becomes 0."""
        return torch.nan_to_num((raw.to(self.feature_mean) - self.feature_mean) / self.feature_std)

    # ---- embeddings ----
    def track_inputs(self, track_ids, audio_features=None):
        """(..., F) normalised features of the tracks: given ones, else the stored catalogue's."""
        features = self.track_features[track_ids] if audio_features is None else audio_features
        return torch.nan_to_num(features.to(self.dtype))

    def embed_tracks(self, track_ids, audio_features=None):
        """(...) ids [+ (..., F) normalised features] -> (..., H); features default to the stored catalogue's."""
        audio_features = self.track_inputs(track_ids, audio_features)
        keep = (track_ids != self.config.pad_token_id) & (track_ids != self.config.unk_token_id)
        if self.training and self.config.track_id_dropout > 0:
            keep = keep & (torch.rand(track_ids.shape, device=track_ids.device) >= self.config.track_id_dropout)
        ids = self.track_embedding(track_ids) * keep.unsqueeze(-1).to(self.dtype)
        return ids + self.feature_proj(audio_features)

    def embed_step(self, shape, mode_ids=None, cohort_ids=None, context_ids=None, session_start=None, time_gap=None,
                   session_start_mask=None, time_gap_mask=None):
        """What is known of a play before listening, (...) -> (..., H): mode, cohort, context and, with
        `use_session_inputs`, the session inputs (`session_inputs`)."""
        device = self.start_state.device
        zeros = torch.zeros(shape, dtype=torch.long, device=device)
        step = (self.mode_embedding(zeros if mode_ids is None else mode_ids)
                + self.cohort_embedding(zeros if cohort_ids is None else cohort_ids)
                + self.context_embedding(zeros if context_ids is None else context_ids))
        if self.config.use_session_inputs:
            step = step + self.session_proj(
                self.session_inputs(shape, session_start, time_gap, session_start_mask, time_gap_mask))
        return step

    def session_inputs(self, shape, session_start=None, time_gap=None, session_start_mask=None, time_gap_mask=None):
        """(..., 4): session start (1 if the play opens a session, else 0), log1p(hours since the listener's previous
        play, negative gaps read as 0), and their known flags (0 where unknown: NaN or mask False)."""
        (start, start_known), (gap, gap_known) = (self._observed(session_start, session_start_mask, shape),
                                                  self._observed(time_gap, time_gap_mask, shape))
        return torch.stack([start, start_known.to(start), torch.log1p(gap.clamp(min=0.0)), gap_known.to(start)],
                           dim=-1)

    def pre_state_inputs(self, shape, pre_valence=None, pre_arousal=None, pre_valence_mask=None,
                         pre_arousal_mask=None):
        """(..., 4): pre valence, pre arousal (0 where unknown) and their observed flags."""
        (pv, mv), (pa, ma) = (self._observed(pre_valence, pre_valence_mask, shape),
                              self._observed(pre_arousal, pre_arousal_mask, shape))
        return torch.stack([pv, pa, mv.to(pv), ma.to(pv)], dim=-1)

    # ---- the history encoder ----
    def listener_states(self, track_ids, audio_features=None, engagement=None, rating=None, valence=None,
                        arousal=None, engagement_mask=None, rating_mask=None, valence_mask=None, arousal_mask=None,
                        mode_ids=None, cohort_ids=None, context_ids=None, attention_mask=None, cache=None,
                        use_cache=False, pre_valence=None, pre_arousal=None, pre_valence_mask=None,
                        pre_arousal_mask=None, session_start=None, time_gap=None, session_start_mask=None,
                        time_gap_mask=None) -> WorldModelStates:
        """Encode plays (B, T) that follow whatever `cache` holds (nothing: the history starts here).

        Outcomes, pre-states and session inputs (`session_start` 0/1, `time_gap` in hours since the listener's
        previous play) are (B, T) floats; a value is missing where its mask is False or, without a mask, where it is
        NaN. The pre-state is read only with `pre_state_in_history`, the session inputs only with
        `use_session_inputs`.
        `attention_mask` (B, T) must be right-padded (real plays first). Returns the states before each play and
        the state after the last real play of each row; with `use_cache` (or a `cache`) the cache extended by these
        plays."""
        batch, length = track_ids.shape
        mask = (torch.ones_like(track_ids, dtype=torch.bool) if attention_mask is None
                else attention_mask.to(device=track_ids.device, dtype=torch.bool))
        if (~mask[:, :-1] & mask[:, 1:]).any():
            raise ValueError("attention_mask must be right-padded: real plays first, then padding")
        use_cache = use_cache or cache is not None
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            raise ValueError("use_cache is incompatible with gradient checkpointing in training")
        if not self.config.use_history:  # ablation: one state for every step, the start token's
            state = self._run(self.start_state.expand(batch, 1, -1), torch.ones(batch, 1, 1, 1, dtype=torch.bool,
                                                                                 device=mask.device), None)[:, 0]
            if self.config.wide_history:  # nothing of the history: an empty summary
                state = torch.cat([state, state.new_zeros(batch, HISTORY_SUMMARY)], dim=-1)
            if use_cache:
                cache = cache if cache is not None else WorldModelCache(self.config.num_hidden_layers)
                cache.last_state = state
            return WorldModelStates(states=state[:, None].expand(batch, length, -1), next_state=state,
                                    cache=cache if use_cache else None)

        plays = self.embed_tracks(track_ids, audio_features) + self.embed_step(
            (batch, length), mode_ids, cohort_ids, context_ids, session_start, time_gap, session_start_mask,
            time_gap_mask)
        if self.config.pre_state_in_history:
            plays = plays + self.history_pre_state_proj(self.pre_state_inputs(
                (batch, length), pre_valence, pre_arousal, pre_valence_mask, pre_arousal_mask))
        observed = [self._observed(v, m, (batch, length)) for v, m in (
            (engagement, engagement_mask), (rating, rating_mask), (valence, valence_mask), (arousal, arousal_mask))]
        if self.config.feed_back_outcomes:
            values = [v for v, _ in observed] + [m.to(plays.dtype) for _, m in observed]
            plays = plays + self.outcome_proj(torch.stack(values, dim=-1))
        if cache is None:  # the reference path: the start token, then every play
            tokens = torch.cat([self.start_state.expand(batch, 1, -1), plays], dim=1)
            token_mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
            start_positions, past_mask = torch.zeros(batch, dtype=torch.long, device=mask.device), None
        else:
            tokens, token_mask = plays, mask
            start_positions, past_mask = cache.positions, cache.key_mask[:, : cache.length]
        positions = start_positions[:, None] + torch.arange(tokens.shape[1], device=mask.device)
        if (positions.masked_fill(~token_mask, 0) >= self.config.max_position_embeddings).any():
            raise ValueError(f"history longer than max_position_embeddings={self.config.max_position_embeddings} "
                             "(start token included)")
        hidden = tokens + self.position_embedding(positions.clamp(max=self.config.max_position_embeddings - 1))
        key_mask = token_mask if past_mask is None else torch.cat([past_mask, token_mask], dim=1)
        past = 0 if past_mask is None else past_mask.shape[1]
        causal = torch.ones(tokens.shape[1], key_mask.shape[1], dtype=torch.bool, device=mask.device).tril(past)
        attn_mask = causal[None, None] & key_mask[:, None, None, :]
        if use_cache and cache is None:
            cache = WorldModelCache(self.config.num_hidden_layers)
        hidden = self._run(self.embedding_dropout(hidden), attn_mask, cache if use_cache else None)

        totals = None
        if self.config.wide_history:  # the state ends with the summary of the outcomes read up to that token
            values = torch.stack([v for v, _ in observed], dim=-1)
            seen = torch.stack([m for _, m in observed], dim=-1) & mask[..., None] & self.config.feed_back_outcomes
            totals = self._history_totals(values, seen, None if cache is None else cache.history_totals)
            if past_mask is None:  # the start token has read nothing
                totals = torch.cat([totals.new_zeros(batch, 1, HISTORY_TOTALS), totals], dim=1)
            hidden = torch.cat([hidden, self._history_summary(totals)], dim=-1)
        rows, real = torch.arange(batch, device=mask.device), mask.sum(1)
        if past_mask is None:  # token t is the state before play t; token `real` follows the last real play
            states, next_state = hidden[:, :-1], hidden[rows, real]
        else:
            states = torch.cat([cache.last_state[:, None], hidden[:, :-1]], dim=1)
            next_state = torch.where((real > 0)[:, None], hidden[rows, (real - 1).clamp(min=0)], cache.last_state)
        if use_cache:  # padding adds nothing to the totals, so the last token's are the rows' own
            cache.commit(token_mask, next_state, None if totals is None else totals[:, -1])
        return WorldModelStates(states=states, next_state=next_state, cache=cache if use_cache else None)

    @staticmethod
    def _history_totals(values, seen, initial=None):
        """Running totals (B, n, HISTORY_TOTALS) after each of n plays, continuing `initial` (B, HISTORY_TOTALS):
        the sums and counts of the observed outcomes (B, n, 4), then the last valence and arousal observed."""
        weight = seen.to(values.dtype)
        sums, counts = torch.cumsum(values * weight, dim=1), torch.cumsum(weight, dim=1)
        steps = torch.arange(values.shape[1], device=values.device)[None, :, None].expand_as(seen[..., 2:])
        last_index = torch.where(seen[..., 2:], steps, -1).cummax(dim=1).values
        last = values[..., 2:].gather(1, last_index.clamp(min=0))
        if initial is None:
            last = torch.where(last_index >= 0, last, 0.0)
        else:
            n = len(OUTCOME_NAMES)
            sums, counts = sums + initial[:, None, :n], counts + initial[:, None, n : 2 * n]
            last = torch.where(last_index >= 0, last, initial[:, None, 2 * n :])
        return torch.cat([sums, counts, last], dim=-1)

    @staticmethod
    def _history_summary(totals):
        """(..., HISTORY_SUMMARY) from running totals: the mean of each outcome observed so far, whether any was,
        and the last valence and arousal reported (0 where none)."""
        n = len(OUTCOME_NAMES)
        sums, counts, last = totals[..., :n], totals[..., n : 2 * n], totals[..., 2 * n :]
        return torch.cat([sums / counts.clamp(min=1.0), (counts > 0).to(totals.dtype), last], dim=-1)

    def _run(self, hidden, attn_mask, cache):
        for layer in self.layers:
            hidden = layer(hidden, attn_mask, cache=cache)
        return self.norm(hidden)

    # ---- the prediction head ----
    def score_candidates(self, states, candidate_ids, candidate_features=None, *, pre_valence=None, pre_arousal=None,
                         pre_valence_mask=None, pre_arousal_mask=None, mode_ids=None, cohort_ids=None,
                         context_ids=None, session_start=None, time_gap=None, session_start_mask=None,
                         time_gap_mask=None) -> WorldModelPredictions:
        """Predictions for N candidates for each of B listeners in one batched call.

        `states` (B, H) (e.g. `next_state`); `candidate_ids` (N,) shared or (B, N) per listener, with optional
        normalised `candidate_features` (N, F) / (B, N, F) for tracks outside the vocabulary (id <unk>); step inputs
        (pre-state, mode, cohort, context, session start, time gap) are (B,). Returns (B, N) predictions."""
        if states.shape[-1] != self.state_size:
            raise ValueError(f"states must be (B, {self.state_size}) listener states (`listener_states(...).next_state`)"
                             f", got {tuple(states.shape)}")
        batch = states.shape[0]
        listener, listener_wide = self._listener(states, (batch,), pre_valence, pre_arousal, pre_valence_mask,
                                                 pre_arousal_mask, mode_ids, cohort_ids, context_ids, session_start,
                                                 time_gap, session_start_mask, time_gap_mask)
        candidates, candidates_wide = self._candidate(candidate_ids, candidate_features)
        if candidates.dim() == 2:
            candidates, candidates_wide = candidates.unsqueeze(0), candidates_wide.unsqueeze(0)
        return self._predict(listener[:, None] + candidates, listener_wide[:, None] + candidates_wide)[0]

    def _listener(self, states, shape, pre_valence, pre_arousal, pre_valence_mask, pre_arousal_mask, mode_ids,
                  cohort_ids, context_ids, session_start=None, time_gap=None, session_start_mask=None,
                  time_gap_mask=None):
        """The listener's side of the head: (deep part (..., H), wide part (..., outputs))."""
        pre_state = self.pre_state_inputs(shape, pre_valence, pre_arousal, pre_valence_mask, pre_arousal_mask)
        known = self.embed_step(shape, mode_ids, cohort_ids, context_ids, session_start, time_gap,
                                session_start_mask, time_gap_mask) + self.pre_state_proj(pre_state)
        # The wide part reads the pre-state as logits, the scale of the head's outputs (post = sigmoid(a·logit(pre) + …)).
        values, flags = pre_state[..., :2], pre_state[..., 2:]
        wide_pre = torch.cat([_logit(values) * flags, flags], dim=-1)
        wide = self.head_wide_state(wide_pre)
        if self.config.wide_history:
            states, summary = states[..., : self.config.hidden_size], states[..., self.config.hidden_size :]
            history = self._wide_history_inputs(summary, wide_pre, shape, session_start, session_start_mask)
            wide = wide + self.head_wide_history(history)
            known = known + self.history_summary_proj(history)
        return self.head_listener(self.head_norm(states + known)), wide

    def _wide_history_inputs(self, summary, wide_pre, shape, session_start=None, session_start_mask=None):
        """(..., _WIDE_HISTORY_INPUTS): the history summary on the head's scale (engagement and like means, logits
        of the valence/arousal means and last reports, each zero where nothing was observed, the observed flags),
        then the logit pre-state and its flags again where the play continues a session (session start known and 0:
        the mood carried over from the track before, which relates to the outcome unlike a fresh report does)."""
        means, flags, last = summary[..., :4], summary[..., 4:8], summary[..., 8:]
        affect_flags = flags[..., 2:]
        parts = [means[..., :2] * flags[..., :2], _logit(means[..., 2:]) * affect_flags, _logit(last) * affect_flags,
                 flags]
        continuing = torch.zeros(shape, dtype=summary.dtype, device=summary.device)
        if self.config.use_session_inputs:
            start, known = self._observed(session_start, session_start_mask, shape)
            continuing = (known & (start == 0)).to(summary.dtype)
        return torch.cat([*parts, wide_pre * continuing[..., None]], dim=-1)

    def _candidate(self, track_ids, audio_features):
        """The candidate's side of the head: (deep part (..., H), wide part (..., outputs))."""
        features = self.track_inputs(track_ids, audio_features)
        return self.head_candidate(self.embed_tracks(track_ids, features)), self.head_wide_track(features)

    def _predict(self, joint, wide):
        raw = self.head_out(F.gelu(self.head_hidden(self.head_dropout(F.gelu(joint))))) + wide
        eng, like, v_mean, v_var, a_mean, a_var = raw.unbind(-1)

        def variance(logit):
            return self.config.min_variance + (MAX_VARIANCE - self.config.min_variance) * torch.sigmoid(logit)

        predictions = WorldModelPredictions(
            engagement=torch.sigmoid(eng), like_prob=torch.sigmoid(like), valence_mean=torch.sigmoid(v_mean),
            valence_var=variance(v_var), arousal_mean=torch.sigmoid(a_mean), arousal_var=variance(a_var))
        return predictions, eng, like

    # ---- the full model ----
    def forward(self, track_ids, audio_features=None, engagement=None, rating=None, valence=None, arousal=None,
                engagement_mask=None, rating_mask=None, valence_mask=None, arousal_mask=None, mode_ids=None,
                cohort_ids=None, context_ids=None, pre_valence=None, pre_arousal=None, pre_valence_mask=None,
                pre_arousal_mask=None, attention_mask=None, cache=None, use_cache=False, return_loss=None,
                return_dict=True, session_start=None, time_gap=None, session_start_mask=None, time_gap_mask=None,
                play_weight=None):
        """Predict every given play from the plays before it; the loss compares the predictions with the observed
        outcomes of the same plays (masked per outcome and by `attention_mask`). See `listener_states` for the
        inputs; the pre-state and session inputs are (B, T) like the outcomes. `play_weight` (B, T), optional,
        weighs each play's loss (e.g. inverse propensities): each outcome's loss is then the weighted mean over the
        plays where it is observed. `return_loss` defaults to "if any outcome is given"."""
        batch, length = track_ids.shape
        session = dict(session_start=session_start, time_gap=time_gap, session_start_mask=session_start_mask,
                       time_gap_mask=time_gap_mask)
        encoded = self.listener_states(
            track_ids, audio_features, engagement, rating, valence, arousal, engagement_mask, rating_mask,
            valence_mask, arousal_mask, mode_ids, cohort_ids, context_ids, attention_mask, cache, use_cache,
            pre_valence=pre_valence, pre_arousal=pre_arousal, pre_valence_mask=pre_valence_mask,
            pre_arousal_mask=pre_arousal_mask, **session)
        listener, listener_wide = self._listener(encoded.states, (batch, length), pre_valence, pre_arousal,
                                                 pre_valence_mask, pre_arousal_mask, mode_ids, cohort_ids, context_ids,
                                                 **session)
        candidate, candidate_wide = self._candidate(track_ids, audio_features)
        predictions, eng_logit, like_logit = self._predict(listener + candidate, listener_wide + candidate_wide)

        losses = {}
        targets = {"engagement": (engagement, engagement_mask), "rating": (rating, rating_mask),
                   "valence": (valence, valence_mask), "arousal": (arousal, arousal_mask)}
        if return_loss is None:
            return_loss = any(value is not None for value, _ in targets.values())
        if return_loss:
            valid = (torch.ones_like(track_ids, dtype=torch.bool) if attention_mask is None
                     else attention_mask.to(torch.bool))
            weight = (torch.ones(batch, length, dtype=self.dtype, device=track_ids.device) if play_weight is None
                      else self._play_weight(play_weight, (batch, length)))
            for name, (value, mask) in targets.items():
                value, observed = self._observed(value, mask, (batch, length))
                observed = observed & valid
                if name in ("engagement", "rating"):
                    logit = eng_logit if name == "engagement" else like_logit
                    per_play = F.binary_cross_entropy_with_logits(logit, value, reduction="none")
                else:
                    mean, var = predictions[f"{name}_mean"], predictions[f"{name}_var"]
                    per_play = 0.5 * (math.log(2 * math.pi) + torch.log(var) + (value - mean) ** 2 / var)
                    if self.config.nll_beta:  # β-NLL: low-variance plays no longer dominate the mean's fit
                        per_play = per_play * var.detach() ** self.config.nll_beta
                weights = torch.where(observed, weight, 0.0)
                total = weights.sum()
                losses[name] = (weights * torch.where(observed, per_play, 0.0)).sum() / torch.where(
                    total > 0, total, torch.ones_like(total))
            weights = self.config.outcome_loss_weights
            losses["total"] = sum(weights[name] * losses[name] for name in OUTCOME_NAMES)

        output = AmrsWorldModelOutput(
            loss=losses.get("total"), engagement_loss=losses.get("engagement"), rating_loss=losses.get("rating"),
            valence_loss=losses.get("valence"), arousal_loss=losses.get("arousal"), **predictions,
            states=encoded.states, next_state=encoded.next_state, cache=encoded.cache)
        return output if return_dict else output.to_tuple()

    # ---- helpers ----
    def _play_weight(self, play_weight, shape) -> torch.Tensor:
        """`play_weight` as (B, T) loss weights: NaN (padding) weighs 0; anything negative or infinite is refused."""
        weight = torch.as_tensor(play_weight, device=self.start_state.device).to(self.dtype)
        if tuple(weight.shape) != tuple(shape):
            raise ValueError(f"play_weight must be (batch, plays) = {tuple(shape)} like the outcomes, got "
                             f"{tuple(weight.shape)}")
        weight = torch.where(torch.isnan(weight), 0.0, weight)
        if not bool(((weight >= 0) & torch.isfinite(weight)).all()):
            raise ValueError("play_weight must be finite and >= 0 (NaN marks padding)")
        return weight

    def _observed(self, value, mask, shape):
        """(value with missing entries set to 0, observed mask); missing = mask False, or NaN when no mask."""
        device = self.start_state.device
        if value is None:
            return (torch.zeros(shape, dtype=self.dtype, device=device),
                    torch.zeros(shape, dtype=torch.bool, device=device))
        value = torch.as_tensor(value, device=device).to(self.dtype)
        observed = ~torch.isnan(value)
        if mask is not None:
            observed = observed & mask.to(device=device, dtype=torch.bool)
        return torch.where(observed, value, 0.0), observed


__all__ = ["AmrsWorldModel", "AmrsWorldModelOutput", "WorldModelCache", "WorldModelPredictions", "WorldModelStates"]
