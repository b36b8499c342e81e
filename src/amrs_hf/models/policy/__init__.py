"""The recommender policy: a causal transformer LM over track tokens, cloned from logs and fine-tuned with DPO."""

from .configuration_policy import AmrsPolicyConfig
from .modeling_policy import AmrsPolicyForCausalLM, AmrsPolicyModel, AmrsPolicyPreTrainedModel
from .tokenization_policy import TrackOnlyLogitsProcessor, completion_log_probs, encode_prompts, prompt_text, recommend

__all__ = [
    "AmrsPolicyConfig",
    "AmrsPolicyForCausalLM",
    "AmrsPolicyModel",
    "AmrsPolicyPreTrainedModel",
    "TrackOnlyLogitsProcessor",
    "completion_log_probs",
    "encode_prompts",
    "prompt_text",
    "recommend",
]
