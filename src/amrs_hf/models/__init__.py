"""Models: the world model and the recommender policy, as transformers `PreTrainedModel`s.

`register_auto_classes()` runs when `amrs_hf` is imported: it maps `model_type` to the classes for `AutoConfig` /
`AutoModel` / `AutoModelForCausalLM`, and marks the classes for `register_for_auto_class`, so `save_pretrained` writes
`auto_map` and copies the configuration and modeling files next to the weights (`trust_remote_code=True` then loads them without amrs_hf).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .policy import AmrsPolicyConfig, AmrsPolicyForCausalLM, AmrsPolicyModel
from .world_model import AmrsWorldModel, AmrsWorldModelConfig


def register_auto_classes() -> None:
    """Idempotent: safe to call more than once."""
    AutoConfig.register(AmrsWorldModelConfig.model_type, AmrsWorldModelConfig, exist_ok=True)
    AutoModel.register(AmrsWorldModelConfig, AmrsWorldModel, exist_ok=True)
    AmrsWorldModelConfig.register_for_auto_class()
    AmrsWorldModel.register_for_auto_class("AutoModel")
    AutoConfig.register(AmrsPolicyConfig.model_type, AmrsPolicyConfig, exist_ok=True)
    AutoModel.register(AmrsPolicyConfig, AmrsPolicyModel, exist_ok=True)
    AutoModelForCausalLM.register(AmrsPolicyConfig, AmrsPolicyForCausalLM, exist_ok=True)
    AmrsPolicyConfig.register_for_auto_class()
    AmrsPolicyForCausalLM.register_for_auto_class("AutoModelForCausalLM")


__all__ = ["AmrsPolicyConfig", "AmrsPolicyForCausalLM", "AmrsPolicyModel", "AmrsWorldModel", "AmrsWorldModelConfig",
           "register_auto_classes"]
