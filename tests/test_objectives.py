"""The utility: each term's formula by hand, mode-aware preferences, pessimism, safety, presets and config errors."""

import math
import pathlib
import re

import pytest
import torch
import yaml

from amrs_hf.data.schema import COHORTS, MODES
from amrs_hf.models.world_model import WorldModelPredictions
from amrs_hf.objectives import PRESETS, Utility

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "objectives"
MODE_NAMES, COHORT_NAMES = list(MODES), list(COHORTS)


def mode(name):  # world-model ids: 1 + index, 0 unknown
    return MODE_NAMES.index(name) + 1


def cohort(name):
    return COHORT_NAMES.index(name) + 1


def preds(valence, arousal, engagement=0.5, like=0.5):
    valence = torch.as_tensor(valence, dtype=torch.float32)
    full = lambda x: torch.as_tensor(x, dtype=torch.float32).expand_as(valence).clone()  # noqa: E731
    return WorldModelPredictions(engagement=full(engagement), like_prob=full(like), valence_mean=valence,
                                 valence_var=full(0.01), arousal_mean=torch.as_tensor(arousal, dtype=torch.float32),
                                 arousal_var=full(0.01))


def score(utility, predictions, modes, cohorts, **kwargs):
    return utility.score(predictions, torch.tensor(modes), torch.tensor(cohorts), modes=MODE_NAMES,
                         cohorts=COHORT_NAMES, **kwargs)


def test_paper_preset_is_half_valence_plus_half_arousal():
    utility = Utility.from_preset("paper")
    p = preds([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]], [[0.6, 0.3, 0.0], [0.4, 1.0, 0.8]], engagement=0.9, like=0.1)
    s = score(utility, p, [mode("sleep"), 0], [cohort("clinical"), 0], pre_arousal=torch.tensor([0.0, 0.0]))
    expected = 0.5 * p.valence_mean + 0.5 * p.arousal_mean
    torch.testing.assert_close(s.total, expected, rtol=0, atol=1e-7)
    assert s.feasible.all() and s.num_infeasible == 0  # the paper has no limits
    for name in ("engagement", "like", "diversity", "pessimism"):
        assert (s.terms[name] == 0).all()


def test_mode_aware_prefers_low_arousal_for_sleep_and_calm_high_for_energize():
    utility = Utility.from_preset("mode_aware")
    arousal = [[0.3, 0.6]] * 4  # two candidates, same valence/engagement/like, lower vs higher arousal
    p = preds([[0.6, 0.6]] * 4, arousal)
    s = score(utility, p, [mode("sleep"), mode("calm"), mode("energize"), mode("focus")], [cohort("consumer")] * 4)
    best = s.total.argmax(dim=1).tolist()
    assert best == [0, 0, 1, 1]  # sleep: 0.3, calm: 0.3, energize: 0.6, focus: 0.6 (in its band)
    # by hand: sleep arousal -1.5 * max(0, |a - 0| - 0.15); energize -1.0 * max(0, |a - 0.85| - 0.15)
    torch.testing.assert_close(s.terms["arousal"][0], torch.tensor([-1.5 * 0.15, -1.5 * 0.45]))
    torch.testing.assert_close(s.terms["arousal"][2], torch.tensor([-1.0 * 0.40, -1.0 * 0.10]))
    # focus: target 0.5 band 0.1 -> both 0.3 (0.1 outside) and 0.6 (inside) ...
    torch.testing.assert_close(s.terms["arousal"][3], torch.tensor([-0.1, 0.0]))
    # the rest by hand too: valence 0.6 in sleep (target 0.6): 0; engagement/like 0.3 x 0.5 each
    assert (s.terms["valence"][0] == 0).all()
    torch.testing.assert_close(s.terms["engagement"], torch.full((4, 2), 0.15))
    torch.testing.assert_close(s.total, sum(s.terms.values()))


def test_unknown_mode_uses_default_entry():
    utility = Utility.from_dict({"affect": {"default": {"valence": 2.0}, "sleep": {"arousal": {"weight": 1.0,
                                                                                               "target": 0.0}}}})
    s = score(utility, preds([0.4, 0.4, 0.4], [0.2, 0.2, 0.2]), [0, mode("calm"), mode("sleep")], [0, 0, 0])
    # unknown and calm (no entry): 2 x valence; sleep: its own entry only (-1 x arousal)
    torch.testing.assert_close(s.total, torch.tensor([0.8, 0.8, -0.2]))
    assert s.total.shape == (3,)  # (R,) in, (R,) out


def test_pessimism_lowers_the_uncertain_candidate_by_weight_times_std():
    utility = Utility.from_dict({"affect": {"default": {"valence": 0.5, "arousal": {"weight": 2.0, "target": 0.5}}},
                                 "engagement": 0.3, "like": 0.7, "pessimism": 0.4})
    p = preds([[0.5, 0.5]], [[0.5, 0.5]])
    std = WorldModelPredictions(**{name: torch.zeros(1, 2) for name in WorldModelPredictions.__dataclass_fields__})
    std.valence_mean[0, 1], std.arousal_mean[0, 1], std.engagement[0, 1], std.like_prob[0, 1] = 0.1, 0.05, 0.2, 0.3
    plain = score(utility, p, [0], [0])
    careful = score(utility, p, [0], [0], disagreement=std)
    penalty = 0.4 * (0.5 * 0.1 + 2.0 * 0.05 + 0.3 * 0.2 + 0.7 * 0.3)
    torch.testing.assert_close(careful.total, plain.total - torch.tensor([[0.0, penalty]]))
    torch.testing.assert_close(careful.terms["pessimism"], torch.tensor([[0.0, -penalty]]))
    assert careful.total.argmax().item() == 0 and plain.total[0, 0] == plain.total[0, 1]


def test_diversity_term_and_step_bonus():
    utility = Utility.from_dict({"diversity": {"weight": 0.2, "window": 2, "repeat_penalty": 0.5}})
    s = score(utility, preds([[0.5, 0.5]], [[0.5, 0.5]]), [0], [0], diversity=torch.tensor([[1.0, -0.25]]))
    torch.testing.assert_close(s.total, torch.tensor([[0.2, -0.05]]))
    # step bonus: F = 2 features, scale sqrt(2F) = 2; history (oldest first) ids 7, 8, 9 of which the window keeps 8, 9
    recent_ids = torch.tensor([[7, 8, 9]])
    recent = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]]])
    cands = torch.tensor([7, 9, 5, 6])
    feats = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.4], [9.0, 9.0]])
    bonus = utility.step_diversity(cands, feats, recent_ids, recent)
    # 7: outside the window, nearest kept is 9 at distance 1 -> 0.5; 9: distance 0 and a repeat -> -0.5;
    # 5: nearest is 8 at 0.4 -> 0.2; 6: far from both -> capped at 1
    torch.testing.assert_close(bonus, torch.tensor([[0.5, -0.5, 0.2, 1.0]]))
    empty = utility.step_diversity(cands, feats, torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 2))
    assert (empty == 1).all()
    # per sequence: pairs (0,1)=1.5 (d 3), capped 1; (0,2)=0.5; (1,2)=sqrt(10)/2 capped 1; list [7, 8, 7] repeats once
    ids = torch.tensor([[7, 8, 9], [7, 8, 7]])
    feats3 = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]]])
    seq = utility.sequence_diversity(ids, feats3)
    torch.testing.assert_close(seq, torch.tensor([(1 + 0.5 + 1) / 3, (1 + 0 + 1) / 3 - 0.5 / 3]))


def test_clinical_sleep_limit_blocks_the_arousal_jump_only_for_clinical_sleep():
    utility = Utility.from_preset("mode_aware")
    bound = PRESETS["mode_aware"]["safety"][0]["max_arousal_increase"]
    # pre-arousal 0.2; candidate 0 keeps it, candidate 1 jumps to 0.2 + bound + 0.1
    p = preds([[0.6, 0.6]] * 4, [[0.2, 0.3 + bound]] * 4, like=[[0.0, 1.0]] * 4)
    s = score(utility, p, [mode("sleep"), mode("sleep"), mode("energize"), mode("sleep")],
              [cohort("clinical"), cohort("consumer"), cohort("clinical"), cohort("clinical")],
              pre_arousal=torch.tensor([0.2, 0.2, 0.2, float("nan")]))
    assert s.feasible.tolist() == [[True, False], [True, True], [True, True], [True, True]]
    assert s.total[0, 1] == -math.inf and s.num_infeasible == 1
    torch.testing.assert_close(s.violation[0], torch.tensor([0.0, 0.1]))
    torch.testing.assert_close(s.unconstrained[0, 1], sum(t[0, 1] for t in s.terms.values()))
    # consumer in sleep: no limit, the candidate is scored as usual; unknown pre-state: the jump cannot be checked
    assert torch.isfinite(s.total[1]).all() and torch.isfinite(s.total[3]).all()


def test_absolute_and_valence_limits_and_wildcards():
    utility = Utility.from_dict({"affect": {"default": {"valence": 1.0}}, "safety": [
        {"cohort": "*", "mode": "calm", "max_arousal": 0.5},
        {"cohort": "clinical", "max_valence_decrease": 0.1}]})
    p = preds([[0.5, 0.5, 0.2]] * 3, [[0.4, 0.7, 0.4]] * 3)
    s = score(utility, p, [mode("calm"), mode("focus"), 0], [0, cohort("clinical"), cohort("clinical")],
              pre_valence=torch.tensor([0.5, 0.5, 0.5]))
    assert s.feasible.tolist() == [[True, False, True], [True, True, False], [True, True, False]]
    torch.testing.assert_close(s.violation[1], torch.tensor([0.0, 0.0, 0.2]))


def test_round_trips_dict_and_yaml(tmp_path):
    for name in PRESETS:
        utility = Utility.from_preset(name)
        assert Utility.from_dict(utility.to_dict()) == utility
        utility.to_yaml(tmp_path / f"{name}.yaml")
        assert Utility.from_yaml(tmp_path / f"{name}.yaml") == utility
        assert yaml.safe_load(utility.to_yaml()) == utility.to_dict()
        # the recipe YAML files are the presets
        assert Utility.from_yaml(RECIPES / f"{name}.yaml") == utility


@pytest.mark.parametrize("config, match", [
    ({"engagment": 1.0}, r"unknown key 'engagment' \(did you mean 'engagement'\?\); valid: name, affect"),
    ({"affect": {"slep": {}}}, r"affect: unknown mode 'slep'.*valid: energize, focus, calm, sleep, default"),
    ({"like": -0.5}, r"like must be a finite number >= 0, got -0.5"),
    ({"affect": {"calm": {"arousal": {"weight": -1}}}}, r"affect.calm.arousal.weight must be .* >= 0"),
    ({"affect": {"calm": {"arousal": {"weight": 1, "target": 1.5}}}}, r"affect.calm.arousal.target .* \[0, 1\]"),
    ({"affect": {"calm": {"arousal": {"weight": 1, "band": 0.1}}}}, r"affect.calm.arousal.band needs a target"),
    ({"affect": {"calm": {"mood": 1}}}, r"affect.calm: unknown key 'mood'; valid: valence, arousal"),
    ({"diversity": {"weight": 0.1, "windw": 3}}, r"diversity: unknown key 'windw'.*valid: weight, window"),
    ({"safety": [{"cohort": "clinicl", "max_arousal": 0.5}]}, r"safety\[0\].cohort: unknown cohort 'clinicl'"),
    ({"safety": [{"mode": "sleep"}]}, r"safety\[0\] sets no bound"),
    ({"pessimism": True}, r"pessimism must be a finite number"),
])
def test_bad_configs_name_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        Utility.from_dict(config)


def test_bad_preset_and_yaml_file_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown utility preset 'mode-aware'; valid presets: paper, mode_aware"):
        Utility.from_preset("mode-aware")
    path = tmp_path / "bad.yaml"
    path.write_text("like: -1\n")
    with pytest.raises(ValueError, match="bad.yaml: like must be"):
        Utility.from_yaml(path)


def test_score_validates_ids():
    utility = Utility.from_preset("mode_aware")
    with pytest.raises(ValueError, match=r"mode_ids must be world-model ids in \[0, 4\]"):
        score(utility, preds([0.5], [0.5]), [5], [0])
    with pytest.raises(ValueError, match="one id per row"):
        score(utility, preds([0.5, 0.5], [0.5, 0.5]), [1], [0, 0])


def test_docs_example_runs():
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "objectives.md"
    block = next(b for b in re.findall(r"```python\n(.*?)```", docs.read_text(), flags=re.S) if "score(" in b)
    namespace = {}
    exec(block.replace('"recipes/objectives/', f'"{RECIPES}/'), namespace)
    assert namespace["score"].total[0, 1] == -math.inf


def test_objectives_import_only_data_and_models():
    """Layering: objectives sit beside models, below simulation (StepContext scoring lives in simulation.scoring)."""
    package = pathlib.Path(__file__).resolve().parents[1] / "src" / "amrs_hf" / "objectives"
    for path in package.glob("*.py"):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:from|import) amrs_hf\.(\w+)", line)
            assert match is None or match.group(1) in ("data", "models"), f"{path.name}: {line.strip()}"
