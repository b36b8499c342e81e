"""Fine-tune the cloned policy with DPO (TRL) on preference pairs.

    amrs dpo --config recipes/synthetic/policy/config_dpo.yaml [--beta 0.1 --use_lora true ...]
    amrs dpo --policy_path outputs/policy --preferences_path outputs/preferences --output_dir outputs/policy_dpo
    accelerate launch -m amrs_hf.scripts.dpo --config ...

Every flag of `trl.DPOConfig` works too. The output folder loads with `AutoModelForCausalLM.from_pretrained` and holds
the tokenizer and `train_config.json` (every resolved argument).
"""

from __future__ import annotations

import sys

from trl import TrlParser

from amrs_hf.models.policy.dpo import AmrsDPOConfig, run_dpo


def make_parser() -> TrlParser:
    return TrlParser((AmrsDPOConfig,))


def main(argv=None) -> int:
    (config,) = make_parser().parse_args_and_config(argv)
    if not config.policy_path or not config.preferences_path:
        raise SystemExit("amrs dpo: --policy_path and --preferences_path are required (or set them in --config)")
    if config.rounds > 1:
        raise SystemExit(f"amrs dpo: rounds={config.rounds} needs fresh pairs scored by the world model between rounds, "
                         "which this command does not have: run `amrs pipeline` (its dpo.rounds), or alternate "
                         "`amrs build-preferences --policy_path <last policy>` and `amrs dpo` yourself")
    run_dpo(config)
    print(f"DPO policy written to {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
