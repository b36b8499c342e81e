"""World-model fidelity under the strict cold-start protocol, against baselines and ablations.

    amrs evaluate-world-model --config recipes/situnes/world_model/config_eval.yaml --output_dir outputs/wm_eval

For each of `num_splits` seeded user-disjoint splits: train the world model and its two ablations (no history; no
fed-back outcomes), each an ensemble of `ensemble_size` members combined as `combine_members` does, on the training
listeners (selecting on the validation listeners), fit the baselines (global mean, per-track mean, feature-only
scikit-learn models, and the same models given a summary of the listener's earlier plays, `feature_history`), and
score every play of the held-out listeners. Writes `fidelity.json` (per split and mean ± std), `fidelity.md` (the
table, beside the AMRS paper's figures) and `calibration.png` into the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm
from trl import TrlParser

from amrs_hf.data import load_log
from amrs_hf.data.schema import OUTCOMES
from amrs_hf.data.splits import cold_start_splits
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.evaluation.baselines import BASELINES
from amrs_hf.evaluation.fidelity import aggregate, calibration_plot, markdown_table, split_metrics
from amrs_hf.models.world_model.processing_world_model import combine_members, predict_plays
from amrs_hf.models.world_model.training_world_model import (
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
    train_world_model,
)

# world-model variant -> the architecture switches that make it
VARIANTS = {
    "world_model": {},
    "wm_no_history": {"use_history": False},
    "wm_no_feedback": {"feed_back_outcomes": False},
}


@dataclass
class EvaluationArguments:
    num_splits: int = field(default=10, metadata={"help": "Monte-Carlo user-disjoint splits (the AMRS protocol)."})
    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS), metadata={"help": f"World-model variants to train: {list(VARIANTS)}."}
    )
    baselines: list[str] = field(
        default_factory=lambda: list(BASELINES), metadata={"help": f"Baselines to fit: {list(BASELINES)}."}
    )

    def __post_init__(self):
        unknown = set(self.variants) - set(VARIANTS) | set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown variants/baselines {sorted(unknown)}; known: {list(VARIANTS)}, {list(BASELINES)}")


def make_parser() -> TrlParser:
    return TrlParser((DataArguments, WorldModelArguments, WorldModelTrainingArguments, EvaluationArguments))


def main(argv=None) -> int:
    data_args, model_args, training_args, eval_args = make_parser().parse_args_and_config(argv)
    output_dir = training_args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    splits = cold_start_splits(log, eval_args.num_splits, data_args.split_fractions, seed=data_args.split_seed)

    per_split, pooled = [], {}
    size = training_args.ensemble_size
    progress = tqdm(total=len(splits) * len(eval_args.variants) * size, desc="world models trained", unit="model")
    for index, split in enumerate(splits):
        test = split["test"]
        observed = {o: np.asarray(test.plays[o], dtype=float) for o in OUTCOMES}
        predictions = {}
        for name in eval_args.variants:
            members = []
            for member in range(size):  # an ensemble is scored as the pipeline uses it: its members combined
                with tempfile.TemporaryDirectory() as checkpoints:
                    args = dataclasses.replace(training_args, output_dir=checkpoints, disable_tqdm=True,
                                               seed=training_args.seed + index * size + member)
                    variant_args = dataclasses.replace(model_args, **VARIANTS[name])
                    model, _ = train_world_model(split, log, data_args, variant_args, args, tokenizer=tokenizer)
                members.append(predict_plays(model, test, tokenizer, max_length=data_args.max_history))
                progress.update()
            predictions[name] = members[0] if size == 1 else combine_members(members)
        for name in eval_args.baselines:
            predictions[name] = BASELINES[name]().fit(split["train"]).predict(test)
        per_split.append(split_metrics(observed, predictions, data_args.engagement_threshold))
        for name, predicted in predictions.items():
            store = pooled.setdefault(name, {"rating": ([], []), "valence": ([], [], []), "arousal": ([], [], [])})
            store["rating"][0].append(observed["rating"])
            store["rating"][1].append(predicted["rating"][0])
            for outcome in ("valence", "arousal"):
                mean, var = predicted[outcome]
                for target, value in zip(store[outcome], (observed[outcome], mean, var)):
                    target.append(value)
    progress.close()

    summary = aggregate(per_split)
    models = [*eval_args.variants, *eval_args.baselines]
    table = markdown_table(summary, models)
    report = {
        "protocol": {
            "data_source": data_args.data_source,
            "num_splits": len(splits),
            "split_fractions": list(data_args.split_fractions),
            "split_seeds": [data_args.split_seed + i for i in range(len(splits))],
            "engagement_threshold": data_args.engagement_threshold,
            "test_plays": [s["test"].num_plays for s in splits],
        },
        "arguments": {"data": dataclasses.asdict(data_args), "model": dataclasses.asdict(model_args),
                      "evaluation": dataclasses.asdict(eval_args)},
        "summary": summary,
        "per_split": per_split,
    }
    with open(os.path.join(output_dir, "fidelity.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(output_dir, "fidelity.md"), "w") as f:
        f.write(f"# World-model fidelity: {data_args.data_source}, {len(splits)} user-disjoint splits\n\n")
        f.write(f"Held-out listeners' plays, each predicted from the listener's earlier plays; mean ± std over splits. "
                f"Engagement AUC: listened through (engagement >= {data_args.engagement_threshold}) vs skipped.\n\n")
        f.write(table + "\n\n![calibration](calibration.png)\n")
    pooled = {
        name: {key: tuple(None if any(v is None for v in parts) else np.concatenate(parts) for parts in values)
               for key, values in data.items()}
        for name, data in pooled.items()
    }
    calibration_plot({n: pooled[n] for n in models if n in pooled}, os.path.join(output_dir, "calibration.png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
