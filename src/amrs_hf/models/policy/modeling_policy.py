"""The AMRS recommender policy: a small causal transformer language model over track tokens.

A listener's session is a sentence of the track tokenizer's vocabulary,

    <bos> <mode:calm> <cohort:clinical> t:874 t:707 t:12 ...

and the policy is a GPT-style decoder (learned positions, pre-norm blocks, tied input/output embeddings) trained to
predict each next token. Recommending is generating the next track tokens (`generate()`, with
`tokenization_policy.TrackOnlyLogitsProcessor` so only tracks come out). It is cloned from logged sessions and
fine-tuned with DPO (TRL's `DPOTrainer`, which reads `model.base_model(...).last_hidden_state` and
`get_output_embeddings()`), so it keeps the layout of transformers' decoder LMs: a base `AmrsPolicyModel` under
`model` and a plain `nn.Linear` `lm_head`.

Keys and values of the tokens read so far live in transformers' `DynamicCache` during `generate()` (argument
`cache`, as in transformers 5's own models); `use_cache=False` recomputes the whole prefix each step (the reference
path; a test checks greedy generation agrees).

This file is copied next to the weights by `save_pretrained`; it imports only torch, transformers and its config.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_policy import AmrsPolicyConfig


class PolicyAttention(nn.Module):
    """Multi-head causal self-attention (PyTorch SDPA); new keys/values are appended to `cache` when given."""

    def __init__(self, config: AmrsPolicyConfig, layer_idx: int):
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
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, hidden))


class PolicyBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: AmrsPolicyConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = PolicyAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.mlp_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.mlp_out.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, attention_mask, cache=None):
        hidden_states = hidden_states + self.dropout(self.attn(self.attn_norm(hidden_states), attention_mask, cache))
        mlp = self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(hidden_states))))
        return hidden_states + self.dropout(mlp)


class AmrsPolicyPreTrainedModel(PreTrainedModel):
    config_class = AmrsPolicyConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PolicyBlock"]
    _supports_sdpa = True

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


class AmrsPolicyModel(AmrsPolicyPreTrainedModel):
    """The decoder without the output layer: token + position embeddings, blocks, final LayerNorm."""

    def __init__(self, config: AmrsPolicyConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(PolicyBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache: Cache | None = None,
                inputs_embeds=None, use_cache=None, **kwargs) -> BaseModelOutputWithPast:
        """`input_ids` (B, T) follow whatever `cache` holds. `attention_mask` (B, past + T) marks real tokens (left or
        right padding); positions count real tokens only, so a left-padded prompt starts at position 0."""
        cache = kwargs.pop("past_key_values", cache)  # the pre-5 name, still accepted
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = hidden.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False  # recomputing a checkpointed block would append its keys to the cache twice
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        device = hidden.device
        if attention_mask is None:
            key_mask = torch.ones(batch, past + length, dtype=torch.bool, device=device)
        else:
            key_mask = attention_mask.to(device=device, dtype=torch.bool)
            if key_mask.shape != (batch, past + length):
                raise ValueError(f"attention_mask must be (batch, cached + new tokens) = {(batch, past + length)}, "
                                 f"got {tuple(key_mask.shape)}")
        if position_ids is None:
            position_ids = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        if (position_ids >= self.config.max_position_embeddings).any():
            raise ValueError(f"sequence longer than max_position_embeddings={self.config.max_position_embeddings}")
        hidden = self.embedding_dropout(hidden + self.position_embedding(position_ids))
        # Query i (absolute position past + i) sees real keys up to itself; it always sees itself, so a padding
        # query has a finite (unused) output instead of NaN.
        query_pos = past + torch.arange(length, device=device)
        key_pos = torch.arange(past + length, device=device)
        causal = key_pos[None, :] <= query_pos[:, None]
        attn_mask = (causal[None] & key_mask[:, None, :]) | (key_pos[None, :] == query_pos[:, None])[None]
        attn_mask = attn_mask[:, None]  # (B, 1, T, past + T)
        for layer in self.layers:
            hidden = layer(hidden, attn_mask, cache=cache if use_cache else None)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden), cache=cache if use_cache else None)


class AmrsPolicyForCausalLM(AmrsPolicyPreTrainedModel, GenerationMixin):
    """The policy: `AmrsPolicyModel` plus a linear output layer over the whole vocabulary (tied to the token
    embedding when `config.tie_word_embeddings`). `labels` (B, T) give the next-token loss, -100 where ignored;
    they are shifted inside, as in transformers' causal LMs."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AmrsPolicyConfig):
        super().__init__(config)
        self.model = AmrsPolicyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache: Cache | None = None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutputWithPast:
        cache = kwargs.pop("past_key_values", cache)  # the pre-5 name, still accepted
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache)
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)


__all__ = ["AmrsPolicyForCausalLM", "AmrsPolicyModel", "AmrsPolicyPreTrainedModel"]
