"""The recommender policy: config validation, names, save/load (class, AutoModelForCausalLM, remote code without
amrs_hf), one optimisation step, padding, the KV cache against recompute, and track-only generation."""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessorList

import amrs_hf
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.models.policy import (
    AmrsPolicyConfig,
    AmrsPolicyForCausalLM,
    TrackOnlyLogitsProcessor,
    encode_prompts,
    prompt_text,
    recommend,
)

NUM_TRACKS = 64
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


def make_policy(tokenizer, seed=0, **overrides) -> AmrsPolicyForCausalLM:
    """A tiny policy (2 layers, hidden 32) over a 64-track catalogue, in eval mode without dropout."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, dropout=0.0, initializer_range=0.2,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    return AmrsPolicyForCausalLM(AmrsPolicyConfig(**{**kwargs, **overrides})).eval()


def make_batch(tokenizer):
    prompts = [prompt_text("calm", "clinical", ["trk1", "trk5", "trk9", "trk2"]),
               prompt_text(None, "consumer", ["trk3"]), prompt_text("focus", None, [])]
    return dict(encode_prompts(tokenizer, prompts))


# ---- names, config ----
def test_names_are_load_bearing():
    assert AmrsPolicyConfig.model_type == "amrs_policy"
    assert AmrsPolicyForCausalLM.config_class is AmrsPolicyConfig
    assert AutoConfig.for_model("amrs_policy").__class__ is AmrsPolicyConfig
    assert amrs_hf.models.policy.__name__.endswith(".policy")
    card = ROOT / "model_cards" / f"{AmrsPolicyConfig.model_type}.md"
    assert card.is_file(), f"the model card is named after model_type: {card}"
    assert "AmrsPolicyForCausalLM" in card.read_text()


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(hidden_size=32.0), "hidden_size"),
    (dict(vocab_size=True), "vocab_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(pad_token_id=100), "pad_token_id"),
    (dict(bos_token_id=0), "pad_token_id and bos_token_id must be different"),
    (dict(layer_norm_eps=0), "layer_norm_eps"),
    (dict(tie_word_embeddings="yes"), "tie_word_embeddings"),
    (dict(hiden_size=64), "did you mean 'hidden_size'"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AmrsPolicyConfig(**kwargs)


def test_config_aliases_and_roundtrip(tmp_path):
    config = AmrsPolicyConfig(num_layers=3, num_heads=2, hidden_size=16)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_layers) == (3, 2, 3)
    config.save_pretrained(tmp_path)
    assert AmrsPolicyConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_prompt_text():
    assert prompt_text("calm", "clinical", ["874", "707"]) == "<mode:calm> <cohort:clinical> t:874 t:707"
    assert prompt_text(None, None, [3]) == "t:3"


def test_unknown_prompt_token_is_named(tokenizer):
    with pytest.raises(ValueError, match="t:nope"):
        encode_prompts(tokenizer, ["<mode:calm> t:nope"])


# ---- save / load ----
def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_save_reload_is_exact_and_tied(tokenizer, tmp_path):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path)
    reloaded = AmrsPolicyForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), rtol=0, atol=0)


def test_untied_save_reload(tokenizer, tmp_path):
    model = make_policy(tokenizer, tie_word_embeddings=False)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    reloaded = AmrsPolicyForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)


def test_auto_model_for_causal_lm(tokenizer, tmp_path):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_policy.AmrsPolicyConfig",
                                 "AutoModelForCausalLM": "modeling_policy.AmrsPolicyForCausalLM"}
    assert (tmp_path / "modeling_policy.py").exists() and (tmp_path / "configuration_policy.py").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is AmrsPolicyForCausalLM
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), rtol=0, atol=0)


REMOTE_SCRIPT = """
import importlib.util, sys
assert importlib.util.find_spec("amrs_hf") is None, "amrs_hf must not be importable here"
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
batch = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(**batch).logits
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
torch.save({"logits": logits, "generated": generated}, sys.argv[3])
"""


def test_trust_remote_code_without_amrs_hf(tokenizer, tmp_path):
    """A fresh interpreter without amrs_hf on its path (no site processing, so the editable install's .pth is not
    read) loads the folder with trust_remote_code and gives bit-identical logits and the same greedy generation."""
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path / "model")
    torch.save(batch, tmp_path / "batch.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], HF_MODULES_CACHE=str(tmp_path / "modules"),
               HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-S", "-c", REMOTE_SCRIPT, str(tmp_path / "model"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt")], check=True, cwd=tmp_path, env=env, timeout=120)
    remote = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(remote["logits"], _logits(model, batch), rtol=0, atol=0)
    with torch.no_grad():
        local = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(remote["generated"], local)


# ---- training ----
def test_one_step_moves_every_parameter(tokenizer, tmp_path):
    model = make_policy(tokenizer).train()
    batch = make_batch(tokenizer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(**batch, labels=labels).loss.backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, initial[n])]
    assert not unchanged and len(initial) > 10
    model.save_pretrained(tmp_path)
    reloaded = AmrsPolicyForCausalLM.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_loss_is_mean_next_token_nll(tokenizer):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    log_probs = out.logits[:, :-1].log_softmax(-1)
    target = labels[:, 1:]
    valid = target != -100
    expected = -log_probs.gather(-1, target.clamp(min=0)[..., None])[..., 0][valid].mean()
    torch.testing.assert_close(out.loss, expected)


def test_gradient_checkpointing_gives_same_gradients(tokenizer):
    model = make_policy(tokenizer).train()
    batch = make_batch(tokenizer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(**batch, labels=labels).loss.backward()
    for a, b in zip(plain, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- padding, causality, cache ----
def test_left_padding_and_future_do_not_leak(tokenizer):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    full = _logits(model, batch)
    for row in range(3):
        real = batch["attention_mask"][row].bool()
        alone = _logits(model, {"input_ids": batch["input_ids"][row, real][None]})
        torch.testing.assert_close(full[row, real], alone[0], rtol=1e-5, atol=1e-5)
    changed = batch["input_ids"].clone()
    changed[0, -1] = track_token_ids(tokenizer)[7]  # the last token can change no earlier prediction
    torch.testing.assert_close(_logits(model, {**batch, "input_ids": changed})[0, :-1], full[0, :-1], rtol=0, atol=0)


def test_cached_greedy_generation_equals_recompute(tokenizer):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    lengths = []
    hook = model.model.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(
        kwargs["input_ids"].shape[1]), with_kwargs=True)
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
        cached_lengths, lengths[:] = list(lengths), []
        recomputed = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    hook.remove()
    assert cached_lengths[1:] == [1] * 11, "with the cache each step feeds one new token"
    assert lengths[-1] == batch["input_ids"].shape[1] + 11, "without it the whole sequence is recomputed"
    assert torch.equal(cached, recomputed)
    assert len(set(cached[:, -12:].flatten().tolist())) > 3  # not a degenerate constant sequence
    with torch.no_grad():  # the pre-transformers-5 keyword reaches the cache too
        first = model(**batch, use_cache=True)
        mask = torch.cat([batch["attention_mask"], torch.ones(3, 1, dtype=torch.long)], 1)
        step = model(input_ids=cached[:, -12:-11], attention_mask=mask, past_key_values=first.cache)
    assert torch.equal(step.logits[:, -1].argmax(-1), cached[:, -11])


# ---- generation ----
def test_sampled_generation_emits_only_tracks(tokenizer):
    model = make_policy(tokenizer)
    batch = make_batch(tokenizer)
    tracks = set(track_token_ids(tokenizer))
    kwargs = dict(max_new_tokens=10, do_sample=True, num_return_sequences=4, temperature=3.0, pad_token_id=0)
    torch.manual_seed(0)
    free = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
    assert set(free.flatten().tolist()) - tracks, "without the processor a hot sampler emits non-track tokens"
    torch.manual_seed(0)
    only = model.generate(**batch, **kwargs, logits_processor=LogitsProcessorList([TrackOnlyLogitsProcessor(
        tokenizer)]))[:, batch["input_ids"].shape[1]:]
    assert only.shape == (12, 10) and set(only.flatten().tolist()) <= tracks


def test_recommend_no_repeat(tokenizer):
    model = make_policy(tokenizer)
    history = [f"trk{i}" for i in range(0, 40, 2)]
    prompts = [prompt_text("calm", "clinical", history), prompt_text(None, None, [])]
    torch.manual_seed(0)
    recs = recommend(model, tokenizer, prompts, num_tracks=15, num_return_sequences=3, do_sample=True,
                     temperature=2.0)
    assert len(recs) == 6 and all(len(r) == 15 for r in recs)
    for r in recs[:3]:
        assert len(set(r)) == 15 and not set(r) & set(history)
    greedy = recommend(model, tokenizer, prompts[:1], num_tracks=15, no_repeat=False)
    assert len(greedy) == 1 and all(t.startswith("trk") for t in greedy[0])
    assert len(set(greedy[0])) < 15, "an untrained greedy policy repeats itself unless no_repeat"


def test_no_repeat_falls_back_when_every_track_was_heard(tokenizer):
    processor = TrackOnlyLogitsProcessor(tokenizer, no_repeat=True)
    every = torch.tensor([track_token_ids(tokenizer)])
    scores = processor(every, torch.zeros(1, len(tokenizer)))
    assert torch.isfinite(scores[0, every[0]]).all() and torch.isinf(scores[0, :10]).all()
