"""`amrs pipeline`: the smoke variants run every stage and honour the output contract; the full quickstart (slow)
meets the issue's criteria on the synthetic world."""

import json
import pathlib

import datasets
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoModelForCausalLM

from amrs_hf.scripts import evaluate
from amrs_hf.scripts.pipeline import QUICKSTART, load_config, run_pipeline
from amrs_hf.simulation.ensemble import WorldModelEnsemble, load_world_model

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"
POLICIES = ("random", "popular", "bc", "dpo", "greedy")
OUTCOMES = {"engagement", "rating", "valence", "arousal", "utility"}
DIVERSITY = {"coverage", "entropy", "gini", "ild", "repeat_rate"}


def check_contract(out: pathlib.Path, synthetic: bool) -> dict:
    # the three model folders load with from_pretrained and carry a card with this run's figures
    world_model = AutoModel.from_pretrained(out / "world_model")
    assert type(world_model).__name__ == "AmrsWorldModel"
    assert isinstance(load_world_model(out / "world_model"), WorldModelEnsemble)
    bc = AutoModelForCausalLM.from_pretrained(out / "policy_bc")
    dpo = AutoModelForCausalLM.from_pretrained(out / "policy_dpo")
    changed = [n for n, p in dpo.state_dict().items() if not torch.equal(p, bc.state_dict()[n])]
    assert changed, "DPO left the cloned policy unchanged (or the folders hold the same model)"
    for folder in ("world_model", "policy_bc", "policy_dpo"):
        card = ModelCard.load(out / folder / "README.md")
        assert card.data.library_name == "amrs_hf"
        assert "## Figures of this run" in card.text
    # the preference dataset
    pairs = datasets.load_from_disk(str(out / "preferences"))
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names) and len(pairs) > 0
    assert all(c.startswith(" t:") for c in pairs["chosen"][:20])
    assert json.loads((out / "preferences" / "summary.json").read_text())["rounds"]
    # the metrics and the report
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"data", "world_model", "policies"} <= set(metrics)
    assert set(metrics["policies"]) == set(POLICIES)
    for name, entry in metrics["policies"].items():
        assert set(entry["predicted"]) == OUTCOMES, name
        assert set(entry["diversity"]) == DIVERSITY, name
        assert "kl_to_bc" in entry
        assert ("oracle" in entry) == synthetic, name
        if synthetic:
            assert set(entry["oracle"]) == OUTCOMES
        for stats in entry["predicted"].values():
            low, high = stats["ci95"]
            assert low <= stats["mean"] <= high
    assert metrics["policies"]["bc"]["kl_to_bc"] == 0.0
    assert metrics["policies"]["dpo"]["kl_to_bc"] > 0.0
    report = (out / "report" / "report.md").read_text()
    plots = ["affect.png", "diversity.png", "track_frequency.png"] + (
        ["utility_true_vs_predicted.png"] if synthetic else [])
    for plot in plots:
        assert (out / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plot in report
    assert json.loads((out / "pipeline_config.json").read_text())["dpo"]["rounds"] >= 1
    return metrics


def test_quickstart_smoke_runs_every_stage(tmp_path):
    config = load_config(RECIPES / "quickstart" / "pipeline" / "config_smoke.yaml")
    metrics = run_pipeline(config, tmp_path, show_progress=False)
    assert check_contract(tmp_path, synthetic=True) == json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["data"]["synthetic_truth"] is True
    assert len(metrics["preferences"]["rounds"]) == 2  # two rounds of iterative DPO
    # the stand-alone commands read what the pipeline wrote: `amrs evaluate` on its folders gives the same figures
    assert json.loads((tmp_path / "policy_bc" / "train_config.json").read_text())["data"]["max_length"] == 32
    assert json.loads((tmp_path / "world_model" / "train_config.json").read_text())["data"]["max_history"] == 64
    data, evaluation = config["data"], config["evaluation"]
    assert evaluate.main([
        "--world_model_path", str(tmp_path / "world_model"), "--bc_path", str(tmp_path / "policy_bc"),
        "--dpo_path", str(tmp_path / "policy_dpo"), "--utility", config["utility"],
        "--data_source", data["data_source"], "--data_options", json.dumps(data["data_options"]),
        "--split_fractions", *map(str, data["split_fractions"]), "--split_seed", str(data["split_seed"]),
        "--max_history", str(data["max_history"]), *[f"--{k}={v}" for k, v in evaluation.items()],
        "--output_dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["policies"]
    for name in POLICIES:
        for part in ("predicted", "oracle", "diversity"):
            assert again[name][part] == metrics["policies"][name][part], (name, part)


def test_situnes_smoke_runs_on_the_real_logs(tmp_path, situnes_dir, monkeypatch):
    config = load_config(RECIPES / "situnes" / "pipeline" / "config_smoke.yaml")
    config["data"]["data_path"] = str(situnes_dir)
    run_pipeline(config, tmp_path, show_progress=False)
    metrics = check_contract(tmp_path, synthetic=False)
    assert metrics["data"]["plays"] == 2006


def test_unknown_sections_and_keys_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {}\nworld_modle: {}\n")
    with pytest.raises(ValueError, match="world_modle"):
        load_config(bad)
    bad.write_text("data: {data_source: synthetic, no_such_option: 1}\n")
    with pytest.raises(ValueError, match="section 'data'.*no_such_option"):
        run_pipeline(load_config(bad), tmp_path / "out", show_progress=False)


@pytest.mark.slow
def test_quickstart_meets_the_criteria(tmp_path):
    """The README's main command: DPO's true utility beats the cloned policy's (95% interval above zero), greedy
    collapses (coverage below half of DPO's) while DPO keeps its entropy within 20% of the cloned policy's."""
    metrics = run_pipeline(load_config(QUICKSTART), tmp_path, show_progress=False)
    policies = metrics["policies"]
    assert policies["dpo"]["oracle_utility_gain_vs_bc"]["ci95"][0] > 0
    assert policies["greedy"]["diversity"]["coverage"] < 0.5 * policies["dpo"]["diversity"]["coverage"]
    ratio = policies["dpo"]["diversity"]["entropy"] / policies["bc"]["diversity"]["entropy"]
    assert 0.8 <= ratio <= 1.2
