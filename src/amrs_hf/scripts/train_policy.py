"""Clone the recommender policy from a listening log (next-track language modelling) with the transformers `Trainer`.

    amrs train-policy --config recipes/situnes/policy/config_bc.yaml [--num_train_epochs 5 ...]
    accelerate launch -m amrs_hf.scripts.train_policy --config recipes/situnes/policy/config_bc.yaml

The output folder loads with `AutoModelForCausalLM.from_pretrained` (after `import amrs_hf`, or with
`trust_remote_code=True` without it) and holds the track tokenizer, `train_config.json` (every resolved argument) and
`eval_results.json`: next-track HR@k / NDCG@k on the held-out listeners, beside the most-popular baseline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from trl import TrlParser

from amrs_hf.data import load_log
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.evaluation.ranking import next_track_metrics
from amrs_hf.models.policy.training_policy import (
    PolicyDataArguments,
    PolicyModelArguments,
    PolicyTrainingArguments,
    split_log,
    train_policy,
)

TRAIN_CONFIG_FILE, EVAL_RESULTS_FILE = "train_config.json", "eval_results.json"


def make_parser() -> TrlParser:
    return TrlParser((PolicyDataArguments, PolicyModelArguments, PolicyTrainingArguments))


def main(argv=None) -> int:
    data_args, model_args, training_args = make_parser().parse_args_and_config(argv)
    log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    splits = split_log(log, data_args)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    model, tokenizer = train_policy(splits, log, data_args, model_args, training_args, tokenizer=tokenizer)
    if not training_args.should_save:
        return 0
    os.makedirs(training_args.output_dir, exist_ok=True)
    model.save_pretrained(training_args.output_dir)
    tokenizer.save_pretrained(training_args.output_dir)
    resolved = {"data": dataclasses.asdict(data_args), "model": dataclasses.asdict(model_args),
                "training": training_args.to_dict()}
    with open(os.path.join(training_args.output_dir, TRAIN_CONFIG_FILE), "w") as f:
        json.dump(resolved, f, indent=2, default=str)
    if splits["test"].num_plays:
        results = next_track_metrics(model, tokenizer, splits["test"], splits["train"], k=data_args.eval_k,
                                     context=data_args.context, max_length=data_args.max_length)
        with open(os.path.join(training_args.output_dir, EVAL_RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
        print(f"held-out listeners: {json.dumps(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
