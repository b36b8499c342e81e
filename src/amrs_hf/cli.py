"""The `amrs` command. Each subcommand is a script module in `amrs_hf.scripts` with `make_parser()` and `main(argv)`,
imported only when called, so `amrs --help` stays fast and a stage's dependencies load with that stage alone.

On the command line, bad input (a `ValueError`, such as a refused option or a malformed log, an `OSError`, such as a
missing folder, or a YAML syntax error in a config) ends the command with its message on one line and exit status 2,
not a traceback; `AMRS_DEBUG=1` shows the traceback. Called from Python (`main([...])`), errors propagate as usual."""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "pipeline": ("amrs_hf.scripts.pipeline", "the whole job: data, world model, cloning, DPO, evaluation, report"),
    "data": ("amrs_hf.scripts.data", "describe, generate and calibrate listening logs"),
    "train-world-model": ("amrs_hf.scripts.train_world_model", "train the world model on a listening log"),
    "evaluate-world-model": ("amrs_hf.scripts.evaluate_world_model", "world-model fidelity under cold start"),
    "train-policy": ("amrs_hf.scripts.train_policy", "clone the recommender policy from a listening log"),
    "build-preferences": ("amrs_hf.scripts.build_preferences", "world-model-scored preference pairs for DPO"),
    "dpo": ("amrs_hf.scripts.dpo", "fine-tune the policy with DPO on preference pairs"),
    "evaluate": ("amrs_hf.scripts.evaluate", "evaluate policies in world-model rollouts (and the true synthetic world)"),
    "synthetic-check": ("amrs_hf.scripts.synthetic_check", "world model vs the known truth of the synthetic world"),
}


def _usage() -> str:
    lines = ["usage: amrs <command> [options]", "", "commands:"]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `amrs <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv=None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from amrs_hf import __version__

        print(f"amrs_hf {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"amrs: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if not from_command_line or os.environ.get("AMRS_DEBUG", "") not in ("", "0"):
        return module.main(rest) or 0
    import yaml

    try:
        return module.main(rest) or 0
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"amrs {command}: error: {error}\n(AMRS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
