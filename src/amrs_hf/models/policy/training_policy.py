"""Behaviour cloning of the recommender policy with the transformers `Trainer`: the argument dataclasses (parsed from
YAML + command line by `amrs train-policy`), logs to token sequences, and `train_policy`. The command itself lives in
`amrs_hf.scripts.train_policy`.

A sequence is `<bos>`, then for each session (in time order) its mode and cohort tokens (left out where the log has
none) and its tracks. `context="session"` makes one sequence per session; `context="history"` one per listener,
their sessions in time order, so a recommendation can draw on earlier sessions. The loss is next-token cross-entropy
on track tokens only (mode, cohort, `<bos>` and padding carry label -100). Sequences longer than `max_length` are cut
into windows, each led by `<bos>`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional, Union

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import Trainer, TrainingArguments, set_seed

from amrs_hf.data import ListeningLog
from amrs_hf.data.schema import listening_order
from amrs_hf.data.splits import cold_start_split
from amrs_hf.data.tokenizer import build_track_tokenizer, cohort_token, mode_token, track_token, track_token_ids

from .configuration_policy import AmrsPolicyConfig
from .modeling_policy import AmrsPolicyForCausalLM

CONTEXTS = ("session", "history")


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
class PolicyDataArguments:
    """Which log to clone and how to hold listeners out."""

    data_source: str = field(default="synthetic", metadata={"help": "Data source: situnes, mssd, generic, synthetic."})
    data_path: Optional[str] = field(default=None, metadata={"help": "The source's folder or file."})
    data_options: Union[dict, str, None] = field(  # `dict | str | None` makes HfArgumentParser take a string
        default=None, metadata={"help": "Options of the source, e.g. {\"num_plays\": 20000} (JSON on the CLI)."}
    )
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={"help": "train, valid, test shares of listeners (cold start: user-disjoint)."},
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the cold-start split."})
    context: str = field(
        default="session",
        metadata={"help": "session: one sequence per session; history: one per listener, sessions in time order."},
    )
    max_length: int = field(default=64, metadata={"help": "Tokens per training window, <bos> included."})
    eval_k: int = field(default=10, metadata={"help": "Cutoff of HR@k and NDCG@k on the held-out listeners."})

    def __post_init__(self):
        self.data_options = _as_dict(self.data_options, "data_options")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")


@dataclass
class PolicyModelArguments:
    """Architecture of the policy (see `AmrsPolicyConfig` for each field's meaning)."""

    hidden_size: int = field(default=64, metadata={"help": "Width of every token."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Causal transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (divide hidden_size)."})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width."})
    max_position_embeddings: int = field(default=128, metadata={"help": "Longest sequence; >= max_length."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in blocks and embeddings."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share input and output track embeddings."})


@dataclass
class PolicyTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the policy's defaults: small CPU-friendly batches, eval and save per epoch, the best
    checkpoint by validation loss kept."""

    output_dir: str = field(default="outputs/policy", metadata={"help": "Where the model is written."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per batch."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per eval batch."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Passes over the training listeners."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a share of training if < 1)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to score the validation listeners."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: Optional[int] = field(default=1, metadata={"help": "Checkpoints kept besides the best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End on the lowest validation loss."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})


# ---- logs to sequences ----
def _ordered_plays(log: ListeningLog) -> pd.DataFrame:
    frame = log.plays_frame()[["user_id", "session_id", "position", "timestamp", "mode", "cohort", "track_id"]]
    return listening_order(frame)


def _session_tokens(plays: pd.DataFrame, vocab: dict) -> tuple[list[int], list[bool], list[bool]]:
    """Tokens of one session (header + tracks), which are tracks, and which are queries (tracks after the first)."""
    header = []
    for value, to_token in ((plays["mode"].iloc[0], mode_token), (plays["cohort"].iloc[0], cohort_token)):
        if isinstance(value, str):
            if to_token(value) not in vocab:
                raise ValueError(f"{to_token(value)!r} (column {'mode' if to_token is mode_token else 'cohort'!r}) "
                                 "is not in the tokenizer; build it with the log's modes and cohorts")
            header.append(vocab[to_token(value)])
    tracks = [vocab[track_token(t)] for t in plays["track_id"]]
    n = len(tracks)
    return header + tracks, [False] * len(header) + [True] * n, [False] * len(header) + [False] + [True] * (n - 1)


def policy_sequences(log: ListeningLog, tokenizer, context: str = "session") -> list[dict]:
    """One dict per session (or listener, `context="history"`) with `input_ids` (starting with <bos>), `is_track`
    and `is_query` (a track after the first of its session: what next-track evaluation scores)."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    vocab = tokenizer.get_vocab()
    missing = sorted({t for t in set(log.plays["track_id"]) if track_token(t) not in vocab})
    if missing:
        raise ValueError(f"{len(missing)} track_id values of the log are not in the tokenizer (e.g. {missing[:3]}); "
                         "build it from the log's catalogue")
    frame = _ordered_plays(log)
    keys = ["user_id"] if context == "history" else ["user_id", "session_id"]
    sequences = []
    for _, group in frame.groupby(keys, sort=False):
        ids, is_track, is_query = [tokenizer.bos_token_id], [False], [False]
        for _, plays in group.groupby("session_id", sort=False):
            tokens, tracks, queries = _session_tokens(plays, vocab)
            ids, is_track, is_query = ids + tokens, is_track + tracks, is_query + queries
        sequences.append({"input_ids": ids, "is_track": is_track, "is_query": is_query})
    return sequences


def windows(sequences: list[dict], max_length: int, overlap: int = 0) -> list[dict]:
    """Cut sequences into windows of at most `max_length` tokens, each led by <bos>. Window w > 0 repeats `overlap`
    tokens of the previous one as context and marks (`score_from`) where its own tokens start, so each token is
    scored in exactly one window."""
    span = max_length - 1  # tokens after the leading <bos>
    if not 0 <= overlap < span:
        raise ValueError(f"overlap must be in [0, max_length - 1 = {span}), got {overlap}")
    out = []
    for seq in sequences:
        body = {k: v[1:] for k, v in seq.items()}  # without the leading <bos>
        bos = seq["input_ids"][0]
        step = span - overlap
        for start in range(0, max(len(body["input_ids"]), 1), step):
            begin = max(0, start - overlap)
            window = {k: v[begin : start + step] for k, v in body.items()}
            out.append({"input_ids": [bos] + window["input_ids"], "is_track": [False] + window["is_track"],
                        "is_query": [False] + window["is_query"], "score_from": 1 + start - begin})
            if start + step >= len(body["input_ids"]):
                break
    return out


def training_examples(log: ListeningLog, tokenizer, context: str, max_length: int) -> datasets.Dataset:
    """`input_ids` and `labels` (track tokens only, -100 elsewhere) of every training window."""
    rows = [{"input_ids": w["input_ids"],
             "labels": [t if track else -100 for t, track in zip(w["input_ids"], w["is_track"])]}
            for w in windows(policy_sequences(log, tokenizer, context), max_length)]
    return datasets.Dataset.from_list(rows)


class PolicyCollator:
    """Right-pads `input_ids` (with <pad>) and `labels` (with -100) and adds the `attention_mask`."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        length = max(len(r["input_ids"]) for r in rows)
        batch = {
            "input_ids": torch.tensor([r["input_ids"] + [self.pad_token_id] * (length - len(r["input_ids"]))
                                       for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (length - len(r["input_ids"]))
                                            for r in rows]),
        }
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([r["labels"] + [-100] * (length - len(r["labels"])) for r in rows])
        return batch


@torch.no_grad()
def next_track_scores(model, tokenizer, log: ListeningLog, context: str = "session", max_length: int = 64,
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The policy's scores (log-softmax over the whole vocabulary, restricted to track tokens) for the next track at
    every query of `log` (a play after the first of its session), with the index of the true track among the track
    tokens. Returns (Q, num_tracks) scores and (Q,) targets, in the order of `track_token_ids(tokenizer)`."""
    model.eval()
    track_ids = torch.tensor(track_token_ids(tokenizer))
    column = torch.full((len(tokenizer),), -1, dtype=torch.long)
    column[track_ids] = torch.arange(len(track_ids))
    cut = windows(policy_sequences(log, tokenizer, context), max_length, overlap=(max_length - 1) // 2)
    collate = PolicyCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    scores, targets = [], []
    for begin in range(0, len(cut), batch_size):
        rows = cut[begin : begin + batch_size]
        batch = collate(rows)
        log_probs = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().log_softmax(-1).cpu()
        for row, window in enumerate(rows):
            positions = [p for p, q in enumerate(window["is_query"]) if q and p >= window["score_from"]]
            if positions:
                scores.append(log_probs[row, [p - 1 for p in positions]][:, track_ids])
                targets.append(column[batch["input_ids"][row, positions]])
    if not scores:
        return np.zeros((0, len(track_ids))), np.zeros(0, dtype=int)
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


# ---- training ----
def policy_config(tokenizer, model_args: PolicyModelArguments) -> AmrsPolicyConfig:
    return AmrsPolicyConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            **dataclasses.asdict(model_args))


def split_log(log: ListeningLog, data_args: PolicyDataArguments) -> dict[str, ListeningLog]:
    return cold_start_split(log, data_args.split_fractions, seed=data_args.split_seed)


def train_policy(
    splits: dict[str, ListeningLog],
    catalogue_log: ListeningLog,
    data_args: PolicyDataArguments,
    model_args: PolicyModelArguments,
    training_args: PolicyTrainingArguments,
    tokenizer=None,
) -> tuple[AmrsPolicyForCausalLM, object]:
    """Build a policy over the catalogue's tracks, clone `splits["train"]` (selecting on `splits["valid"]` when
    given) and return it with its tokenizer. Nothing is written unless the training arguments ask for it."""
    if model_args.max_position_embeddings < data_args.max_length:
        raise ValueError(f"max_position_embeddings ({model_args.max_position_embeddings}) must be >= max_length "
                         f"({data_args.max_length})")
    set_seed(training_args.seed)
    tokenizer = tokenizer or build_track_tokenizer(catalogue_log.catalogue["track_id"])
    model = AmrsPolicyForCausalLM(policy_config(tokenizer, model_args))
    valid = splits.get("valid")
    if valid is None or valid.num_plays == 0:
        training_args = dataclasses.replace(
            training_args, eval_strategy="no", load_best_model_at_end=False, save_strategy="no"
        )
        valid = None
    examples = {name: training_examples(log, tokenizer, data_args.context, data_args.max_length)
                for name, log in (("train", splits["train"]), ("valid", valid)) if log is not None}
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=examples["train"],
        eval_dataset=examples.get("valid"),
        data_collator=PolicyCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer.model, tokenizer


__all__ = [
    "PolicyCollator",
    "PolicyDataArguments",
    "PolicyModelArguments",
    "PolicyTrainingArguments",
    "next_track_scores",
    "policy_config",
    "policy_sequences",
    "split_log",
    "train_policy",
    "training_examples",
    "windows",
]
