"""QA regressions for the pipeline and its stages: bad input is refused early with the file / section / key named,
and nothing is silently mixed or misaligned."""

from __future__ import annotations

import copy

import pytest

from amrs_hf.scripts.pipeline import QUICKSTART, load_config, run_pipeline

SMOKE = QUICKSTART.parent / "config_smoke.yaml"


def _smoke():
    return copy.deepcopy(load_config(SMOKE))


def test_empty_config_and_non_mapping_sections_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(ValueError, match=r"c\.yaml is empty"):
        load_config(path)
    path.write_text("data: [1, 2]\n")
    with pytest.raises(ValueError, match=r"c\.yaml, section 'data': must be a mapping"):
        load_config(path)
    path.write_text("utility: 3\n")
    with pytest.raises(ValueError, match=r"c\.yaml, section 'utility'"):
        load_config(path)


@pytest.mark.parametrize("section, key, value, expected", [
    ("evaluation", "horizon", "3", "expected int"),
    ("policy", "max_length", "32", "expected int"),
    ("policy", "eval_strategy", False, "quote it"),
    ("data", "split_fractions", "0.7,0.1,0.2", "expected a list"),
])
def test_values_of_the_wrong_type_are_refused_naming_section_and_key(tmp_path, section, key, value, expected):
    config = _smoke()
    config[section][key] = value
    with pytest.raises(ValueError, match=f"section '{section}', key '{key}': .*{expected}"):
        run_pipeline(config, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["evaluation"].update(horizn=3), "section 'evaluation'.*horizn"),
    (lambda c: c["evaluation"].update(num_rollouts=0), "section 'evaluation': num_rollouts must be"),
    (lambda c: c["dpo"].update(rounds=0), "section 'dpo': rounds must be >= 1"),
    (lambda c: c.update(utility="no_such_utility"), "section 'utility'.*no_such_utility"),
    (lambda c: c.update(utility={"engagment": 1}), "section 'utility'.*engagment.*did you mean 'engagement'"),
    (lambda c: c["policy"].update(context="sessions"), "section 'policy': context must be"),
    (lambda c: c["policy"].update(context="history"), "section 'policy': context 'history' is not supported"),
    (lambda c: c["evaluation"].update(horizon=64), r"data.max_history \(64\) must exceed evaluation.horizon"),
])
def test_every_section_is_checked_before_training(tmp_path, mutate, message):
    """A mistake in a late section (evaluation, utility) is reported before the world model trains."""
    config = _smoke()
    mutate(config)
    with pytest.raises(ValueError, match=message):
        run_pipeline(config, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "afile"
    path.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="afile is a file"):
        run_pipeline(_smoke(), path, show_progress=False)
    assert path.read_text() == "keep me"


# ---- tiny models ----
@pytest.fixture(scope="module")
def tiny():
    import torch

    from amrs_hf.data.synthetic import SyntheticWorld, SyntheticWorldConfig
    from amrs_hf.data.tokenizer import build_track_tokenizer
    from amrs_hf.models.world_model import AmrsWorldModel
    from amrs_hf.models.world_model.processing_world_model import set_catalogue, world_model_config

    world = SyntheticWorld(SyntheticWorldConfig(num_tracks=30, num_users=20), seed=0)
    log = world.generate(500, seed=0)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    torch.manual_seed(0)
    config = world_model_config(log, tokenizer, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=128)
    model = AmrsWorldModel(config)
    set_catalogue(model, log.catalogue_frame(), tokenizer)
    return world, log, tokenizer, model.eval()


def test_a_single_world_model_saved_over_an_ensemble_loads_alone(tiny, tmp_path):
    """Rerunning into the same output folder with ensemble_size 1 after 2 must not load the old members."""
    from amrs_hf.models.world_model import AmrsWorldModel
    from amrs_hf.simulation.ensemble import WorldModelEnsemble, load_world_model, save_world_model

    model = tiny[3]
    save_world_model(WorldModelEnsemble([model, model]), tmp_path / "wm")
    save_world_model(model, tmp_path / "wm")
    assert isinstance(load_world_model(tmp_path / "wm"), AmrsWorldModel)


def _policy(tokenizer, **overrides):
    import torch

    from amrs_hf.models.policy import AmrsPolicyConfig, AmrsPolicyForCausalLM

    torch.manual_seed(0)
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64, dropout=0.0, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return AmrsPolicyForCausalLM(AmrsPolicyConfig(**{**kwargs, **overrides})).eval()


def test_world_model_and_policy_folders_are_checked(tiny, tmp_path):
    from amrs_hf.data.tokenizer import build_track_tokenizer
    from amrs_hf.evaluation.policies import load_policy
    from amrs_hf.simulation.ensemble import load_world_model, save_world_model

    _, log, tokenizer, model = tiny
    save_world_model(model, tmp_path / "world_model")
    tokenizer.save_pretrained(tmp_path / "world_model")
    policy = _policy(tokenizer)
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    other = build_track_tokenizer([f"x{i}" for i in range(len(log.catalogue))])  # another catalogue, same size
    _policy(other).save_pretrained(tmp_path / "other_policy")
    other.save_pretrained(tmp_path / "other_policy")

    with pytest.raises(FileNotFoundError, match="world model path '.*no_such' is not a folder"):
        load_world_model(tmp_path / "no_such")
    with pytest.raises(ValueError, match="world model path .*policy.* holds a 'amrs_policy' model"):
        load_world_model(tmp_path / "policy")
    with pytest.raises(ValueError, match="--bc_path .*world_model.* holds a 'amrs_world_model' model"):
        load_policy(tmp_path / "world_model", tokenizer, "--bc_path")
    with pytest.raises(ValueError, match="--bc_path .*other_policy.*not the world model's"):
        load_policy(tmp_path / "other_policy", tokenizer, "--bc_path")
    assert load_policy(tmp_path / "policy", tokenizer, "--bc_path").config.vocab_size == len(tokenizer)


def test_language_model_policy_refuses_a_policy_of_another_vocabulary(tiny):
    from amrs_hf.simulation.language_policy import LanguageModelPolicy

    _, _, tokenizer, model = tiny
    with pytest.raises(ValueError, match="vocab_size .* differs from the tokenizer"):
        LanguageModelPolicy(_policy(tokenizer, vocab_size=len(tokenizer) + 5), tokenizer, model.config.modes,
                            model.config.cohorts)


def test_evaluated_language_model_policies_read_what_cloning_trained_on(tiny):
    """The pipeline's bc/dpo policies read at most max_length - 4 tracks: beyond, positions the cloned policy never
    learned would handicap it against the DPO policy (trained on longer prompts) in the comparison."""
    from amrs_hf.evaluation.policies import standard_policies
    from amrs_hf.objectives import Utility

    _, log, tokenizer, model = tiny
    policy = _policy(tokenizer)
    policies = standard_policies(model, tokenizer, Utility.load("mode_aware"), policy, policy, log,
                                 max_prompt_tracks=28)
    assert policies["bc"].max_history == policies["dpo"].max_history == 28
    assert standard_policies(model, tokenizer, Utility.load("mode_aware"), policy, None, log)["bc"].max_history == 61


def test_feedback_correction_without_negative_feedback_fails_before_training(tmp_path):
    config = _smoke()
    config["preferences"].update(strategy="feedback_correction", skip_threshold=-1.0, dislike_score=0)
    with pytest.raises(ValueError, match="section 'preferences': strategy feedback_correction needs negative"):
        run_pipeline(config, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "world_model").exists()
