"""Evaluate recommender policies offline: world-model rollouts from held-out listeners, diversity, KL to the cloned
policy, and on the synthetic world the true world's answers to the same recommendations.

    amrs evaluate --world_model_path DIR/world_model --bc_path DIR/policy_bc --dpo_path DIR/policy_dpo \
        --data_source synthetic --data_options '{"num_plays": 40000, "num_users": 1500, "num_tracks": 300}' \
        --output_dir DIR/report

The held-out listeners are the test part of the same cold-start split (`--split_seed`, `--split_fractions`) the
models were trained with. Writes `metrics.json` (`{"data", "policies": {name: {"predicted", "diversity", "kl_to_bc",
"oracle"?}}}`), `report.md` and the plots (amrs_hf.evaluation.report).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

from trl import TrlParser

from amrs_hf.evaluation.policies import (
    PolicyEvaluationArguments,
    cloned_prompt_tracks,
    evaluate_policies,
    load_policy,
    standard_policies,
)
from amrs_hf.evaluation.report import write_report
from amrs_hf.models.world_model.training_world_model import DataArguments, split_log
from amrs_hf.objectives import DEFAULT_PRESET, Utility
from amrs_hf.simulation.ensemble import load_world_model

POLICIES = ("random", "popular", "bc", "dpo", "greedy")


@dataclass
class EvaluateArguments:
    world_model_path: str = field(default=None, metadata={"help": "World model (or ensemble) folder."})
    bc_path: str = field(default=None, metadata={"help": "The cloned policy's folder (the KL reference)."})
    dpo_path: Optional[str] = field(default=None, metadata={"help": "The DPO policy's folder (optional)."})
    utility: str = field(default=DEFAULT_PRESET, metadata={"help": "Utility preset name or YAML file."})
    output_dir: str = field(default="outputs/report", metadata={"help": "Where metrics.json and the report go."})
    max_prompt_tracks: Optional[int] = field(
        default=None,
        metadata={"help": "Tracks the bc and dpo policies read; default: what the cloned policy trained on "
                          "(max_length - 4 from --bc_path's train_config.json, as the pipeline evaluates), else what "
                          "fits their positions."},
    )

    def __post_init__(self):
        if not self.world_model_path or not self.bc_path:
            raise ValueError("--world_model_path and --bc_path are required")


def load_data(data_args: DataArguments):
    """(log, splits, world, test truth): the world and truth only for the in-memory synthetic world."""
    from amrs_hf.data import load_log
    from amrs_hf.evaluation.synthetic_check import generate_world, split_with_truth

    world = truth = None
    if data_args.data_source == "synthetic" and not data_args.data_path:
        world, log, truth = generate_world(data_args)
    else:
        log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    if data_args.split != "cold_start":
        raise ValueError("policies are evaluated on held-out listeners: split must be cold_start")
    splits = split_log(log, data_args)
    test_truth = split_with_truth(log, truth, data_args)[1] if world is not None else None
    return log, splits, world, test_truth


def make_parser() -> TrlParser:
    return TrlParser((EvaluateArguments, DataArguments, PolicyEvaluationArguments))


def main(argv=None) -> int:
    from transformers import AutoTokenizer

    args, data_args, eval_args = make_parser().parse_args_and_config(argv)
    world_model = load_world_model(args.world_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.world_model_path)
    bc = load_policy(args.bc_path, tokenizer, "--bc_path")
    dpo = load_policy(args.dpo_path, tokenizer, "--dpo_path") if args.dpo_path else None
    _, splits, world, test_truth = load_data(data_args)
    utility = Utility.load(args.utility)
    prompt_tracks = args.max_prompt_tracks or cloned_prompt_tracks(args.bc_path)
    policies = standard_policies(world_model, tokenizer, utility, bc, dpo, splits["train"],  # no dpo without one
                                 max_prompt_tracks=prompt_tracks)
    evaluation = evaluate_policies(world_model, tokenizer, utility, policies, splits["test"], eval_args,
                                   max_history=data_args.max_history, world=world, truth=test_truth)
    metrics = {"data": {"source": data_args.data_source, "test_plays": splits["test"].num_plays},
               "policies": evaluation["policies"], "evaluation": evaluation["setup"]}
    write_report(metrics, evaluation["track_counts"], args.output_dir)
    print(f"report: {args.output_dir}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
