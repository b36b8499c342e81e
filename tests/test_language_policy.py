"""`LanguageModelPolicy` in world-model rollouts: the prompt it builds, its restricted distribution, and its logits
against the policy model run directly on the same prompt written by hand with the tokenizer."""

import dataclasses

import pytest
import torch

from amrs_hf.data.tokenizer import TRACK_PREFIX, build_track_tokenizer, track_token_ids
from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM, encode_prompts, prompt_text
from amrs_hf.models.world_model import AmrsWorldModel, AmrsWorldModelConfig
from amrs_hf.simulation import simulate
from amrs_hf.simulation.language_policy import LanguageModelPolicy

NUM_TRACKS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return build_track_tokenizer([f"trk{i}" for i in range(NUM_TRACKS)])


@pytest.fixture(scope="module")
def tracks(tokenizer):
    return torch.tensor(track_token_ids(tokenizer))


@pytest.fixture(scope="module")
def world_model(tokenizer):
    torch.manual_seed(0)
    config = AmrsWorldModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                  initializer_range=0.2)
    model = AmrsWorldModel(config)
    features = torch.zeros(len(tokenizer), config.num_audio_features)
    features[track_token_ids(tokenizer)] = torch.randn(NUM_TRACKS, config.num_audio_features)
    model.set_catalogue_features(features)
    return model.eval()


@pytest.fixture(scope="module")
def policy_model(tokenizer):
    torch.manual_seed(1)
    config = AmrsPolicyConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64, dropout=0.0, initializer_range=0.2,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    return AmrsPolicyForCausalLM(config).eval()


def prefixes(tracks):
    """Four right-padded prefixes of 3, 1, 2 and 3 plays: sleep/clinical, unknown mode/consumer, energize/unknown
    cohort, calm/clinical."""
    g = torch.Generator().manual_seed(5)
    ids = tracks[torch.randint(NUM_TRACKS, (4, 3), generator=g)]
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    modes, cohorts = torch.tensor([4, 0, 1, 3]), torch.tensor([1, 2, 0, 1])
    return dict(track_ids=ids.masked_fill(~mask, 0), attention_mask=mask, valence=torch.rand(4, 3, generator=g),
                arousal=torch.rand(4, 3, generator=g), mode_ids=modes[:, None].expand(4, 3),
                cohort_ids=cohorts[:, None].expand(4, 3))


class Recorder:
    def __init__(self, policy):
        self.policy, self.steps = policy, []

    def __call__(self, ctx):
        chosen = self.policy(ctx)
        self.steps.append((ctx, chosen))
        return chosen


def run(world_model, policy, tracks, horizon=3, num_rollouts=2, seed=0):
    recorder = Recorder(policy)
    result = simulate(world_model, prefixes(tracks), recorder, horizon=horizon, num_rollouts=num_rollouts,
                      generator=torch.Generator().manual_seed(seed))
    return result, recorder.steps


def names(tokenizer, ids):
    return [t[len(TRACK_PREFIX):] for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]


def hand_prompt(world_model, tokenizer, ctx, row, history_ids, max_history):
    """The prompt text of rollout `row`, written by hand: mode, cohort (left out when unknown), tracks."""
    config = world_model.config
    mode_id, cohort_id = int(ctx.mode_ids[row]), int(ctx.cohort_ids[row])
    mode = config.modes[mode_id - 1] if mode_id else None
    cohort = config.cohorts[cohort_id - 1] if cohort_id else None
    return prompt_text(mode, cohort, names(tokenizer, history_ids)[-max_history:] if max_history else [])


def direct_logits(policy_model, tokenizer, text, tracks):
    """The policy model on one unpadded prompt: next-token logits over the track tokens."""
    inputs = encode_prompts(tokenizer, [text])
    with torch.no_grad():
        return policy_model(**inputs).logits[0, -1, tracks]


def check_step(policy, world_model, tokenizer, tracks, ctx, histories, max_history):
    ids, mask = policy.prompt(ctx)
    logits = policy.logits(ctx)
    assert logits.shape == (ctx.states.shape[0], NUM_TRACKS)
    for row in range(ids.shape[0]):
        text = hand_prompt(world_model, tokenizer, ctx, row, histories[row], max_history)
        expected = encode_prompts(tokenizer, [text])["input_ids"][0].tolist()
        n = int(mask[row].sum())
        # left-padded: padding first, then <bos> <mode> <cohort> tracks, exactly the tokenizer's encoding
        assert mask[row].tolist() == [False] * (ids.shape[1] - n) + [True] * n
        assert ids[row, ids.shape[1] - n:].tolist() == expected, (ctx.step, row, text)
        assert (ids[row, : ids.shape[1] - n] == tokenizer.pad_token_id).all()
        torch.testing.assert_close(logits[row], direct_logits(policy.model, tokenizer, text, tracks), rtol=0,
                                   atol=1e-5)


def test_prompt_and_logits_match_the_model_on_hand_built_prompts(world_model, policy_model, tokenizer, tracks):
    policy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts)
    assert policy.max_history == 64 - 3
    result, steps = run(world_model, policy, tracks)
    assert len(steps) == 3
    for ctx, chosen in steps:
        histories = [torch.cat([ctx.prefix_track_ids[r][ctx.prefix_mask[r]], ctx.rollout_track_ids[r]])
                     for r in range(ctx.states.shape[0])]
        check_step(policy, world_model, tokenizer, tracks, ctx, histories, policy.max_history)
        assert torch.isin(chosen, tracks).all()
    # the prompts really do differ in length (the padding is exercised) and leave unknown mode/cohort out
    ctx = steps[0][0]
    ids, mask = policy.prompt(ctx)
    assert mask.sum(1).tolist() == [6, 6, 3, 3, 4, 4, 6, 6]  # <bos> + known of (mode, cohort) + prefix length
    assert torch.isin(result.tracks, tracks).all()


def test_max_history_keeps_the_last_tracks(world_model, policy_model, tokenizer, tracks):
    policy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts,
                                 max_history=2)
    _, steps = run(world_model, policy, tracks)
    for ctx, _ in steps[1:]:
        histories = [torch.cat([ctx.prefix_track_ids[r][ctx.prefix_mask[r]], ctx.rollout_track_ids[r]])
                     for r in range(ctx.states.shape[0])]
        check_step(policy, world_model, tokenizer, tracks, ctx, histories, 2)
        assert (policy.prompt(ctx)[1].sum(1) <= 5).all()


def test_session_prefix_then_rollout_tracks(world_model, policy_model, tokenizer, tracks):
    policy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts,
                                 max_history=4)
    session = tracks[torch.tensor([[3, 4, 0], [7, 0, 0], [0, 0, 0], [9, 10, 11]])]
    session_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert policy.set_session_prefix(session, session_mask) is policy
    _, steps = run(world_model, policy, tracks)
    for ctx, _ in steps:
        histories = [torch.cat([session[r // 2][session_mask[r // 2]], ctx.rollout_track_ids[r]]) for r in range(8)]
        check_step(policy, world_model, tokenizer, tracks, ctx, histories, 4)
    # without a mask every session track counts; None goes back to the whole history
    policy.set_session_prefix(session[:, :1])
    ctx = steps[0][0]
    assert names(tokenizer, policy.prompt(ctx)[0][6, -1:]) == names(tokenizer, session[3, :1])
    policy.set_session_prefix(None)
    assert policy.session_prefix is None


def test_a_mode_the_tokenizer_lacks_is_left_out(world_model, policy_model, tokenizer, tracks):
    modes = [*world_model.config.modes, "party"]  # the world model knows "party", the tokenizer does not
    policy = LanguageModelPolicy(policy_model, tokenizer, modes, world_model.config.cohorts)
    _, steps = run(world_model, policy, tracks, horizon=1)
    ctx = dataclasses.replace(steps[0][0], mode_ids=torch.full((8,), len(modes)))
    ids, mask = policy.prompt(ctx)
    assert not any(t.startswith("<mode:") for t in tokenizer.convert_ids_to_tokens(ids[mask].tolist()))
    assert mask.sum(1).tolist() == [5, 5, 3, 3, 3, 3, 5, 5]


def test_distribution_covers_tracks_only_and_greedy_takes_its_argmax(world_model, policy_model, tokenizer, tracks):
    policy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts)
    _, steps = run(world_model, policy, tracks, horizon=2)
    ctx = steps[1][0]
    probs = policy.distribution(ctx)
    assert probs.shape == (8, NUM_TRACKS) and (probs > 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(8))
    # by hand: a softmax over the track tokens' logits only (a distribution over the whole vocabulary would not sum
    # to one here)
    ids, mask = policy.prompt(ctx)
    with torch.no_grad():
        full = policy_model(input_ids=ids, attention_mask=mask.long()).logits[:, -1]
    torch.testing.assert_close(probs, torch.softmax(full[:, tracks], -1), rtol=0, atol=1e-5)
    assert (torch.softmax(full, -1)[:, tracks].sum(1) < 1 - 1e-3).all()
    hot = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts,
                              temperature=2.0)
    torch.testing.assert_close(hot.logits(ctx), policy.logits(ctx) / 2.0)
    greedy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts,
                                 greedy=True)
    assert greedy(ctx).tolist() == tracks[probs.argmax(1)].tolist()
    with pytest.raises(ValueError, match="temperature"):
        LanguageModelPolicy(policy_model, tokenizer, [], [], temperature=0.0)


def test_sampled_rollouts_are_reproducible_and_restore_training_mode(world_model, policy_model, tokenizer, tracks):
    policy = LanguageModelPolicy(policy_model, tokenizer, world_model.config.modes, world_model.config.cohorts)
    policy_model.train()
    try:
        first, _ = run(world_model, policy, tracks, horizon=4, num_rollouts=3, seed=3)
        assert policy_model.training  # the policy evaluates in eval mode and restores the mode afterwards
    finally:
        policy_model.eval()
    second, _ = run(world_model, policy, tracks, horizon=4, num_rollouts=3, seed=3)
    assert torch.equal(first.tracks, second.tracks)
    assert torch.isin(first.tracks, tracks).all()
    assert len(torch.unique(first.tracks)) > 1  # sampled, not collapsed on one track
