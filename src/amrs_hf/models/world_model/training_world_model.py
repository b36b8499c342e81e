"""Training the world model with the transformers `Trainer`: the argument dataclasses (parsed from YAML + command line
by `amrs train-world-model`) and `train_world_model`, which evaluation code (cold-start fidelity, the synthetic check)
calls too. The command itself lives in `amrs_hf.scripts.train_world_model`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional, Union

import datasets
from transformers import Trainer, TrainingArguments, set_seed

from amrs_hf.data import ListeningLog
from amrs_hf.data.splits import cold_start_split, temporal_split
from amrs_hf.data.tokenizer import build_track_tokenizer

from .modeling_world_model import AmrsWorldModel
from .processing_world_model import (
    WorldModelCollator,
    inverse_propensity_weights,
    set_catalogue,
    user_sequences,
    world_model_config,
)


def _as_dict(value, name: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"--{name} must be a JSON object, e.g. '{{\"num_plays\": 5000}}': {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {value!r}")
    return value


@dataclass
class DataArguments:
    """Which log to learn from and how to hold listeners out."""

    data_source: str = field(default="synthetic", metadata={"help": "Data source: situnes, mssd, generic, synthetic."})
    data_path: Optional[str] = field(default=None, metadata={"help": "The source's folder or file."})
    data_options: Union[dict, str, None] = field(  # `dict | str | None` makes HfArgumentParser take a string
        default=None, metadata={"help": "Options of the source, e.g. {\"num_plays\": 20000} (JSON on the CLI)."}
    )
    split: str = field(
        default="cold_start",
        metadata={"help": "cold_start (user-disjoint), temporal (global cutoff), or none (train on everything)."},
    )
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train, valid, test shares."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the cold-start split."})
    max_history: int = field(default=128, metadata={"help": "Plays per training window of a listener's history."})
    engagement_threshold: float = field(
        default=0.8, metadata={"help": "Engagement at or above which a play counts as listened through (metrics)."}
    )

    def __post_init__(self):
        self.data_options = _as_dict(self.data_options, "data_options")
        if self.split not in ("cold_start", "temporal", "none"):
            raise ValueError(f"split must be cold_start, temporal or none, got {self.split!r}")


@dataclass
class WorldModelArguments:
    """Architecture of the world model (see `AmrsWorldModelConfig` for each field's meaning)."""

    hidden_size: int = field(default=64, metadata={"help": "Width of tokens and listener states."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Causal transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (divide hidden_size)."})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width."})
    max_position_embeddings: int = field(
        default=256,
        metadata={"help": "Longest history (+1 start token) the model reads, rollouts included; >= max_history + 1. "
                          "Positions beyond the training windows' length are untrained."},
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout in blocks, embeddings and head."})
    track_id_dropout: float = field(default=0.1, metadata={"help": "Train-time share of hidden track IDs."})
    use_history: bool = field(default=True, metadata={"help": "Ablation switch: False ignores past plays."})
    feed_back_outcomes: bool = field(default=True, metadata={"help": "Ablation switch: False hides past outcomes."})
    use_session_inputs: bool = field(
        default=True, metadata={"help": "Feed each play's session-start flag and log time gap since the previous play."}
    )
    pre_state_in_history: bool = field(
        default=True, metadata={"help": "Feed each past play's pre-listening valence/arousal into its history token."}
    )
    wide_history: bool = field(
        default=True,
        metadata={"help": "The head also reads running means of the listener's past outcomes, the last reported "
                          "valence/arousal, and the pre-state of a play that continues a session apart from a fresh "
                          "one."},
    )
    play_count_feature: bool = field(
        default=False,
        metadata={"help": "Add log(1 + plays in the training log) to each track's features (popularity, a proxy of "
                          "quality the ID embedding of a rarely played track cannot learn)."},
    )
    nll_beta: float = field(
        default=0.0, metadata={"help": "β of the β-NLL valence/arousal loss: 0 plain Gaussian NLL, 1 MSE-like."}
    )
    outcome_loss_weights: Union[dict, str, None] = field(
        default=None, metadata={"help": "Outcome -> loss weight, e.g. {\"valence\": 2.0} (JSON on the CLI)."}
    )

    def __post_init__(self):
        self.outcome_loss_weights = _as_dict(self.outcome_loss_weights, "outcome_loss_weights")


@dataclass
class WorldModelTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the world model's defaults: small CPU-friendly batches, eval and save per epoch,
    the best checkpoint by validation loss kept."""

    output_dir: str = field(default="outputs/world_model", metadata={"help": "Where the model is written."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Listener windows per batch."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Listener windows per eval batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Passes over the training listeners."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a share of training if < 1)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to score the validation listeners."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: Optional[int] = field(default=1, metadata={"help": "Checkpoints kept besides the best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End on the lowest validation loss."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    remove_unused_columns: bool = field(default=True, metadata={"help": "Drop window columns forward doesn't take."})
    ensemble_size: int = field(
        default=1,
        metadata={"help": "Members trained with seeds seed, seed+1, ...; > 1 saves a WorldModelEnsemble folder."},
    )
    propensity_weighting: bool = field(
        default=False,
        metadata={"help": "Weigh each play's loss by its inverse logged propensity (clipped, mean 1; the log must "
                          "carry propensities), against the logging policy's selection bias."},
    )
    max_play_weight: float = field(
        default=10.0,
        metadata={"help": "Clip of the inverse-propensity weights, relative to their mean (>= 1); the clipped weights "
                          "are scaled to mean 1 again, so the largest can end slightly above it."},
    )


def split_log(log: ListeningLog, data_args: DataArguments) -> dict[str, ListeningLog]:
    if data_args.split == "cold_start":
        return cold_start_split(log, data_args.split_fractions, seed=data_args.split_seed)
    if data_args.split == "temporal":
        return temporal_split(log, data_args.split_fractions)
    return {"train": log, "valid": None, "test": None}


def windows_dataset(log: ListeningLog, tokenizer, config, max_history: int, training_args=None) -> datasets.Dataset:
    """The log's windows; with `training_args.propensity_weighting` each carries its plays' loss weights."""
    weights = None
    if training_args is not None and getattr(training_args, "propensity_weighting", False):
        weights = inverse_propensity_weights(log, training_args.max_play_weight)
    return datasets.Dataset.from_list(user_sequences(log, tokenizer, config, max_length=max_history,
                                                     play_weights=weights))


def train_world_model(
    splits: dict[str, ListeningLog],
    catalogue_log: ListeningLog,
    data_args: DataArguments,
    model_args: WorldModelArguments,
    training_args: WorldModelTrainingArguments,
    tokenizer=None,
) -> tuple[AmrsWorldModel, object]:
    """Build a world model for the catalogue, train it on `splits["train"]` (selecting on `splits["valid"]` when
    given) and return it with its tokenizer. Nothing is written unless the training arguments ask for it."""
    set_seed(training_args.seed)
    tokenizer = tokenizer or build_track_tokenizer(catalogue_log.catalogue["track_id"])
    architecture = {k: v for k, v in dataclasses.asdict(model_args).items() if k != "outcome_loss_weights"}
    config = world_model_config(
        splits["train"], tokenizer, outcome_loss_weights=model_args.outcome_loss_weights or None, **architecture,
    )
    model = AmrsWorldModel(config)
    set_catalogue(model, catalogue_log.catalogue_frame(), tokenizer, play_log=splits["train"])
    valid = splits.get("valid")
    if valid is None or valid.num_plays == 0:
        training_args = dataclasses.replace(
            training_args, eval_strategy="no", load_best_model_at_end=False, save_strategy="no"
        )
        valid = None
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=windows_dataset(splits["train"], tokenizer, config, data_args.max_history, training_args),
        eval_dataset=(None if valid is None  # selected on the same weighted loss
                      else windows_dataset(valid, tokenizer, config, data_args.max_history, training_args)),
        data_collator=WorldModelCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    trainer.can_return_loss = True  # the loss comes from the outcomes in the batch, not from `labels`
    trainer.train()
    return trainer.model, tokenizer
