"""Rollouts and ensembles: the cached rollout equals the recomputed one, sampling feeds back as history, and the
ensemble's mean / disagreement are the members' by hand."""

import pytest
import torch

from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.models.world_model import AmrsWorldModel, AmrsWorldModelConfig
from amrs_hf.models.world_model.modeling_world_model import HISTORY_SUMMARY
from amrs_hf.simulation.rollout import DEFAULT_STEP_GAP_HOURS
from amrs_hf.simulation import (
    EnsemblePredictions,
    GreedyPolicy,
    RandomPolicy,
    StepContext,
    WorldModelEnsemble,
    simulate,
)

NUM_TRACKS = 64
PREDICTIONS = ("engagement", "like_prob", "valence_mean", "valence_var", "arousal_mean", "arousal_var")


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


@pytest.fixture(scope="module")
def tracks(tokenizer):
    return torch.tensor(track_token_ids(tokenizer))


def make_model(tokenizer, seed=0, **overrides) -> AmrsWorldModel:
    """A tiny world model (2 layers, hidden 32, 64 tracks) reading session inputs and past pre-states; init std 0.2
    so an untrained model's outputs vary."""
    torch.manual_seed(seed)
    config = AmrsWorldModelConfig(**{**dict(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, dropout=0.1, initializer_range=0.2, context_vocab=["home"],
        use_session_inputs=True, pre_state_in_history=True, wide_history=True), **overrides})
    model = AmrsWorldModel(config)
    features = torch.zeros(len(tokenizer), config.num_audio_features)
    features[track_token_ids(tokenizer)] = torch.randn(NUM_TRACKS, config.num_audio_features)
    model.set_catalogue_features(features)
    return model


def make_prefixes(tracks):
    """Three prefixes, right-padded: 5 plays, 2 plays, and an empty one (only its mode and starting state given)."""
    g = torch.Generator().manual_seed(3)
    ids = tracks[torch.randint(NUM_TRACKS, (3, 5), generator=g)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    valence = torch.rand(3, 5, generator=g)
    valence[0, 4] = float("nan")  # the last play of prefix 0 has no self-report: its pre-state is used instead
    # prefix 0: a session of 2 plays, then one of 3 (gaps within: 0.05, 0.07, 0.06 h); prefix 1: 2 plays, one gap
    session_start = torch.tensor([[1.0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    time_gap = torch.tensor([[float("nan"), 0.05, 20.0, 0.07, 0.06], [float("nan"), 0.04, 0, 0, 0], [0.0] * 5])
    return dict(
        session_start=session_start, time_gap=time_gap,
        track_ids=ids.masked_fill(mask == 0, 0), attention_mask=mask, valence=valence,
        arousal=torch.rand(3, 5, generator=g), rating=torch.randint(0, 2, (3, 5), generator=g).float(),
        engagement=torch.rand(3, 5, generator=g), pre_valence=torch.rand(3, 5, generator=g),
        pre_arousal=torch.rand(3, 5, generator=g), mode_ids=torch.tensor([[1] * 5, [3] * 5, [4] * 5]),
        cohort_ids=torch.tensor([[1] * 5, [2] * 5, [0] * 5]), context_ids=torch.zeros(3, 5, dtype=torch.long))


def run(world_model, prefixes, policy, use_cache, seed=0, **kwargs):
    return simulate(world_model, prefixes, policy, horizon=kwargs.pop("horizon", 6),
                    num_rollouts=kwargs.pop("num_rollouts", 4), generator=torch.Generator().manual_seed(seed),
                    use_cache=use_cache, **kwargs)


def assert_same_rollouts(a, b):
    """Discrete draws exactly equal; floats to float32 rounding (the two paths sum attention in another order)."""
    torch.testing.assert_close(a.tracks, b.tracks, rtol=0, atol=0)
    for name in ("engagement", "rating"):
        torch.testing.assert_close(a.sampled[name], b.sampled[name], rtol=0, atol=0)
    for name in ("valence", "arousal"):
        torch.testing.assert_close(a.sampled[name], b.sampled[name], rtol=1e-5, atol=1e-5)
    for name in PREDICTIONS:
        torch.testing.assert_close(a.predicted[name], b.predicted[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pre_valence, b.pre_valence, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy_kind", ["random", "greedy"])
def test_cached_rollout_equals_recompute(tokenizer, tracks, policy_kind):
    model = make_model(tokenizer)
    prefixes = make_prefixes(tracks)
    policy = (RandomPolicy(tracks) if policy_kind == "random"
              else GreedyPolicy(tracks, utility=lambda p: p.valence_mean + 0.5 * p.like_prob))
    cached, recomputed = run(model, prefixes, policy, True), run(model, prefixes, policy, False)
    assert_same_rollouts(cached, recomputed)
    assert model.training, "simulate restores the model's mode"


def test_rollout_feeds_samples_back(tokenizer, tracks):
    model = make_model(tokenizer)
    prefixes = make_prefixes(tracks)
    result = run(model, prefixes, RandomPolicy(tracks), True, horizon=5, num_rollouts=3)
    assert result.tracks.shape == (9, 5) and set(result.tracks.unique().tolist()) <= set(tracks.tolist())
    assert result.prefix_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for name in ("engagement", "rating"):
        assert set(result.sampled[name].unique().tolist()) <= {0.0, 1.0}
    for name in ("valence", "arousal"):
        assert ((result.sampled[name] >= 0) & (result.sampled[name] <= 1)).all()
    # the sampled post-state is the next step's pre-state
    torch.testing.assert_close(result.pre_valence[:, 1:], result.sampled["valence"][:, :-1], rtol=0, atol=0)
    assert result.pre_state_mask[:, 1:].all()
    # first pre-state: prefix 0's last play lacks valence -> its pre_valence; prefix 1 -> its last valence;
    # the empty prefix 2 -> its starting state at position 0
    expected = torch.stack([prefixes["pre_valence"][0, 4], prefixes["valence"][1, 1], prefixes["pre_valence"][2, 0]])
    torch.testing.assert_close(result.pre_valence[:, 0], expected.repeat_interleave(3))
    torch.testing.assert_close(result.pre_arousal[:, 0],
                               torch.stack([prefixes["arousal"][0, 4], prefixes["arousal"][1, 1],
                                            prefixes["pre_arousal"][2, 0]]).repeat_interleave(3))
    # rollouts of one prefix differ (they sample), and a rollout's expected outcomes are the model's predictions
    assert not torch.equal(result.sampled["valence"][0], result.sampled["valence"][1])
    assert torch.equal(result.expected("rating"), result.predicted["like_prob"])
    # the same seed gives the same rollouts, another seed others
    again = run(model, prefixes, RandomPolicy(tracks), True, horizon=5, num_rollouts=3)
    torch.testing.assert_close(again.tracks, result.tracks, rtol=0, atol=0)
    other = run(model, prefixes, RandomPolicy(tracks), True, seed=1, horizon=5, num_rollouts=3)
    assert not torch.equal(other.tracks, result.tracks)


def test_step_context_for_policies(tokenizer, tracks):
    model = make_model(tokenizer)
    prefixes = make_prefixes(tracks)
    seen = []

    def policy(ctx: StepContext):
        seen.append(ctx)
        return torch.full((ctx.states.shape[0],), int(tracks[ctx.step]))

    run(model, prefixes, policy, True, horizon=3, num_rollouts=2)
    ctx = seen[2]
    assert ctx.rollout_track_ids.tolist() == [[int(tracks[0]), int(tracks[1])]] * 6
    ids, mask = ctx.history(pad_token_id=0, padding_side="left")
    # prefix 1 (rows 2, 3): its 2 plays then the 2 rollout tracks, left-padded
    assert ids[2].tolist() == [0] * 3 + prefixes["track_ids"][1, :2].tolist() + [int(tracks[0]), int(tracks[1])]
    assert mask[2].tolist() == [False] * 3 + [True] * 4
    assert mask[4].sum() == 2  # the empty prefix: only the rollout's own tracks
    assert ctx.score(tracks[:7]).valence_mean.shape == (6, 7)
    assert (ctx.mode_ids == torch.tensor([1, 1, 3, 3, 4, 4])).all()


def test_rollout_session_inputs(tokenizer, tracks):
    """A rollout continues the prefix's last session: session start 0 and, by default, the median gap between the
    prefix's plays within a session (the default gap where it shows none, and a new session for an empty prefix);
    `new_session` opens one at the first step. Each played step enters the history with its session inputs."""
    model = make_model(tokenizer)
    prefixes = make_prefixes(tracks)
    seen = []

    def policy(ctx: StepContext):
        seen.append(ctx)
        return tracks[: ctx.states.shape[0]]

    run(model, prefixes, policy, True, horizon=2, num_rollouts=1)
    first, second = seen
    assert first.session_start.tolist() == [0.0, 0.0, 1.0] and first.session_start_mask.all()
    torch.testing.assert_close(first.time_gap[:2], torch.tensor([0.06, 0.04]))
    assert first.time_gap_mask.tolist() == [True, True, False]
    assert second.session_start.tolist() == [0.0, 0.0, 0.0] and second.time_gap_mask.all()
    torch.testing.assert_close(second.time_gap, torch.tensor([0.06, 0.04, DEFAULT_STEP_GAP_HOURS]))
    seen.clear()
    run(model, prefixes, policy, True, horizon=2, num_rollouts=1, new_session=True, new_session_gap_hours=12.0,
        step_gap_hours=0.1)
    assert seen[0].session_start.tolist() == [1.0] * 3 and seen[0].time_gap.tolist() == [12.0] * 3
    torch.testing.assert_close(seen[1].time_gap, torch.full((3,), 0.1))
    # the session inputs matter to this model, and the cached rollout still equals the recompute one with them
    a = run(model, prefixes, RandomPolicy(tracks), True, horizon=4)
    b = run(model, prefixes, RandomPolicy(tracks), True, horizon=4, new_session=True)
    assert not torch.allclose(a.predicted["valence_mean"][:, 0], b.predicted["valence_mean"][:, 0])
    assert_same_rollouts(run(model, prefixes, RandomPolicy(tracks), False, horizon=4, new_session=True,
                             step_gap_hours=0.2), run(model, prefixes, RandomPolicy(tracks), True, horizon=4,
                                                      new_session=True, step_gap_hours=0.2))


def test_rollout_equals_forward_on_the_played_history(tokenizer, tracks):
    """A rollout's predictions are the model's forward pass over the prefix followed by the played steps, each with
    its sampled outcomes, the pre-state it was predicted from and its session inputs (start 0, the gap)."""
    model = make_model(tokenizer).eval()
    prefixes = {k: v[:1] for k, v in make_prefixes(tracks).items()}  # prefix 0: 5 plays
    result = run(model, prefixes, RandomPolicy(tracks), True, horizon=3, num_rollouts=1, step_gap_hours=0.3)
    full = {k: torch.cat([v, v[:, -1:].expand(1, 3)], dim=1) if k in ("mode_ids", "cohort_ids", "context_ids")
            else v for k, v in prefixes.items()}
    full["track_ids"] = torch.cat([prefixes["track_ids"], result.tracks], dim=1)
    full["attention_mask"] = torch.ones(1, 8, dtype=torch.long)
    for name in ("engagement", "rating", "valence", "arousal"):
        full[name] = torch.cat([prefixes[name], result.sampled[name]], dim=1)
    pre_mask = result.pre_state_mask
    full["pre_valence"] = torch.cat([prefixes["pre_valence"], result.pre_valence.masked_fill(~pre_mask[..., 0],
                                                                                             float("nan"))], dim=1)
    full["pre_arousal"] = torch.cat([prefixes["pre_arousal"], result.pre_arousal.masked_fill(~pre_mask[..., 1],
                                                                                             float("nan"))], dim=1)
    full["session_start"] = torch.cat([prefixes["session_start"], torch.zeros(1, 3)], dim=1)
    full["time_gap"] = torch.cat([prefixes["time_gap"], torch.full((1, 3), 0.3)], dim=1)
    with torch.no_grad():
        out = model(**full)
    for name in PREDICTIONS:
        torch.testing.assert_close(out[name][:, 5:], result.predicted[name], rtol=1e-5, atol=1e-5)


def test_simulate_validates(tokenizer, tracks):
    model = make_model(tokenizer)
    with pytest.raises(ValueError, match="unknown keys"):
        simulate(model, {**make_prefixes(tracks), "moods": torch.zeros(3, 5)}, RandomPolicy(tracks), horizon=2)
    with pytest.raises(ValueError, match="engagement_sampling"):
        simulate(model, make_prefixes(tracks), RandomPolicy(tracks), horizon=2, engagement_sampling="beta")
    with pytest.raises(ValueError, match="step_gap_hours"):
        simulate(model, make_prefixes(tracks), RandomPolicy(tracks), horizon=2, step_gap_hours=-1.0)


# ---- ensembles ----
@pytest.fixture(scope="module")
def ensemble(tokenizer):
    members = [make_model(tokenizer, seed=s) for s in range(3)]
    for member in members[1:]:  # one catalogue for all
        member.set_catalogue_features(members[0].track_features)
    return WorldModelEnsemble(members).eval()


def test_ensemble_mean_and_disagreement_by_hand(ensemble, tracks):
    prefixes = make_prefixes(tracks)
    prefixes["attention_mask"][2, 0] = 1  # every row needs a play for forward's per-play predictions
    encoded = ensemble.listener_states(**{k: v for k, v in prefixes.items() if not k.startswith("pre_")})
    assert encoded.next_state.shape == (3, 3, 32 + HISTORY_SUMMARY)  # hidden state, then the history summary
    candidates = tracks[:4]
    step = dict(pre_valence=torch.tensor([0.2, 0.5, float("nan")]), mode_ids=torch.tensor([1, 2, 0]))
    scored = ensemble.score_candidates(encoded.next_state, candidates, **step)
    per_member = [m.score_candidates(encoded.next_state[:, i], candidates, **step)
                  for i, m in enumerate(ensemble.members)]
    for name in PREDICTIONS:
        values = [p[name] for p in per_member]
        mean = (values[0] + values[1] + values[2]) / 3
        std = (((values[0] - mean) ** 2 + (values[1] - mean) ** 2 + (values[2] - mean) ** 2) / 3).sqrt()
        torch.testing.assert_close(scored.mean[name], mean)
        torch.testing.assert_close(scored.std[name], std)
    v_means, v_vars = [p.valence_mean for p in per_member], [p.valence_var for p in per_member]
    mixture = sum(v_vars) / 3 + sum((m - sum(v_means) / 3) ** 2 for m in v_means) / 3
    torch.testing.assert_close(scored.mixture_variance("valence"), mixture)
    picked = scored.member(torch.tensor([2, 0, 1]))
    torch.testing.assert_close(picked.like_prob[1], per_member[0].like_prob[1], rtol=0, atol=0)
    # per-play predictions: the members' forward
    forward = ensemble(**prefixes)
    outs = [m(**prefixes) for m in ensemble.members]
    for name in PREDICTIONS:
        torch.testing.assert_close(forward.mean[name], torch.stack([o[name] for o in outs]).mean(0))
        torch.testing.assert_close(forward.std[name], torch.stack([o[name] for o in outs]).std(0, unbiased=False))


def test_single_member_has_no_disagreement(tokenizer, tracks):
    model = make_model(tokenizer).eval()
    states = torch.randn(2, 1, model.state_size)
    scored = WorldModelEnsemble([model]).score_candidates(states, tracks[:3])
    assert isinstance(scored, EnsemblePredictions)
    assert all((scored.std[name] == 0).all() for name in PREDICTIONS)
    alone = model.score_candidates(states[:, 0], tracks[:3])
    torch.testing.assert_close(scored.mean.valence_mean, alone.valence_mean, rtol=0, atol=0)


def test_ensemble_save_and_load(ensemble, tracks, tmp_path):
    ensemble.save_pretrained(tmp_path)  # member 0 at the root, the others in member_<i>
    for loaded in (WorldModelEnsemble.from_pretrained(tmp_path),
                   WorldModelEnsemble.from_pretrained([tmp_path, tmp_path / "member_1", tmp_path / "member_2"])):
        assert len(loaded) == 3
        for a, b in zip(ensemble.members, loaded.members):
            for name, tensor in a.state_dict().items():
                torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=0)


def test_ensemble_refuses_mismatched_members(tokenizer):
    with pytest.raises(ValueError, match="context_vocab"):
        WorldModelEnsemble([make_model(tokenizer), make_model(tokenizer, context_vocab=["gym"])])


@pytest.mark.parametrize("sampling", ["rollout_member", "mixture"])
def test_ensemble_rollouts(ensemble, tracks, sampling):
    prefixes = make_prefixes(tracks)
    cached = run(ensemble, prefixes, RandomPolicy(tracks), True, ensemble_sampling=sampling)
    recomputed = run(ensemble, prefixes, RandomPolicy(tracks), False, ensemble_sampling=sampling)
    assert_same_rollouts(cached, recomputed)
    assert cached.member_index.shape == cached.tracks.shape == (12, 6)
    assert (cached.disagreement["valence_mean"] > 0).all()
    if sampling == "rollout_member":  # one member for the whole rollout
        assert (cached.member_index == cached.member_index[:, :1]).all()
    else:
        assert (cached.member_index != cached.member_index[:, :1]).any()
