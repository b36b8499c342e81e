"""Train the world model on a listening log with the transformers `Trainer`.

    amrs train-world-model --config recipes/situnes/world_model/config_full.yaml [--num_train_epochs 5 ...]
    accelerate launch -m amrs_hf.scripts.train_world_model --config recipes/situnes/world_model/config_full.yaml

The output folder loads with `AutoModel.from_pretrained` (after `import amrs_hf`, or with `trust_remote_code=True`
without it) and holds the track tokenizer, `train_config.json` (every resolved argument, so the run can be reproduced
from the folder alone) and `eval_results.json` (fidelity on the held-out listeners of the split).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
from trl import TrlParser

from amrs_hf.data import ListeningLog, load_log
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.evaluation.metrics import outcome_metrics
from amrs_hf.models.world_model.processing_world_model import combine_members, predict_plays
from amrs_hf.models.world_model.training_world_model import (  # noqa: F401  (re-exported for scripts and users)
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
    split_log,
    train_world_model,
)
from amrs_hf.simulation.ensemble import WorldModelEnsemble, save_world_model

TRAIN_CONFIG_FILE, EVAL_RESULTS_FILE = "train_config.json", "eval_results.json"


def fidelity(models, log: ListeningLog, tokenizer, data_args: DataArguments) -> dict:
    """Fidelity metrics of a model (or a list of ensemble members) on every play of `log`, each predicted from the
    listener's earlier plays."""
    members = models if isinstance(models, (list, tuple)) else [models]
    predicted = combine_members([predict_plays(m, log, tokenizer, max_length=data_args.max_history) for m in members])
    observed = {o: np.asarray(log.plays[o], dtype=float) for o in predicted}
    return outcome_metrics(observed, predicted, data_args.engagement_threshold)


def make_parser() -> TrlParser:
    return TrlParser((DataArguments, WorldModelArguments, WorldModelTrainingArguments))


def main(argv=None) -> int:
    data_args, model_args, training_args = make_parser().parse_args_and_config(argv)
    log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    splits = split_log(log, data_args)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    members = []
    for member in range(training_args.ensemble_size):
        args = dataclasses.replace(
            training_args, seed=training_args.seed + member,
            output_dir=os.path.join(training_args.output_dir, "checkpoints", f"member_{member}"),
        )
        members.append(train_world_model(splits, log, data_args, model_args, args, tokenizer=tokenizer)[0])

    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        save_world_model(members[0] if len(members) == 1 else WorldModelEnsemble(members), training_args.output_dir)
        tokenizer.save_pretrained(training_args.output_dir)
        resolved = {
            "data": dataclasses.asdict(data_args),
            "model": dataclasses.asdict(model_args),
            "training": training_args.to_dict(),
        }
        with open(os.path.join(training_args.output_dir, TRAIN_CONFIG_FILE), "w") as f:
            json.dump(resolved, f, indent=2, default=str)
        if splits.get("test") is not None:
            results = fidelity(members, splits["test"], tokenizer, data_args)
            with open(os.path.join(training_args.output_dir, EVAL_RESULTS_FILE), "w") as f:
                json.dump(results, f, indent=2)
            summary = {o: results[o].get("r2", results[o].get("auc")) for o in results}
            print(f"held-out listeners ({splits['test'].num_plays} plays): {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
