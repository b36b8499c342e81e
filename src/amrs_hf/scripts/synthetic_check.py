"""The synthetic check with known truth: the world model against the true model's ceiling, its rollouts against the
true world (`amrs_hf.evaluation.synthetic_check`; docs/world_model.md, "Synthetic check with known truth").

    amrs synthetic-check --config recipes/synthetic/world_model/config_ceiling.yaml --output_dir outputs/synthetic_check

Writes `synthetic_check.json` (every figure, the setup and timings) and `synthetic_check.md` (the tables) to the
output folder, prints the Markdown, and exits 0 when the check passes, 1 when it fails.
"""

from __future__ import annotations

import json
import os
import sys

from amrs_hf.evaluation.synthetic_check import (
    REPORT_FILE,
    RESULT_FILE,
    SyntheticCheckArguments,
    ceiling_check,
    render_markdown,
)
from amrs_hf.models.world_model.training_world_model import (
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
)


def make_parser():
    from trl import TrlParser

    return TrlParser((SyntheticCheckArguments, DataArguments, WorldModelArguments, WorldModelTrainingArguments))


def main(argv=None) -> int:
    check_args, data_args, model_args, training_args = make_parser().parse_args_and_config(argv)
    result = ceiling_check(data_args, model_args, training_args, check_args)
    os.makedirs(training_args.output_dir, exist_ok=True)
    with open(os.path.join(training_args.output_dir, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=2, default=str)
    report = render_markdown(result)
    with open(os.path.join(training_args.output_dir, REPORT_FILE), "w") as f:
        f.write(report)
    print(report)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
