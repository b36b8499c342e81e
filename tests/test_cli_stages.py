"""`amrs build-preferences` and `amrs evaluate` end to end on a tiny synthetic log, with a tiny world model and tiny
policies saved to folders the way the training stages write them."""

import json

import datasets
import pytest
import torch

from amrs_hf import cli
from amrs_hf.data import load_log
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM
from amrs_hf.models.world_model import AmrsWorldModel
from amrs_hf.models.world_model.processing_world_model import set_catalogue, world_model_config
from amrs_hf.scripts import build_preferences, evaluate
from amrs_hf.simulation.ensemble import save_world_model

DATA_OPTIONS = {"num_plays": 400, "num_users": 20, "num_tracks": 30, "seed": 0}
DATA_ARGS = ["--data_source", "synthetic", "--data_options", json.dumps(DATA_OPTIONS), "--max_history", "16"]
PREDICTED_KEYS = {"engagement", "rating", "valence", "arousal", "utility"}


def tiny_policy(tokenizer, seed):
    torch.manual_seed(seed)
    return AmrsPolicyForCausalLM(AmrsPolicyConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, dropout=0.0, initializer_range=0.2, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    log = load_log("synthetic", **DATA_OPTIONS)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    torch.manual_seed(0)
    config = world_model_config(log, tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    model = AmrsWorldModel(config)
    set_catalogue(model, log.catalogue_frame(), tokenizer)
    save_world_model(model, root / "world_model")
    tokenizer.save_pretrained(root / "world_model")
    for name, seed in (("policy_bc", 1), ("policy_dpo", 2)):
        tiny_policy(tokenizer, seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def test_build_preferences_writes_a_dpo_dataset(folders, capsys):
    out = folders / "preferences"
    code = build_preferences.main(["--world_model_path", str(folders / "world_model"), *DATA_ARGS,
                                   "--utility", "paper", "--num_neighbours", "3", "--num_random", "2",
                                   "--min_margin", "0", "--output_dir", str(out)])
    assert code == 0
    summary = json.loads((out / build_preferences.SUMMARY_FILE).read_text())
    dataset = datasets.load_from_disk(str(out))
    assert summary["pairs"] == len(dataset) > 0
    assert summary["pairs"] + sum(summary["dropped"].values()) == summary["considered"]
    for column in ("prompt", "chosen", "rejected"):
        assert dataset.features[column] == datasets.Value("string")
    for row in dataset.select(range(min(5, len(dataset)))):
        assert row["chosen"].startswith(" t:") and row["rejected"].startswith(" t:")
        assert row["chosen"] != row["rejected"]
        assert row["chosen_utility"] - row["rejected_utility"] > 0
        assert row["prompt"].split()[0].startswith("<mode:")
    assert str(out) in capsys.readouterr().out


def test_build_preferences_rollout_strategy(folders):
    out = folders / "preferences_rollout"
    code = cli.main(["build-preferences", "--world_model_path", str(folders / "world_model"), *DATA_ARGS,
                     "--strategy", "rollout", "--policy_path", str(folders / "policy_bc"), "--num_prefixes", "4",
                     "--num_continuations", "2", "--continuation_length", "2", "--num_rollouts", "1",
                     "--min_margin", "0", "--output_dir", str(out)])
    assert code == 0
    dataset = datasets.load_from_disk(str(out))
    assert 0 < len(dataset) <= 4
    for row in dataset:
        assert len(row["chosen"].split()) == len(row["rejected"].split()) == 2


def test_evaluate_writes_metrics_with_the_contract_keys(folders):
    out = folders / "report"
    code = evaluate.main(["--world_model_path", str(folders / "world_model"), "--bc_path", str(folders / "policy_bc"),
                          "--dpo_path", str(folders / "policy_dpo"), *DATA_ARGS, "--horizon", "2",
                          "--num_rollouts", "2", "--num_prefixes", "4", "--output_dir", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"data", "policies", "evaluation"}
    assert metrics["data"]["source"] == "synthetic" and metrics["data"]["test_plays"] > 0
    assert metrics["evaluation"]["prefixes"] == 4 and metrics["evaluation"]["horizon"] == 2
    assert list(metrics["policies"]) == ["random", "popular", "bc", "dpo", "greedy"]
    for name, entry in metrics["policies"].items():
        assert set(entry["predicted"]) == set(entry["oracle"]) == PREDICTED_KEYS, name
        for stats in (*entry["predicted"].values(), *entry["oracle"].values()):
            assert set(stats) == {"mean", "ci95", "n"} and stats["n"] == 4
        assert set(entry["diversity"]) == {"coverage", "entropy", "gini", "ild", "repeat_rate"}
        assert "kl_to_bc" in entry
    assert metrics["policies"]["bc"]["kl_to_bc"] == 0.0
    assert metrics["policies"]["dpo"]["kl_to_bc"] > 0  # two different policies
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in metrics["policies"])
    for png in ("affect.png", "diversity.png", "track_frequency.png", "utility_true_vs_predicted.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_without_dpo(folders):
    out = folders / "report_no_dpo"
    assert evaluate.main(["--world_model_path", str(folders / "world_model"), "--bc_path",
                          str(folders / "policy_bc"), *DATA_ARGS, "--horizon", "2", "--num_rollouts", "1",
                          "--num_prefixes", "3", "--output_dir", str(out)]) == 0
    assert list(json.loads((out / "metrics.json").read_text())["policies"]) == ["random", "popular", "bc", "greedy"]


@pytest.mark.parametrize("command, extra", [("build-preferences", []), ("evaluate", ["--bc_path", "x"])])
def test_a_missing_world_model_path_is_a_clear_error(command, extra):
    with pytest.raises(ValueError, match="--world_model_path"):
        cli.main([command, *DATA_ARGS, *extra])
