"""DPO fine-tuning of the cloned policy with TRL's `DPOTrainer`: `AmrsDPOConfig` (parsed from YAML + command line by
`amrs dpo`) and `run_dpo`. The command itself lives in `amrs_hf.scripts.dpo`.

Preference pairs are text in the track tokenizer's vocabulary, a `datasets` folder (`datasets.load_from_disk`) with
string columns

    prompt    "<mode:calm> <cohort:clinical> t:874 t:707"      (`tokenization_policy.prompt_text`)
    chosen    " t:12 t:55 t:9"                                  the continuation the world model scores higher
    rejected  " t:3 t:12 t:81"

TRL tokenizes `prompt + chosen`, so a completion must start with a space (else "t:707t:12" is one unknown token):
`run_dpo` adds the space where it is missing, and `<bos>` in front of a prompt that lacks it (the policy was cloned on
sequences that start with it). The reference is a frozen copy of the cloned policy, passed to the trainer explicitly.
With `use_lora`, low-rank adapters (peft) are trained on the attention and MLP projections and merged into the
weights before saving, so the output folder is a plain policy that loads with `AutoModelForCausalLM`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import datasets
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from .tokenization_policy import with_bos

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class AmrsDPOConfig(DPOConfig):
    """`trl.DPOConfig` with the policy's inputs and CPU-safe defaults (fp32, no gradient checkpointing, no trackers,
    a learning rate for a small model trained from scratch rather than a billion-parameter LLM). Trackers are off
    unless `report_to` names them (transformers 5's default)."""

    policy_path: Optional[str] = field(
        default=None, metadata={"help": "Folder of the cloned policy (amrs train-policy output): model and tokenizer."}
    )
    preferences_path: Optional[str] = field(
        default=None,
        metadata={"help": "datasets.load_from_disk folder with string columns prompt, chosen, rejected (a "
                          "DatasetDict's 'train' split is used, and its 'validation'/'test' split for evaluation)."},
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft), merged before saving."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["qkv_proj", "out_proj", "mlp_in", "mlp_out"],
        metadata={"help": "Module names that get adapters (the policy's attention and MLP projections)."},
    )
    rounds: int = field(
        default=1,
        metadata={"help": "Rounds of iterative DPO (pairs re-scored between rounds; driven by the pipeline)."},
    )
    # Defaults overridden from DPOConfig / TrainingArguments.
    output_dir: str = field(default="outputs/policy_dpo", metadata={"help": "Where the fine-tuned policy is written."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate."})
    bf16: Optional[bool] = field(default=False, metadata={"help": "bf16 mixed precision (needs a GPU or use_cpu)."})
    gradient_checkpointing: Optional[bool] = field(  # TRL turns it on; off here (use activation_checkpointing)
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (recompute to save memory)."}
    )
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints during training (the end is saved)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Preference pairs per batch."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the preference pairs."})

    def __post_init__(self):
        super().__post_init__()
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.use_lora and (self.lora_r < 1 or not self.lora_target_modules):
            raise ValueError("use_lora needs lora_r >= 1 and at least one lora_target_modules entry")


def _normalise(example: dict, bos_token: str) -> dict:
    spaced = {name: example[name] if example[name].startswith(" ") else " " + example[name]
              for name in ("chosen", "rejected")}
    return {"prompt": with_bos(example["prompt"], bos_token), **spaced}


def prepare_preferences(dataset: datasets.Dataset, tokenizer, name: str = "preferences") -> datasets.Dataset:
    """Check the pairs (columns, non-empty text, every token in the vocabulary) and normalise them: `<bos>` before
    each prompt, a leading space before each completion. Raises naming the row and column of the first bad value."""
    missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it needs string columns {list(PREFERENCE_COLUMNS)} "
                         f"(it has {dataset.column_names})")
    vocab = tokenizer.get_vocab()
    for column in PREFERENCE_COLUMNS:
        for row, text in enumerate(dataset[column]):
            if not isinstance(text, str):
                raise ValueError(f"{name} row {row} column {column!r} must be a string, got {text!r}")
            unknown = [tok for tok in text.split() if tok not in vocab]
            if unknown or (column != "prompt" and not text.split()):
                what = f"tokens outside the policy's vocabulary {unknown[:3]}" if unknown else "no track"
                raise ValueError(f"{name} row {row} column {column!r} has {what}: {text!r} (write tracks as t:<id> "
                                 "of the catalogue the policy was cloned on, separated by spaces)")
    return dataset.map(_normalise, fn_kwargs={"bos_token": tokenizer.bos_token}, desc="Normalising preferences")


def load_preferences(path: str):
    """(train, eval or None) from a `save_to_disk` folder: a Dataset, or a DatasetDict with a 'train' split."""
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"preferences_path {path!r} is not a folder written by Dataset.save_to_disk")
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(f"{path} holds splits {list(loaded)}; the pairs to learn from must be under 'train'")
        return loaded["train"], loaded.get("validation", loaded.get("test"))
    return loaded, None


def build_dpo_trainer(config: AmrsDPOConfig, policy=None, tokenizer=None, train_dataset=None, eval_dataset=None,
                      reference=None) -> DPOTrainer:
    """TRL's `DPOTrainer` for `policy` (default: loaded from `config.policy_path`) on the preference pairs
    `train_dataset` (default: loaded from `config.preferences_path`) against `reference` (default: the policy as
    given; iterative DPO passes the cloned policy so every round stays anchored to it). The trainer holds a frozen
    copy of the reference (`trainer.ref_model`), so the caller's model is never touched by it."""
    if policy is None or tokenizer is None:
        if not config.policy_path:
            raise ValueError("give a policy and tokenizer, or policy_path (an `amrs train-policy` output folder)")
        if not os.path.isfile(os.path.join(config.policy_path, "config.json")):
            raise FileNotFoundError(
                f"policy_path {config.policy_path!r} is not a saved policy (no config.json there): give the folder "
                "written by `amrs train-policy` (its --output_dir) or a pipeline's DIR/policy_bc")
        policy = policy or AutoModelForCausalLM.from_pretrained(config.policy_path)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.policy_path)
    if train_dataset is None:
        if not config.preferences_path:
            raise ValueError("give train_dataset, or preferences_path (a Dataset.save_to_disk folder)")
        train_dataset, loaded_eval = load_preferences(config.preferences_path)
        eval_dataset = eval_dataset if eval_dataset is not None else loaded_eval
    train_dataset = prepare_preferences(train_dataset, tokenizer, "train_dataset")
    if eval_dataset is not None:
        eval_dataset = prepare_preferences(eval_dataset, tokenizer, "eval_dataset")
    limit = policy.config.max_position_embeddings
    if config.max_length is None or config.max_length > limit:
        config.max_length = limit  # TRL truncates prompt + completion to what the policy can read

    reference = copy.deepcopy(policy if reference is None else reference).eval().requires_grad_(False)
    peft_config = None
    if config.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=list(config.lora_target_modules), task_type="CAUSAL_LM")
    return DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=train_dataset,
                      eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft_config)


def run_dpo(config: AmrsDPOConfig, policy=None, tokenizer=None, train_dataset=None, eval_dataset=None,
            reference=None):
    """Fine-tune `policy` with DPO (`build_dpo_trainer`: same arguments and defaults), save the result (LoRA merged),
    its tokenizer and `train_config.json` to `config.output_dir`, and return the trained model."""
    trainer = build_dpo_trainer(config, policy, tokenizer, train_dataset, eval_dataset, reference)
    tokenizer = trainer.processing_class
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if config.use_lora:
        model = model.merge_and_unload()
    model.__dict__.pop("forward", None)  # TRL patched forward (fused LM head) on the instance; restore the class's
    if trainer.args.should_save:
        os.makedirs(config.output_dir, exist_ok=True)
        model.save_pretrained(config.output_dir)
        tokenizer.save_pretrained(config.output_dir)
        with open(os.path.join(config.output_dir, TRAIN_CONFIG_FILE), "w") as f:
            json.dump({"dpo": config.to_dict()}, f, indent=2, default=str)
    return model


__all__ = ["AmrsDPOConfig", "build_dpo_trainer", "load_preferences", "prepare_preferences", "run_dpo"]
