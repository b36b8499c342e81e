"""DPO with TRL: on hand-made preference pairs the policy's margin log p(chosen) - log p(rejected) rises above the
reference's; the result reloads; LoRA trains and merges; completions without a leading space are fixed, bad pairs
are refused naming row and column."""

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM

from amrs_hf.cli import main as amrs
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM, completion_log_probs
from amrs_hf.models.policy.dpo import AmrsDPOConfig, prepare_preferences, run_dpo

NUM_TRACKS = 64


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


def make_policy(tokenizer, seed=0):
    torch.manual_seed(seed)
    return AmrsPolicyForCausalLM(AmrsPolicyConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, dropout=0.0, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))


# Calm sessions prefer slow tracks (0-9), energize sessions fast ones (50-59); half the completions lack the space.
PAIRS = {
    "prompt": ["<mode:calm> <cohort:clinical> t:trk20", "<mode:calm> <cohort:consumer> t:trk33 t:trk21",
               "<mode:energize> <cohort:consumer> t:trk20", "<mode:energize> <cohort:clinical>",
               "<mode:calm> <cohort:clinical>", "<mode:energize> <cohort:consumer> t:trk40 t:trk41"],
    "chosen": [" t:trk1 t:trk2 t:trk3", "t:trk4 t:trk5", " t:trk50 t:trk51 t:trk52", "t:trk53 t:trk54",
               " t:trk6 t:trk7", "t:trk55 t:trk56 t:trk57"],
    "rejected": [" t:trk50 t:trk51 t:trk52", "t:trk53 t:trk54", " t:trk1 t:trk2 t:trk3", "t:trk4 t:trk5",
                 " t:trk55 t:trk56", "t:trk6 t:trk7 t:trk8"],
}


def margins(model, tokenizer, pairs):
    return (completion_log_probs(model, tokenizer, pairs["prompt"], pairs["chosen"])
            - completion_log_probs(model, tokenizer, pairs["prompt"], pairs["rejected"]))


def dpo_config(tmp_path, **overrides):
    return AmrsDPOConfig(**{**dict(output_dir=str(tmp_path / "dpo"), learning_rate=3e-3, num_train_epochs=15,
                                   per_device_train_batch_size=6, beta=0.1, logging_steps=5, disable_tqdm=True,
                                   seed=0), **overrides})


def test_cpu_safe_defaults():
    config = AmrsDPOConfig(output_dir="unused")
    assert (config.bf16, bool(config.activation_checkpointing), config.report_to, config.rounds) == (
        False, False, [], 1)


def test_prepare_preferences_adds_space_and_bos(tokenizer):
    prepared = prepare_preferences(datasets.Dataset.from_dict(PAIRS), tokenizer)
    assert prepared[1]["chosen"] == " t:trk4 t:trk5" and prepared[0]["chosen"] == " t:trk1 t:trk2 t:trk3"
    assert prepared[0]["prompt"] == "<bos> <mode:calm> <cohort:clinical> t:trk20"
    # why the space matters: without it the prompt's last track and the first completion track fuse into <unk>
    fused = tokenizer(PAIRS["prompt"][1] + PAIRS["chosen"][1], add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id in fused
    fixed = tokenizer(prepared[1]["prompt"] + prepared[1]["chosen"], add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in fixed


@pytest.mark.parametrize("change, message", [
    ({"rejected": ["t:nope"] + PAIRS["rejected"][1:]}, r"row 0 column 'rejected' has tokens outside"),
    ({"chosen": PAIRS["chosen"][:2] + [""] + PAIRS["chosen"][3:]}, r"row 2 column 'chosen' has no track"),
])
def test_bad_pairs_are_named(tokenizer, change, message):
    with pytest.raises(ValueError, match=message):
        prepare_preferences(datasets.Dataset.from_dict({**PAIRS, **change}), tokenizer)
    with pytest.raises(ValueError, match="lacks column"):
        prepare_preferences(datasets.Dataset.from_dict({"prompt": ["x"], "chosen": ["t:trk1"]}), tokenizer)


@pytest.mark.parametrize("checkpointing", [False, True])  # TRL's own default turns it on
def test_dpo_raises_the_margin_and_reloads(tokenizer, tmp_path, checkpointing):
    policy = make_policy(tokenizer)
    reference = make_policy(tokenizer)  # same seed: an identical copy
    before = margins(reference, tokenizer, PAIRS)
    trained = run_dpo(dpo_config(tmp_path, activation_checkpointing=checkpointing), policy=policy, tokenizer=tokenizer,
                      train_dataset=datasets.Dataset.from_dict(PAIRS))
    after = margins(trained, tokenizer, PAIRS)
    assert (after - before).min() > 1.0, (before, after)  # every pair (it gave 2.7-5.1); learning happened
    torch.testing.assert_close(margins(reference, tokenizer, PAIRS), before)  # the reference copy stayed put
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo")
    assert type(reloaded) is AmrsPolicyForCausalLM and (tmp_path / "dpo" / "train_config.json").exists()
    torch.testing.assert_close(margins(reloaded, tokenizer, PAIRS), after, rtol=0, atol=0)


def test_dpo_with_lora_from_folders(tokenizer, tmp_path):
    policy = make_policy(tokenizer)
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(PAIRS)}).save_to_disk(str(tmp_path / "pairs"))
    before = margins(policy, tokenizer, PAIRS)
    assert amrs(["dpo", "--policy_path", str(tmp_path / "policy"), "--preferences_path", str(tmp_path / "pairs"),
                 "--output_dir", str(tmp_path / "dpo"), "--use_lora", "true", "--lora_r", "4",
                 "--learning_rate", "1e-2", "--num_train_epochs", "15", "--per_device_train_batch_size", "6",
                 "--disable_tqdm", "true"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo")
    assert type(merged) is AmrsPolicyForCausalLM
    assert not any("lora" in name for name in merged.state_dict())
    after = margins(merged, tokenizer, PAIRS)
    assert (after - before).mean() > 0.5, (before, after)
