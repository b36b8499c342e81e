"""`ReplayTracks` (play fixed sequences in rollouts) and saving / loading world models and ensembles with
`save_world_model` / `load_world_model`: exact reloads, member 0 at the root for `AutoModel`."""

import json

import pytest
import torch
from transformers import AutoModel

from amrs_hf.data.tokenizer import build_track_tokenizer, track_token_ids
from amrs_hf.models.world_model import AmrsWorldModel, AmrsWorldModelConfig
from amrs_hf.simulation import GreedyPolicy, WorldModelEnsemble, simulate
from amrs_hf.simulation.ensemble import ENSEMBLE_FILE, load_world_model, save_world_model
from amrs_hf.simulation.replay import ReplayTracks

NUM_TRACKS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


@pytest.fixture(scope="module")
def tracks(tokenizer):
    return torch.tensor(track_token_ids(tokenizer))


def make_model(tokenizer, seed=0) -> AmrsWorldModel:
    torch.manual_seed(seed)
    config = AmrsWorldModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                  initializer_range=0.2)
    model = AmrsWorldModel(config)
    features = torch.zeros(len(tokenizer), config.num_audio_features)
    ids = track_token_ids(tokenizer)
    features[ids] = torch.randn(len(ids), config.num_audio_features)
    model.set_catalogue_features(features)
    return model.eval()


def make_ensemble(tokenizer, seeds=(0, 1, 2)) -> WorldModelEnsemble:
    members = [make_model(tokenizer, seed=s) for s in seeds]
    for member in members[1:]:
        member.set_catalogue_features(members[0].track_features)
    return WorldModelEnsemble(members).eval()


def prefixes(tracks):
    g = torch.Generator().manual_seed(5)
    return dict(track_ids=tracks[torch.randint(NUM_TRACKS, (3, 4), generator=g)],
                valence=torch.rand(3, 4, generator=g), arousal=torch.rand(3, 4, generator=g),
                mode_ids=torch.tensor([[4] * 4, [1] * 4, [0] * 4]), cohort_ids=torch.tensor([[1] * 4, [2] * 4, [0] * 4]))


def run(world_model, policy, tracks, seed=0, horizon=4, num_rollouts=2):
    return simulate(world_model, prefixes(tracks), policy, horizon=horizon, num_rollouts=num_rollouts,
                    generator=torch.Generator().manual_seed(seed))


def assert_same_result(a, b):
    torch.testing.assert_close(a.tracks, b.tracks, rtol=0, atol=0)
    for group in ("predicted", "sampled"):
        for name, value in getattr(a, group).items():
            torch.testing.assert_close(getattr(b, group)[name], value, rtol=0, atol=0, msg=f"{group} {name}")


# ---- ReplayTracks ----
def test_replay_plays_the_given_columns(tokenizer, tracks):
    model = make_model(tokenizer)
    sequences = tracks[torch.randint(NUM_TRACKS, (6, 4), generator=torch.Generator().manual_seed(0))]
    result = run(model, ReplayTracks(sequences), tracks)
    assert torch.equal(result.tracks, sequences)
    with pytest.raises(ValueError, match="5 sequences for 6 rollouts"):
        run(model, ReplayTracks(sequences[:5]), tracks)


def test_replaying_a_policy_reproduces_its_rollouts(tokenizer, tracks):
    """A deterministic policy draws nothing from the generator, so replaying its tracks with the same seed gives the
    same rollouts bit for bit; in another world the same tracks get that world's predictions."""
    model = make_model(tokenizer)
    greedy = run(model, GreedyPolicy(tracks, lambda p: p.like_prob + p.valence_mean), tracks)
    replay = run(model, ReplayTracks(greedy.tracks), tracks)
    assert_same_result(greedy, replay)
    other = make_model(tokenizer, seed=9)
    elsewhere = run(other, ReplayTracks(greedy.tracks), tracks)
    assert torch.equal(elsewhere.tracks, greedy.tracks)
    assert not torch.equal(elsewhere.predicted["like_prob"], greedy.predicted["like_prob"])


# ---- save_world_model / load_world_model ----
def test_single_model_round_trip(tokenizer, tracks, tmp_path):
    model = make_model(tokenizer)
    save_world_model(model, tmp_path)
    assert not (tmp_path / ENSEMBLE_FILE).exists()
    loaded = load_world_model(tmp_path).eval()
    assert type(loaded) is AmrsWorldModel
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert_same_result(run(model, GreedyPolicy(tracks, lambda p: p.valence_mean), tracks),
                       run(loaded, GreedyPolicy(tracks, lambda p: p.valence_mean), tracks))


def test_ensemble_round_trip_with_member_zero_at_the_root(tokenizer, tracks, tmp_path):
    ensemble = make_ensemble(tokenizer)
    save_world_model(ensemble, tmp_path)
    assert json.loads((tmp_path / ENSEMBLE_FILE).read_text())["members"] == [".", "member_1", "member_2"]
    assert (tmp_path / "config.json").is_file() and (tmp_path / "member_2" / "config.json").is_file()
    # member 0 alone, through the Auto class, as a plain model folder
    root = AutoModel.from_pretrained(tmp_path).eval()
    assert type(root) is AmrsWorldModel
    for name, tensor in ensemble.members[0].state_dict().items():
        torch.testing.assert_close(root.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    # the whole ensemble, by both loaders
    for loaded in (load_world_model(tmp_path), WorldModelEnsemble.from_pretrained(tmp_path)):
        assert isinstance(loaded, WorldModelEnsemble) and len(loaded) == 3
        for original, member in zip(ensemble.members, loaded.members):
            for name, tensor in original.state_dict().items():
                torch.testing.assert_close(member.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
        loaded.eval()
        policy = GreedyPolicy(tracks, lambda p: p.like_prob)
        expected = run(ensemble, policy, tracks, seed=3)
        got = run(loaded, policy, tracks, seed=3)
        assert_same_result(expected, got)
        for name, value in expected.disagreement.items():
            torch.testing.assert_close(got.disagreement[name], value, rtol=0, atol=0)
        assert torch.equal(got.member_index, expected.member_index)
    # the members differ, so a member mix-up on reload would show
    first = [next(iter(m.parameters())) for m in ensemble.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


def test_ensemble_save_pretrained_round_trip(tokenizer, tmp_path):
    ensemble = make_ensemble(tokenizer, seeds=(4, 5))
    ensemble.save_pretrained(tmp_path)
    loaded = load_world_model(tmp_path)
    assert len(loaded) == 2
    for original, member in zip(ensemble.members, loaded.members):
        for name, tensor in original.state_dict().items():
            torch.testing.assert_close(member.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_a_single_model_saved_over_an_ensemble_loads_alone(tokenizer, tmp_path):
    save_world_model(make_ensemble(tokenizer), tmp_path)
    model = make_model(tokenizer, seed=7)
    save_world_model(model, tmp_path)
    loaded = load_world_model(tmp_path)
    assert type(loaded) is AmrsWorldModel, "a stale ensemble.json must not turn the new model into an ensemble"
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_members_must_share_their_inputs(tokenizer):
    other = build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS + 1)])
    with pytest.raises(ValueError, match="member 1 differs from member 0 in vocab_size"):
        WorldModelEnsemble([make_model(tokenizer), make_model(other)])
    with pytest.raises(ValueError, match="at least one model"):
        WorldModelEnsemble([])
