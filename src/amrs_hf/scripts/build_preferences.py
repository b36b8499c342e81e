"""Build world-model-scored preference pairs for DPO.

    amrs build-preferences --world_model_path outputs/pipeline/world_model --data_source synthetic \
        --data_options '{"num_plays": 40000, "num_users": 1500, "num_tracks": 300}' --output_dir outputs/preferences
    amrs build-preferences ... --strategy rollout --policy_path outputs/pipeline/policy_bc

The pairs come from the training listeners of the same cold-start split the models were trained on (`--split_part`
picks another part). The output folder holds the `datasets` dataset (`datasets.load_from_disk`), which `amrs dpo
--preferences_path` reads, and `summary.json` (pairs kept, dropped by reason).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trl import TrlParser

from amrs_hf.data import load_log
from amrs_hf.models.world_model.training_world_model import DataArguments, split_log
from amrs_hf.objectives import DEFAULT_PRESET, Utility
from amrs_hf.preferences import PreferenceArguments, build_preferences
from amrs_hf.simulation.ensemble import load_world_model

SUMMARY_FILE = "summary.json"


@dataclass
class BuildPreferencesArguments:
    world_model_path: str = field(default=None, metadata={"help": "World model (or ensemble) folder."})
    policy_path: Optional[str] = field(default=None, metadata={"help": "Policy folder (the rollout strategy)."})
    utility: str = field(default=DEFAULT_PRESET, metadata={"help": "Utility preset name or YAML file."})
    split_part: str = field(default="train", metadata={"help": "Listeners the pairs come from: train, valid, test."})
    output_dir: str = field(default="outputs/preferences", metadata={"help": "Where the dataset is written."})

    def __post_init__(self):
        if not self.world_model_path:
            raise ValueError("--world_model_path is required (an `amrs train-world-model` or pipeline output)")
        if self.split_part not in ("train", "valid", "test"):
            raise ValueError(f"split_part must be train, valid or test, got {self.split_part!r}")


def make_parser() -> TrlParser:
    return TrlParser((BuildPreferencesArguments, DataArguments, PreferenceArguments))


def main(argv=None) -> int:
    from transformers import AutoTokenizer

    from amrs_hf.evaluation.policies import load_policy

    args, data_args, pref_args = make_parser().parse_args_and_config(argv)
    world_model = load_world_model(args.world_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.world_model_path)
    policy = load_policy(args.policy_path, tokenizer, "--policy_path") if args.policy_path else None
    log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    part = split_log(log, data_args)[args.split_part]
    if part is None:
        raise ValueError(f"data.split={data_args.split!r} has no {args.split_part!r} part")
    pairs = build_preferences(world_model, tokenizer, part, Utility.load(args.utility), pref_args,
                              policy_model=policy, max_history=data_args.max_history)
    dataset = pairs.to_dataset()
    dataset.save_to_disk(args.output_dir)
    (Path(args.output_dir) / SUMMARY_FILE).write_text(json.dumps(pairs.summary(), indent=2))
    print(f"{json.dumps(pairs.summary())} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
