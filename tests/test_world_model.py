"""The world model: config validation, save/load (class, AutoModel, remote code without amrs_hf), causality, masked
losses, candidate scoring, the KV cache, ablations, and that it learns a known pattern."""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest
import torch
from transformers import AutoConfig, AutoModel

import amrs_hf
from amrs_hf.data import schema
from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.models.world_model import AmrsWorldModel, AmrsWorldModelConfig
from amrs_hf.models.world_model import configuration_world_model as cwm
from amrs_hf.models.world_model.modeling_world_model import HISTORY_SUMMARY

NUM_TRACKS = 64


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


def make_model(tokenizer, seed=0, **overrides) -> AmrsWorldModel:
    """A tiny world model (2 layers, hidden 32) over a 64-track catalogue with random normalised features, in eval
    mode without dropout; session inputs and pre-states in the history on (as `amrs train-world-model` trains)."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, dropout=0.0, context_vocab=["home", "work"],
                  use_session_inputs=True, pre_state_in_history=True, wide_history=True,
                  initializer_range=0.2,  # larger than the default 0.02, so an untrained model's outputs move
                  pad_token_id=tokenizer.pad_token_id, unk_token_id=tokenizer.unk_token_id)
    model = AmrsWorldModel(AmrsWorldModelConfig(**{**kwargs, **overrides}))
    features = torch.zeros(len(tokenizer), model.config.num_audio_features)
    features[track_token_ids(tokenizer)] = torch.randn(NUM_TRACKS, model.config.num_audio_features)
    model.set_catalogue_features(features, feature_mean=torch.rand(8), feature_std=torch.rand(8) + 0.5)
    return model.eval()


def make_batch(tokenizer, batch=3, length=6, seed=1, pad=True):
    """Sessions (B, T) with sparse outcomes (NaN = missing) and right padding in row 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(track_token_ids(tokenizer))[torch.randint(NUM_TRACKS, (batch, length), generator=g)]

    def sparse(p=0.3):
        value = torch.rand(batch, length, generator=g)
        return value.masked_fill(torch.rand(batch, length, generator=g) < p, float("nan"))

    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        mask[1, length - 2:] = 0
    session_start = (torch.rand(batch, length, generator=g) < 0.3).float()
    session_start[:, 0] = 1.0
    session_start[2, 0] = float("nan")  # a log that starts inside a session
    time_gap = torch.where(session_start == 1, 24 * torch.rand(batch, length, generator=g),
                           0.05 * torch.rand(batch, length, generator=g))
    time_gap[:, 0] = float("nan")  # nothing before the first play
    return dict(
        session_start=session_start, time_gap=time_gap,
        track_ids=ids, attention_mask=mask, engagement=sparse(), rating=sparse().round(), valence=sparse(),
        arousal=sparse(), pre_valence=sparse(), pre_arousal=sparse(),
        mode_ids=torch.randint(0, 5, (batch, 1), generator=g).expand(batch, length),
        cohort_ids=torch.randint(0, 3, (batch, 1), generator=g).expand(batch, length),
        context_ids=torch.randint(0, 3, (batch, length), generator=g),
    )


PREDICTIONS = ("engagement", "like_prob", "valence_mean", "valence_var", "arousal_mean", "arousal_var")


def assert_same_outputs(a, b, atol=0.0):
    for name in (*PREDICTIONS, "states", "next_state", "loss"):
        torch.testing.assert_close(a[name], b[name], rtol=0 if atol == 0 else 1e-5, atol=atol, msg=name)


# ---- names, config ----
def test_names_are_load_bearing():
    assert AmrsWorldModelConfig.model_type == "amrs_world_model"
    assert AmrsWorldModel.config_class is AmrsWorldModelConfig
    assert AutoConfig.for_model("amrs_world_model").__class__ is AmrsWorldModelConfig
    assert amrs_hf.models.world_model.__name__.endswith("world_model")
    # the config file may not import amrs_hf, so it copies these; they must agree with the schema
    assert cwm.OUTCOME_NAMES == schema.OUTCOMES
    assert cwm.DEFAULT_MODES == schema.MODES and cwm.DEFAULT_COHORTS == schema.COHORTS
    assert cwm.DEFAULT_AUDIO_FEATURES == schema.AUDIO_FEATURES
    # the model card's prose is found by model_type (model_cards/README.md)
    card = pathlib.Path(__file__).resolve().parents[1] / "model_cards" / f"{AmrsWorldModelConfig.model_type}.md"
    assert card.is_file() and "clinical" in card.read_text()


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
    (dict(dropout=-0.1), "dropout"),
    (dict(dropout=1.0), "dropout"),
    (dict(track_id_dropout=1.5), "track_id_dropout"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(hidden_size=32.0), "hidden_size"),
    (dict(outcome_loss_weights={"mood": 1.0}), "unknown outcomes"),
    (dict(outcome_loss_weights={"valence": -1.0}), "valence"),
    (dict(outcome_loss_weights=dict.fromkeys(schema.OUTCOMES, 0.0)), "all zero"),
    (dict(pad_token_id=100, vocab_size=74), "pad_token_id"),
    (dict(min_variance=0.3), "min_variance"),
    (dict(use_history="yes"), "use_history"),
    (dict(use_session_inputs=1), "use_session_inputs"),
    (dict(wide_history="yes"), "wide_history"),
    (dict(nll_beta=1.5), "nll_beta"),
    (dict(pre_state_in_history="no"), "pre_state_in_history"),
    (dict(modes=["calm", "calm"]), "modes"),
    (dict(audio_features=[]), "audio_features"),
    (dict(tie_word_embeddings=True), "tie_word_embeddings"),
    (dict(hiden_size=64), "did you mean 'hidden_size'"),
    (dict(num_modes=4), "derived from `modes`"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AmrsWorldModelConfig(**kwargs)


def test_config_ids_and_roundtrip(tmp_path):
    config = AmrsWorldModelConfig(context_vocab=["home", "gym"], outcome_loss_weights={"rating": 2.0})
    assert config.outcome_loss_weights == {"engagement": 1.0, "rating": 2.0, "valence": 1.0, "arousal": 1.0}
    assert (config.mode_id("energize"), config.mode_id(None), config.mode_id("party")) == (1, 0, 0)
    assert (config.cohort_id("consumer"), config.context_id("gym"), config.context_id("car")) == (2, 2, 0)
    assert (config.num_modes, config.num_cohorts, config.num_contexts) == (5, 3, 3)
    config.save_pretrained(tmp_path)
    reloaded = AmrsWorldModelConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()


# ---- save / load ----
def test_save_reload_is_exact(tokenizer, tmp_path):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path)
    reloaded = AmrsWorldModel.from_pretrained(tmp_path).eval()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        assert_same_outputs(model(**batch), reloaded(**batch))


def test_automodel_after_import(tokenizer, tmp_path):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_world_model.AmrsWorldModelConfig",
                                 "AutoModel": "modeling_world_model.AmrsWorldModel"}
    assert (tmp_path / "modeling_world_model.py").exists() and (tmp_path / "configuration_world_model.py").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is AmrsWorldModel
    with torch.no_grad():
        assert_same_outputs(model(**batch), loaded.eval()(**batch))


REMOTE_SCRIPT = """
import importlib.util, sys
assert importlib.util.find_spec("amrs_hf") is None, "amrs_hf must not be importable here"
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
batch = torch.load(sys.argv[2])
with torch.no_grad():
    out = model(**batch)
torch.save({k: out[k] for k in sys.argv[4:]}, sys.argv[3])
"""


def test_trust_remote_code_without_amrs_hf(tokenizer, tmp_path):
    """A fresh interpreter without amrs_hf on its path (no site processing, so the editable install's .pth is not
    read) loads the saved folder with trust_remote_code and gives bit-identical outputs."""
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    model.save_pretrained(tmp_path / "model")
    torch.save(batch, tmp_path / "batch.pt")
    site_packages = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=site_packages, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    names = [*PREDICTIONS, "states", "next_state", "loss"]
    subprocess.run([sys.executable, "-S", "-c", REMOTE_SCRIPT, str(tmp_path / "model"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt"), *names], check=True, cwd=tmp_path, env=env, timeout=120)
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        assert_same_outputs(model(**batch), remote)


def test_trained_weights_survive_reload(tokenizer, tmp_path):
    model = make_model(tokenizer).train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(**make_batch(tokenizer)).loss.backward()
    optimizer.step()
    trained = model.state_dict()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, initial[n])]
    assert len(changed) == len(list(model.parameters())), "every trainable parameter moves in one Adam step"
    model.save_pretrained(tmp_path)
    reloaded = AmrsWorldModel.from_pretrained(tmp_path)
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0, msg=name)


# ---- causality ----
def _predict(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return torch.stack([out[name] for name in PREDICTIONS], dim=-1)  # (B, T, 6)


@pytest.mark.parametrize("change", ["track", "outcomes", "pre_state", "context", "session"])
def test_causality(tokenizer, change):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer, pad=False)
    base = _predict(model, batch)
    t = 2
    edited = {k: v.clone() for k, v in batch.items()}
    if change == "track":
        edited["track_ids"][:, t] = torch.tensor(track_token_ids(tokenizer))[(batch["track_ids"][:, t] + 7) % 64]
    elif change == "outcomes":
        for name in schema.OUTCOMES:
            edited[name][:, t] = 1.0 - torch.nan_to_num(batch[name][:, t], nan=0.2)
    elif change == "pre_state":
        edited["pre_valence"][:, t] = 0.9
        edited["pre_arousal"][:, t] = 0.05
    elif change == "session":
        edited["session_start"][:, t] = 1.0 - batch["session_start"][:, t]
        edited["time_gap"][:, t] = 30.0
    else:
        edited["context_ids"][:, t] = (batch["context_ids"][:, t] + 1) % 3
    new = _predict(model, edited)
    if change == "outcomes":  # what play t revealed reaches only later predictions
        torch.testing.assert_close(new[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
        assert (new[:, t + 1:] - base[:, t + 1:]).abs().amax() > 1e-4
    elif change == "track":  # play t's track is the candidate of prediction t, and history for later ones
        torch.testing.assert_close(new[:, :t], base[:, :t], rtol=0, atol=0)
        assert (new[:, t] - base[:, t]).abs().amax() > 1e-4
        assert (new[:, t + 1:] - base[:, t + 1:]).abs().amax() > 1e-4
    elif change == "pre_state":  # the pre-state reaches its own prediction and, through the history, later ones
        torch.testing.assert_close(new[:, :t], base[:, :t], rtol=0, atol=0)
        assert (new[:, t] - base[:, t]).abs().amax() > 1e-4
        assert (new[:, t + 1:] - base[:, t + 1:]).abs().amax() > 1e-4
        # without pre_state_in_history it reaches only its own
        plain = make_model(tokenizer, pre_state_in_history=False)
        base, new = _predict(plain, batch), _predict(plain, edited)
        torch.testing.assert_close(new[:, :t], base[:, :t], rtol=0, atol=0)
        torch.testing.assert_close(new[:, t + 1:], base[:, t + 1:], rtol=0, atol=0)
        assert (new[:, t] - base[:, t]).abs().amax() > 1e-4
    else:  # context and session inputs are known before listening: they reach their own prediction and later
        # ones, never earlier
        torch.testing.assert_close(new[:, :t], base[:, :t], rtol=0, atol=0)
        assert (new[:, t] - base[:, t]).abs().amax() > 1e-4
        assert (new[:, t + 1:] - base[:, t + 1:]).abs().amax() > 1e-4


def test_padding_does_not_leak(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    base = model(**batch)
    edited = {k: v.clone() for k, v in batch.items()}
    edited["track_ids"][1, -2:] = tokenizer.unk_token_id
    edited["valence"][1, -2:] = 0.123
    new = model(**edited)
    real = batch["attention_mask"].bool()
    for name in PREDICTIONS:
        torch.testing.assert_close(new[name][real], base[name][real], rtol=0, atol=0)
    torch.testing.assert_close(new.next_state, base.next_state, rtol=0, atol=0)
    torch.testing.assert_close(new.loss, base.loss, rtol=0, atol=0)
    with pytest.raises(ValueError, match="right-padded"):
        model(**{**batch, "attention_mask": batch["attention_mask"].flip(1)})


# ---- losses ----
def test_missing_outcome_contributes_nothing(tokenizer):
    model = make_model(tokenizer).train()
    batch = make_batch(tokenizer, pad=False)
    valence_mask = torch.ones_like(batch["track_ids"], dtype=torch.bool)
    valence_mask[0, 1] = False
    runs = []
    for value in (0.0, 0.77, float("nan")):
        edited = {k: v.clone() for k, v in batch.items()}
        edited["valence"] = torch.nan_to_num(batch["valence"], nan=0.5)
        edited["valence"][0, 1] = value
        model.zero_grad()
        out = model(**edited, valence_mask=valence_mask)
        out.loss.backward()
        runs.append((out, [p.grad.clone() for p in model.parameters()]))
    (first, first_grads), others = runs[0], runs[1:]
    for out, grads in others:
        for name in ("loss", "valence_loss", *PREDICTIONS):
            torch.testing.assert_close(out[name], first[name], rtol=0, atol=0)
        for a, b in zip(grads, first_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_loss_is_weighted_masked_mean(tokenizer):
    model = make_model(tokenizer, outcome_loss_weights={"engagement": 0.5, "rating": 2.0, "valence": 1.0,
                                                         "arousal": 0.0})
    batch = make_batch(tokenizer)
    out = model(**batch)
    expected = 0.5 * out.engagement_loss + 2.0 * out.rating_loss + out.valence_loss
    torch.testing.assert_close(out.loss, expected)
    observed = ~torch.isnan(batch["valence"]) & batch["attention_mask"].bool()
    mean, var, y = out.valence_mean[observed], out.valence_var[observed], batch["valence"][observed]
    nll = torch.nn.functional.gaussian_nll_loss(mean, y, var, full=True, eps=0)
    torch.testing.assert_close(out.valence_loss, nll)
    assert model(track_ids=batch["track_ids"]).loss is None
    assert ((out.valence_var > 0) & (out.valence_var <= 0.25)).all()


def test_beta_nll_weights_each_play_by_its_variance(tokenizer):
    plain, beta = make_model(tokenizer), make_model(tokenizer, nll_beta=0.5)
    batch = make_batch(tokenizer)
    out = beta(**batch)
    observed = ~torch.isnan(batch["arousal"]) & batch["attention_mask"].bool()
    mean, var, y = out.arousal_mean[observed], out.arousal_var[observed], batch["arousal"][observed]
    per_play = torch.nn.functional.gaussian_nll_loss(mean, y, var, full=True, eps=0, reduction="none")
    torch.testing.assert_close(out.arousal_loss, (per_play * var.sqrt()).mean())
    torch.testing.assert_close(plain(**batch).arousal_loss, per_play.mean())  # same weights, plain NLL
    (mean_grad,) = torch.autograd.grad(out.arousal_loss, out.arousal_mean)
    torch.testing.assert_close(mean_grad[observed], -(y - mean) / var * var.sqrt() / observed.sum())



def test_play_weights_make_each_loss_a_weighted_mean(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    weight = torch.rand(batch["track_ids"].shape, generator=torch.Generator().manual_seed(3)) * 3
    out, plain = model(**batch, play_weight=weight), model(**batch)
    observed = ~torch.isnan(batch["valence"]) & batch["attention_mask"].bool()
    per_play = torch.nn.functional.gaussian_nll_loss(out.valence_mean[observed], batch["valence"][observed],
                                                     out.valence_var[observed], full=True, eps=0, reduction="none")
    w = weight[observed]
    torch.testing.assert_close(out.valence_loss, (w * per_play).sum() / w.sum())
    torch.testing.assert_close(out.valence_mean, plain.valence_mean, rtol=0, atol=0)  # predictions do not change
    # weight 1 everywhere is the plain loss, exactly; weight 0 on a play is as if its outcomes were not observed
    # (the last play of row 0: no later prediction reads its outcomes)
    assert torch.equal(model(**batch, play_weight=torch.ones_like(weight)).loss, plain.loss)
    dropped = weight.clone()
    dropped[0, -1] = 0.0
    hidden = {k: v.clone() for k, v in batch.items()}
    for name in ("engagement", "rating", "valence", "arousal"):
        hidden[name][0, -1] = float("nan")
    torch.testing.assert_close(model(**batch, play_weight=dropped).loss, model(**hidden, play_weight=weight).loss)


@pytest.mark.parametrize("bad, message", [
    (lambda w: w * float("inf"), "finite and >= 0"), (lambda w: -w, "finite and >= 0"),
    (lambda w: w[:, 0], r"must be \(batch, plays\) = \(3, 6\)"),
])
def test_bad_play_weights_are_refused(tokenizer, bad, message):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    with pytest.raises(ValueError, match=message):
        model(**batch, play_weight=bad(torch.ones(batch["track_ids"].shape)))
    nothing = torch.full(batch["track_ids"].shape, float("nan"))  # all padding: a zero loss, not NaN
    assert model(**batch, play_weight=nothing).loss.item() == 0.0

# ---- scoring, cache, ablations, cold start ----
def test_score_candidates_equals_forward(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer, pad=False)
    t = 3
    out = model(**batch)
    step = {k: batch[k][:, t] for k in ("pre_valence", "pre_arousal", "mode_ids", "cohort_ids", "context_ids",
                                        "session_start", "time_gap")}
    candidates = torch.tensor(track_token_ids(tokenizer)[:5] + [tokenizer.unk_token_id])
    shared = model.score_candidates(out.states[:, t], candidates, **step)
    per_row = model.score_candidates(out.states[:, t], candidates.expand(3, -1), **step)
    for n, candidate in enumerate(candidates):
        edited = {k: v.clone() for k, v in batch.items()}
        edited["track_ids"][:, t] = candidate
        reference = model(**edited)
        for name in PREDICTIONS:
            assert shared[name].shape == (3, len(candidates))
            torch.testing.assert_close(shared[name][:, n], reference[name][:, t], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(per_row[name][:, n], reference[name][:, t], rtol=1e-5, atol=1e-6)


def test_cache_matches_recompute(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer, length=7)
    batch["attention_mask"][1] = torch.tensor([1, 1, 1, 0, 0, 0, 0])  # row 1: a prefix of 3, then nothing
    batch["attention_mask"][2] = torch.tensor([1, 1, 1, 1, 1, 1, 0])
    full = model(**batch)
    split = 4
    first = model(**{k: v[:, :split] for k, v in batch.items()}, use_cache=True)
    assert first.cache.get_seq_length() == split + 1
    second = model(**{k: v[:, split:] for k, v in batch.items()}, cache=first.cache)
    real = batch["attention_mask"].bool()
    for name in (*PREDICTIONS, "states"):
        joined = torch.cat([first[name], second[name]], dim=1)
        torch.testing.assert_close(joined[real], full[name][real], rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(second.next_state, full.next_state, rtol=1e-5, atol=1e-5)
    # one play at a time through the cache, as a rollout does
    cache = model(**{k: v[:, :1] for k, v in batch.items()}, use_cache=True).cache
    for t in range(1, 7):
        step = model(**{k: v[:, t:t + 1] for k, v in batch.items()}, cache=cache)
    torch.testing.assert_close(step.next_state, full.next_state, rtol=1e-5, atol=1e-5)


def test_cache_rows_repeat_and_select(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    cache = model(**batch, use_cache=True).cache
    repeated = cache.repeat_interleave(2)
    assert repeated.key_mask.shape[0] == 6 and repeated.get_seq_length() == cache.get_seq_length()
    torch.testing.assert_close(repeated.select(torch.tensor([2])).keys[0], cache.select(torch.tensor([1])).keys[0])
    extra = {k: v[:, :1] for k, v in make_batch(tokenizer, seed=5).items()}
    a = model(**extra, cache=cache.copy())
    b = model(**{k: v.repeat_interleave(2, 0) for k, v in extra.items()}, cache=repeated)
    torch.testing.assert_close(b.next_state[::2], a.next_state, rtol=1e-5, atol=1e-6)


def test_no_history_ablation(tokenizer):
    model = make_model(tokenizer, use_history=False)
    batch = make_batch(tokenizer, pad=False)
    base = _predict(model, batch)
    edited = {k: v.clone() for k, v in batch.items()}
    edited["track_ids"][:, :3] = edited["track_ids"][:, 3:6].clone()
    edited["valence"][:, :3] = 0.9
    new = _predict(model, edited)
    torch.testing.assert_close(new[:, 3:], base[:, 3:], rtol=0, atol=0)
    # the state is one vector for every step; the step's own context still moves the prediction
    out = model(**batch)
    torch.testing.assert_close(out.states, out.next_state[:, None].expand_as(out.states))


def test_without_the_optional_inputs_the_model_is_the_old_one(tokenizer):
    """A config without the optional inputs (every checkpoint saved before they existed) builds no weights for them
    and ignores them: its state dict loads into the old architecture and its outputs do not move."""
    model = make_model(tokenizer, use_session_inputs=False, pre_state_in_history=False, wide_history=False)
    default = AmrsWorldModelConfig()
    assert not (default.use_session_inputs or default.pre_state_in_history or default.wide_history)
    assert not any(k.startswith(("session_proj", "history_pre_state_proj", "head_wide_history",
                                 "history_summary_proj")) for k in model.state_dict())
    batch = make_batch(tokenizer, pad=False)
    base = _predict(model, batch)
    edited = {k: v for k, v in batch.items() if k not in ("session_start", "time_gap")}
    torch.testing.assert_close(_predict(model, edited), base, rtol=0, atol=0)
    with_new = make_model(tokenizer)
    assert {"session_proj.weight", "history_pre_state_proj.weight", "head_wide_history.weight",
            "history_summary_proj.weight"} <= set(with_new.state_dict())


def test_session_inputs_and_their_masks(tokenizer):
    model = make_model(tokenizer)
    shape = (1, 3)
    inputs = model.session_inputs(shape, torch.tensor([[1.0, 0.0, float("nan")]]), torch.tensor([[2.0, -1.0, 0.5]]),
                                  time_gap_mask=torch.tensor([[True, True, False]]))
    expected = torch.tensor([[[1.0, 1.0, torch.log1p(torch.tensor(2.0)), 1.0], [0.0, 1.0, 0.0, 1.0],
                              [0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(inputs, expected)
    torch.testing.assert_close(model.session_inputs(shape), torch.zeros(1, 3, 4), rtol=0, atol=0)


def test_no_feedback_ablation(tokenizer):
    model = make_model(tokenizer, feed_back_outcomes=False)
    batch = make_batch(tokenizer, pad=False)
    base = _predict(model, batch)
    edited = {k: v.clone() for k, v in batch.items()}
    for name in schema.OUTCOMES:
        edited[name] = torch.rand_like(batch[name])
    torch.testing.assert_close(_predict(model, edited), base, rtol=0, atol=0)


def test_unknown_track_is_its_features(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer, pad=False)
    batch["track_ids"][:, 2] = tokenizer.unk_token_id
    batch["audio_features"] = model.track_features[batch["track_ids"]].clone()
    batch["audio_features"][:, 2] = torch.randn(3, 8)
    base = _predict(model, batch)
    with torch.no_grad():  # the <unk> and <pad> rows of the ID embedding are never read
        model.track_embedding.weight[tokenizer.unk_token_id] += 1.0
        model.track_embedding.weight[tokenizer.pad_token_id] += 1.0
    torch.testing.assert_close(_predict(model, batch), base, rtol=0, atol=0)
    changed = dict(batch, audio_features=batch["audio_features"].clone())
    changed["audio_features"][:, 2] += 1.0
    assert (_predict(model, changed)[:, 2] - base[:, 2]).abs().amax() > 1e-4
    raw = torch.tensor([[0.5] * 7 + [float("nan")]])
    normalized = model.normalize_audio_features(raw)
    assert normalized[0, -1] == 0 and torch.allclose(normalized[0, 0], (0.5 - model.feature_mean[0]) /
                                                      model.feature_std[0])


def test_gradient_checkpointing_gives_same_gradients(tokenizer):
    model = make_model(tokenizer).train()
    batch = make_batch(tokenizer)
    model(**batch).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(**batch).loss.backward()
    for a, b in zip(plain, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- learning ----
def test_learns_a_known_pattern(tokenizer):
    """Valence after a track = 0.6 * pre-valence + 0.4 * (track's first feature, squashed) + small noise, and a like
    when that feature is positive: 100 Adam steps must lower the held-out loss clearly and bring the valence error
    far below predicting the train mean."""
    model = make_model(tokenizer, seed=0, initializer_range=0.02).train()
    g = torch.Generator().manual_seed(0)
    tracks = torch.tensor(track_token_ids(tokenizer))

    def sample(n, length=8):
        ids = tracks[torch.randint(NUM_TRACKS, (n, length), generator=g)]
        pre = torch.rand(n, length, generator=g)
        signal = torch.sigmoid(2 * model.track_features[ids, 0])
        valence = (0.6 * pre + 0.4 * signal + 0.02 * torch.randn(n, length, generator=g)).clamp(0, 1)
        like = (signal > 0.5).float()
        return dict(track_ids=ids, pre_valence=pre, valence=valence, rating=like)

    train, test = sample(128), sample(64)
    with torch.no_grad():
        initial = model.eval()(**test).loss.item()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(100):
        rows = torch.randint(128, (64,), generator=g)
        loss = model(**{k: v[rows] for k, v in train.items()}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(**test)
    mse = ((out.valence_mean - test["valence"]) ** 2).mean()
    baseline = ((train["valence"].mean() - test["valence"]) ** 2).mean()
    assert out.loss < initial - 0.75, (initial, out.loss)  # held-out loss; over seeds 0-5 it fell by 1.3-2.4
    assert mse < 0.35 * baseline, (mse, baseline)  # over seeds 0-5: 0.04-0.23 of the baseline


def test_history_summary_by_hand(tokenizer):
    """With `wide_history` the state before play t ends with the mean of each outcome observed before t, whether any
    was, and the last valence and arousal reported; padding adds nothing, and the ablations see an empty summary."""
    model = make_model(tokenizer)
    batch = make_batch(tokenizer, length=7)
    states = model.listener_states(**{k: v for k, v in batch.items() if not k.startswith("pre_")}).states
    summary = states[..., model.config.hidden_size:]
    assert summary.shape == (3, 7, HISTORY_SUMMARY)
    outcomes = torch.stack([batch[o] for o in ("engagement", "rating", "valence", "arousal")], dim=-1)
    outcomes = outcomes.masked_fill(batch["attention_mask"][..., None] == 0, float("nan"))  # padding is not a play
    assert batch["attention_mask"][1, -2:].eq(0).all() and not batch["valence"][1, -2:].isnan().all()
    for b in range(3):
        for t in range(7):
            past = outcomes[b, :t]
            seen = ~torch.isnan(past)
            count = seen.sum(0)
            mean = torch.where(seen, past, 0.0).sum(0) / count.clamp(min=1)
            last = [past[seen[:, i], i][-1].item() if count[i] else 0.0 for i in (2, 3)]
            expected = torch.cat([mean, (count > 0).float(), torch.tensor(last)])
            torch.testing.assert_close(summary[b, t], expected, rtol=1e-6, atol=1e-6, msg=f"row {b}, play {t}")
    for ablation in (dict(use_history=False), dict(feed_back_outcomes=False)):
        states = make_model(tokenizer, **ablation).listener_states(**batch).states
        assert (states[..., model.config.hidden_size:] == 0).all(), ablation


def test_wide_history_reads_the_carried_over_mood_apart(tokenizer):
    """The head's history inputs end with the pre-state (logit, flags) where the play continues a session (a mood
    carried over from the track before) and zeros where it opens one or that is unknown, so the two get their own
    weights; the summary part is the summary's means on the head's scale."""
    model = make_model(tokenizer)
    pre = torch.tensor([[0.8, 0.3, 1.0, 1.0]] * 3)
    summary = torch.tensor([[0.6, 0.5, 0.7, 0.4, 1.0, 1.0, 1.0, 1.0, 0.9, 0.2]] * 3)
    inputs = model._wide_history_inputs(summary, pre, (3,), torch.tensor([0.0, 1.0, float("nan")]))
    torch.testing.assert_close(inputs[0, -4:], pre[0])
    assert (inputs[1:, -4:] == 0).all()
    logit = torch.logit(torch.tensor([0.7, 0.4, 0.9, 0.2]))
    torch.testing.assert_close(inputs[0, :6], torch.cat([torch.tensor([0.6, 0.5]), logit]))
    no_sessions = make_model(tokenizer, use_session_inputs=False)._wide_history_inputs(
        summary, pre, (3,), torch.zeros(3))
    assert (no_sessions[:, -4:] == 0).all(), "without session inputs the model cannot tell, so it does not split"
