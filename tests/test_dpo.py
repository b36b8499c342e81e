"""DPO with TRL: on hand-made preference pairs the policy's margin log p(chosen) - log p(rejected) rises above the
reference's; the result reloads; LoRA trains and merges; completions without a leading space are fixed, bad pairs
are refused naming row and column."""

import math

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM

from amrs_hf.cli import main as amrs
from amrs_hf.data.tokenizer import build_track_tokenizer
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM, completion_log_probs
from amrs_hf.models.policy.dpo import AmrsDPOConfig, build_dpo_trainer, prepare_preferences, run_dpo

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
    before = margins(make_policy(tokenizer), tokenizer, PAIRS)  # same seed: the untrained policy's margins
    trained = run_dpo(dpo_config(tmp_path, activation_checkpointing=checkpointing), policy=policy, tokenizer=tokenizer,
                      train_dataset=datasets.Dataset.from_dict(PAIRS))
    after = margins(trained, tokenizer, PAIRS)
    assert (after - before).min() > 1.0, (before, after)  # every pair (it gave 2.7-5.1); learning happened
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo")
    assert type(reloaded) is AmrsPolicyForCausalLM and (tmp_path / "dpo" / "train_config.json").exists()
    torch.testing.assert_close(margins(reloaded, tokenizer, PAIRS), after, rtol=0, atol=0)


def train_against_reference(tokenizer, tmp_path, beta, epochs=40):
    """DPO from an identical copy of the reference (dropout 0, so the two agree exactly before the first step)."""
    reference = make_policy(tokenizer)
    trainer = build_dpo_trainer(dpo_config(tmp_path, beta=beta, num_train_epochs=epochs, logging_steps=1),
                                policy=make_policy(tokenizer), tokenizer=tokenizer, reference=reference,
                                train_dataset=datasets.Dataset.from_dict(PAIRS))
    frozen = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, reference, frozen, losses


def log_ratio_size(model, reference, tokenizer):
    """Mean |log p(y|x) - log p_ref(y|x)| over the pairs' chosen and rejected completions."""
    return torch.cat([completion_log_probs(model, tokenizer, PAIRS["prompt"], PAIRS[c])
                      - completion_log_probs(reference, tokenizer, PAIRS["prompt"], PAIRS[c])
                      for c in ("chosen", "rejected")]).abs().mean().item()


def test_dpo_loss_leaves_ln2_and_the_reference_stays_frozen(tokenizer, tmp_path):
    trainer, reference, frozen, losses = train_against_reference(tokenizer, tmp_path, beta=0.5)
    # policy == reference at the first step: every implicit reward is 0 and the loss is exactly -log sigmoid(0)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert losses[-1] < 0.05, losses  # a separable fixture: the pairs end up cleanly ordered (it gave 0.006)
    ref = trainer.ref_model
    assert ref is not trainer.model and ref is not reference and not any(p.requires_grad for p in ref.parameters())
    after = ref.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # not one reference weight moved
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), frozen.values()))
    assert not all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), frozen.values()))


def test_larger_beta_keeps_the_policy_closer_to_the_reference(tokenizer, tmp_path):
    sizes = {}
    for beta in (0.1, 2.0):
        trainer, reference, _, losses = train_against_reference(tokenizer, tmp_path / str(beta), beta=beta)
        sizes[beta] = log_ratio_size(trainer.model, reference, tokenizer)
        assert losses[-1] < math.log(2) - 0.2, (beta, losses)  # both learned the pairs
    # (it gave 4.8 and 2.0): beta prices the distance to the reference, so the stricter one stops nearer to it
    assert sizes[2.0] < 0.6 * sizes[0.1], sizes


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
