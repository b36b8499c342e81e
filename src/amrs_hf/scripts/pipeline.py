"""The whole job in one command: data, world model, behaviour cloning, preferences, DPO, evaluation, report.

    amrs pipeline                                   # the quickstart on the embedded synthetic world
    amrs pipeline --config recipes/situnes/pipeline/config_full.yaml --output-dir outputs/situnes

The config is YAML with one section per stage (each section's keys are that stage's own options, as its standalone
command takes them) plus `utility` (a preset name, a YAML file, or an inline mapping):

    data:        DataArguments (source, split, history length)
    world_model: WorldModelArguments + WorldModelTrainingArguments (incl. ensemble_size)
    policy:      PolicyModelArguments + PolicyTrainingArguments + context / max_length / eval_k
    utility:     mode_aware
    preferences: PreferenceArguments (strategy: feedback_correction | rollout | both)
    dpo:         AmrsDPOConfig (incl. rounds)
    evaluation:  PolicyEvaluationArguments

Output (the contract other tools read):

    DIR/world_model/   DIR/policy_bc/   DIR/policy_dpo/     each loads with from_pretrained, with a model card
    DIR/preferences/   the preference dataset (datasets.load_from_disk) of the last round, + summary.json
    DIR/report/metrics.json, DIR/report/report.md + PNG plots
    DIR/pipeline_config.json   the resolved config of every stage
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import enum
import json
import sys
import time
import types
import typing
from pathlib import Path

import numpy as np
import yaml
from transformers import HfArgumentParser

QUICKSTART = Path(__file__).resolve().parents[3] / "recipes" / "quickstart" / "pipeline" / "config_quickstart.yaml"
SECTIONS = ("data", "world_model", "policy", "utility", "preferences", "dpo", "evaluation")
POLICY_DATA_KEYS = ("context", "max_length", "eval_k")


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pipeline config {path} does not exist")
    config = yaml.safe_load(path.read_text())
    if config is None:
        raise ValueError(f"{path} is empty; a pipeline config is a mapping of sections {SECTIONS} (see "
                         f"{QUICKSTART.name} for an example)")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a pipeline config is a mapping of sections {SECTIONS}")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; valid sections: {', '.join(SECTIONS)}")
    for name, section in config.items():
        if name == "utility":
            if not isinstance(section, (str, dict)):
                raise ValueError(f"{path}, section 'utility': give a preset name, a YAML file or a mapping, got "
                                 f"{section!r}")
        elif section is not None and not isinstance(section, dict):
            raise ValueError(f"{path}, section {name!r}: must be a mapping of that stage's options "
                             f"(key: value), got {type(section).__name__} {section!r}")
    return config


def _simple_types(hint) -> tuple | None:
    """The accepted Python types of a field annotated `hint` (None allowed where Optional), or None when the type is
    not a plain scalar / list of scalars (left to the dataclass itself)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out = []
    for arg in args:
        if arg is type(None) or arg in (bool, int, float, str):
            out.append(arg)
        elif isinstance(arg, type) and issubclass(arg, enum.Enum):
            out.append(str)
        elif typing.get_origin(arg) is list and all(a in (bool, int, float, str) for a in typing.get_args(arg)):
            out.append(arg)
        else:
            return None
    return tuple(out)


def _type_ok(value, accepted) -> bool:
    for kind in accepted:
        if kind is type(None) and value is None:
            return True
        if kind is bool and isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is str and isinstance(value, str):
            return True
        if typing.get_origin(kind) is list and isinstance(value, list):
            if all(_type_ok(v, typing.get_args(kind)) for v in value):
                return True
    return False


def _check_types(types_, values: dict, name: str) -> None:
    """Refuse a value whose YAML type does not match its option's (HfArgumentParser.parse_dict does not convert:
    `horizon: '3'` would reach the code as a string), naming the section and key."""
    for cls in types_:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in values or f.name not in hints:
                continue
            accepted = _simple_types(hints[f.name])
            if accepted and not _type_ok(values[f.name], accepted):
                wanted = " or ".join(sorted({"a list" if typing.get_origin(k) is list else
                                             "null" if k is type(None) else k.__name__ for k in accepted}))
                hint = " (YAML reads an unquoted no/yes/off/on as a boolean: quote it)" \
                    if isinstance(values[f.name], bool) and str in accepted else ""
                raise ValueError(f"pipeline config, section {name!r}, key {f.name!r}: expected {wanted}, got "
                                 f"{values[f.name]!r} ({type(values[f.name]).__name__}){hint}")


def parse_section(types_, section: dict | None, name: str, **fixed):
    """The section's dataclasses (HfArgumentParser.parse_dict), unknown keys and values of the wrong type refused
    with the section and key named."""
    if section is not None and not isinstance(section, dict):
        raise ValueError(f"pipeline config, section {name!r}: must be a mapping of that stage's options, got "
                         f"{section!r}")
    values = {**(section or {}), **fixed}
    _check_types(types_, values, name)
    try:
        return HfArgumentParser(types_).parse_dict(values, allow_extra_keys=False)
    except ValueError as err:
        raise ValueError(f"pipeline config, section {name!r}: {err}") from None


def _log(message: str) -> None:
    print(f"[amrs pipeline {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _write_json(path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=str))


def run_pipeline(config: dict, output_dir, show_progress: bool = True) -> dict:
    """Run every stage of `config` (see the module doc) into `output_dir`; returns the metrics written."""
    from datasets import Dataset  # noqa: F401  (imported late: a CLI call stays light until it runs)

    from amrs_hf.data import load_log
    from amrs_hf.data.tokenizer import build_track_tokenizer
    from amrs_hf.evaluation.policies import PolicyEvaluationArguments, evaluate_policies
    from amrs_hf.evaluation.report import write_report
    from amrs_hf.evaluation.synthetic_check import generate_world, split_with_truth
    from amrs_hf.hub import write_card
    from amrs_hf.models.policy.dpo import TRAIN_CONFIG_FILE, AmrsDPOConfig, run_dpo
    from amrs_hf.models.policy.training_policy import (
        PolicyDataArguments, PolicyModelArguments, PolicyTrainingArguments, train_policy)
    from amrs_hf.objectives import Utility
    from amrs_hf.preferences import PreferenceArguments, build_preferences
    from amrs_hf.evaluation.ranking import next_track_metrics
    from amrs_hf.scripts.train_world_model import fidelity
    from amrs_hf.models.world_model.training_world_model import (
        DataArguments, WorldModelArguments, WorldModelTrainingArguments, split_log, train_world_model)
    from amrs_hf.simulation.ensemble import WorldModelEnsemble, save_world_model
    from amrs_hf.evaluation.policies import prompt_tracks, standard_policies

    if not show_progress:
        import datasets

        datasets.disable_progress_bars()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file; give a folder (it is created if missing)")
    checkpoints = out / "checkpoints"
    resolved = {}
    started = time.time()

    # ---- every section checked before anything trains (a typo in `evaluation` must not cost the training) ----
    (data_args,) = parse_section((DataArguments,), config.get("data"), "data")
    if data_args.split != "cold_start":
        raise ValueError("the pipeline evaluates on held-out listeners: data.split must be cold_start")
    wm_model_args, wm_train_args = parse_section(
        (WorldModelArguments, WorldModelTrainingArguments), config.get("world_model"), "world_model",
        **{"output_dir": str(checkpoints / "world_model")})
    policy_section = config.get("policy")
    if policy_section is not None and not isinstance(policy_section, dict):
        parse_section((), policy_section, "policy")  # raises, naming the section
    policy_section = dict(policy_section or {})
    policy_data = {k: policy_section.pop(k) for k in POLICY_DATA_KEYS if k in policy_section}
    _check_types((PolicyDataArguments,), policy_data, "policy")
    try:
        p_data_args = PolicyDataArguments(
            data_source=data_args.data_source, data_path=data_args.data_path, data_options=data_args.data_options,
            split_fractions=list(data_args.split_fractions), split_seed=data_args.split_seed, **policy_data)
    except ValueError as err:
        raise ValueError(f"pipeline config, section 'policy': {err}") from None
    if p_data_args.context != "session":
        raise ValueError(f"pipeline config, section 'policy': context {p_data_args.context!r} is not supported here: "
                         "the preference prompts, DPO and the evaluation give the policy the current session only "
                         "(mode, cohort, the session's tracks), so it must be cloned with context: session")
    p_model_args, p_train_args = parse_section(
        (PolicyModelArguments, PolicyTrainingArguments), policy_section, "policy",
        output_dir=str(checkpoints / "policy_bc"))
    try:
        utility = Utility.load(config.get("utility") or "mode_aware")
    except ValueError as err:
        raise ValueError(f"pipeline config, section 'utility': {err}") from None
    (pref_args,) = parse_section((PreferenceArguments,), config.get("preferences"), "preferences")
    (dpo_args,) = parse_section((AmrsDPOConfig,), config.get("dpo"), "dpo", output_dir=str(checkpoints / "policy_dpo"))
    (eval_args,) = parse_section((PolicyEvaluationArguments,), config.get("evaluation"), "evaluation")
    if data_args.max_history <= eval_args.horizon:
        raise ValueError(f"pipeline config: data.max_history ({data_args.max_history}) must exceed evaluation.horizon "
                         f"({eval_args.horizon})")

    out.mkdir(parents=True, exist_ok=True)

    # ---- data ----
    resolved["data"] = dataclasses.asdict(data_args)
    world = truth = test_truth = None
    if data_args.data_source == "synthetic" and not data_args.data_path:
        world, log, truth = generate_world(data_args)
    else:
        log = load_log(data_args.data_source, data_args.data_path, **data_args.data_options)
    splits = split_log(log, data_args)
    if world is not None:
        _, test_truth = split_with_truth(log, truth, data_args)
    if pref_args.strategy == "feedback_correction":
        from amrs_hf.preferences import negative_feedback

        if not negative_feedback(splits["train"], pref_args.skip_threshold, pref_args.dislike_score).any():
            raise ValueError(
                "pipeline config, section 'preferences': strategy feedback_correction needs negative feedback, but "
                f"no training play is disliked (rating score <= dislike_score={pref_args.dislike_score}, or no like) "
                f"or skipped (engagement < skip_threshold={pref_args.skip_threshold}); raise those thresholds or use "
                "strategy: rollout or both")
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    metrics = {"data": {
        "source": data_args.data_source, "plays": log.num_plays, "tracks": len(log.catalogue),
        **{f"{part}_listeners": len(splits[part].plays.unique("user_id")) for part in ("train", "valid", "test")},
        **{f"{part}_plays": splits[part].num_plays for part in ("train", "valid", "test")},
        "synthetic_truth": world is not None,
    }}
    _log(f"data: {json.dumps(metrics['data'])}")

    # ---- world model ----
    wm_train_args.disable_tqdm = not show_progress
    members = []
    for member in range(wm_train_args.ensemble_size):
        _log(f"world model: training member {member + 1}/{wm_train_args.ensemble_size}")
        args = dataclasses.replace(wm_train_args, seed=wm_train_args.seed + member,
                                   output_dir=str(checkpoints / "world_model" / f"member_{member}"))
        members.append(train_world_model(splits, log, data_args, wm_model_args, args, tokenizer=tokenizer)[0])
    world_model = members[0] if len(members) == 1 else WorldModelEnsemble(members)
    world_model.eval()
    wm_fidelity = fidelity(members, splits["test"], tokenizer, data_args)
    metrics["world_model"] = {
        "members": len(members),
        "test": {o: {k: v for k, v in m.items() if k in ("r2", "pearson_r", "mae", "coverage90", "auc", "ece",
                                                           "listened_auc", "n")} for o, m in wm_fidelity.items()},
    }
    save_world_model(world_model, out / "world_model")
    tokenizer.save_pretrained(out / "world_model")
    resolved["world_model"] = {"model": dataclasses.asdict(wm_model_args), "training": wm_train_args.to_dict()}
    _write_json(out / "world_model" / TRAIN_CONFIG_FILE,
                {"data": dataclasses.asdict(data_args), **resolved["world_model"]})
    _write_json(out / "world_model" / "eval_results.json", wm_fidelity)
    _log(f"world model: held-out R² valence {wm_fidelity['valence'].get('r2', float('nan')):.3f}, arousal "
         f"{wm_fidelity['arousal'].get('r2', float('nan')):.3f}")

    # ---- behaviour cloning ----
    p_train_args.disable_tqdm = not show_progress
    _log("behaviour cloning")
    bc, _ = train_policy(splits, log, p_data_args, p_model_args, p_train_args, tokenizer=tokenizer)
    bc.eval()
    def ranking(model):
        return next_track_metrics(model, tokenizer, splits["test"], splits["train"], k=p_data_args.eval_k,
                                  context=p_data_args.context, max_length=p_data_args.max_length)

    bc_ranking = ranking(bc)
    bc.save_pretrained(out / "policy_bc")
    tokenizer.save_pretrained(out / "policy_bc")
    resolved["policy"] = {"data": dataclasses.asdict(p_data_args), "model": dataclasses.asdict(p_model_args),
                          "training": p_train_args.to_dict()}
    _write_json(out / "policy_bc" / TRAIN_CONFIG_FILE, resolved["policy"])  # as `amrs train-policy` writes them
    _write_json(out / "policy_bc" / "eval_results.json", bc_ranking)
    _log(f"behaviour cloning: held-out {json.dumps({k: v for k, v in bc_ranking.items() if '@' in k})}")

    # ---- utility and preferences ----
    resolved["utility"] = utility.to_dict()
    resolved["preferences"] = dataclasses.asdict(pref_args)
    dpo_args.disable_tqdm = not show_progress
    resolved["dpo"] = dpo_args.to_dict()
    policy, preference_summaries = copy.deepcopy(bc), []  # DPO trains in place; bc stays the cloned policy
    for round_index in range(dpo_args.rounds):
        _log(f"preferences (round {round_index + 1}/{dpo_args.rounds}, strategy {pref_args.strategy})")
        round_args = dataclasses.replace(pref_args, seed=pref_args.seed + round_index)
        pairs = build_preferences(world_model, tokenizer, splits["train"], utility, round_args, policy_model=policy,
                                  max_history=data_args.max_history, show_progress=show_progress)
        summary = pairs.summary()
        preference_summaries.append(summary)
        dataset = pairs.to_dataset()
        _log(f"preferences: {json.dumps(summary)}")
        _log(f"DPO round {round_index + 1}/{dpo_args.rounds} on {len(dataset)} pairs")
        round_config = dataclasses.replace(dpo_args, output_dir=str(checkpoints / f"policy_dpo_round_{round_index}"))
        policy = run_dpo(round_config, policy=policy, reference=bc, tokenizer=tokenizer, train_dataset=dataset)
        policy.eval()
    dataset.save_to_disk(str(out / "preferences"))
    (out / "preferences" / "summary.json").write_text(json.dumps({"rounds": preference_summaries}, indent=2))
    policy.save_pretrained(out / "policy_dpo")
    tokenizer.save_pretrained(out / "policy_dpo")
    _write_json(out / "policy_dpo" / TRAIN_CONFIG_FILE, {"data": resolved["policy"]["data"], "dpo": resolved["dpo"],
                                                           "preferences": resolved["preferences"]})
    dpo_ranking = ranking(policy)

    # ---- evaluation ----
    resolved["evaluation"] = dataclasses.asdict(eval_args)
    # the language-model policies read at most what behaviour cloning trained on (its windows of max_length tokens)
    policies = standard_policies(world_model, tokenizer, utility, bc, policy, splits["train"],
                                 max_prompt_tracks=prompt_tracks(p_data_args.max_length))
    _log(f"evaluating {', '.join(policies)} on held-out listeners")
    evaluation = evaluate_policies(world_model, tokenizer, utility, policies, splits["test"], eval_args,
                                   max_history=data_args.max_history, world=world, truth=test_truth,
                                   show_progress=show_progress)
    metrics["policies"] = evaluation["policies"]
    metrics["policies"]["bc"]["ranking"] = bc_ranking
    metrics["policies"]["dpo"]["ranking"] = dpo_ranking
    metrics["preferences"] = {"rounds": preference_summaries}
    metrics["evaluation"] = evaluation["setup"]
    metrics["runtime_s"] = round(time.time() - started, 1)
    write_report(metrics, evaluation["track_counts"], str(out / "report"))

    # ---- cards and the resolved config ----
    source = [data_args.data_source]
    write_card(out / "world_model", "amrs_world_model", "AMRS world model (`amrs_world_model`)", metrics["world_model"],
               datasets=source)
    write_card(out / "policy_bc", "amrs_policy", "AMRS recommender policy, cloned from the logs",
               {"ranking": bc_ranking, "rollouts": _card_figures(metrics["policies"]["bc"])}, datasets=source)
    write_card(out / "policy_dpo", "amrs_policy", "AMRS recommender policy, DPO in the world model",
               {"ranking": dpo_ranking, "rollouts": _card_figures(metrics["policies"]["dpo"]),
                "preferences": preference_summaries[-1]}, datasets=source)
    (out / "pipeline_config.json").write_text(json.dumps(resolved, indent=2, default=str))
    _log(f"done in {metrics['runtime_s']:.0f} s: {out / 'report' / 'report.md'}")
    return metrics


def _card_figures(entry: dict) -> dict:
    keep = ("predicted", "oracle", "diversity", "kl_to_bc", "utility_gain_vs_bc", "oracle_utility_gain_vs_bc")
    return {k: copy.deepcopy(entry[k]) for k in keep if k in entry}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amrs pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help=f"pipeline YAML (default: the quickstart, {QUICKSTART.relative_to(QUICKSTART.parents[3])})")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", default=None,
                        help="where everything is written (default: outputs/<config name>)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (logs stay)")
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    path = Path(args.config) if args.config else QUICKSTART
    if args.config is None and not QUICKSTART.exists():
        raise FileNotFoundError(f"the quickstart config {QUICKSTART} is missing (amrs_hf not run from a source "
                                "checkout?): pass --config")
    config = load_config(path)
    output_dir = args.output_dir or str(Path("outputs") / path.stem.removeprefix("config_"))
    np.seterr(all="ignore")
    run_pipeline(config, output_dir, show_progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
