"""The pipeline report (`write_report`: metrics.json, report.md, valid PNG plots) and model cards (`render_card`,
`write_card`)."""

import json
import pathlib

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from amrs_hf.evaluation.report import METRICS_FILE, REPORT_FILE, write_report
from amrs_hf.hub.cards import render_card, write_card

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stats(mean, half=0.05, n=6):
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def policy_entry(shift, oracle=True, kl=0.1):
    predicted = {k: stats(v + shift) for k, v in
                 {"engagement": 0.7, "rating": 0.4, "valence": 0.55, "arousal": 0.45, "utility": 0.2}.items()}
    entry = {"predicted": predicted,
             "diversity": {"coverage": 0.5 + shift, "entropy": 2.0, "gini": 0.3, "ild": 1.1, "repeat_rate": 0.0},
             "kl_to_bc": kl, "safety_violation_rate": 0.0, "utility_gain_vs_bc": stats(shift)}
    if oracle:
        entry["oracle"] = {k: stats(v["mean"] - 0.02) for k, v in predicted.items()}
        entry["gap"] = {k: 0.02 for k in predicted}
        entry["oracle_utility_gain_vs_bc"] = stats(shift / 2)
    return entry


def metrics(oracle=True):
    return {"data": {"source": "synthetic", "test_plays": 300},
            "policies": {"random": policy_entry(-0.1, oracle, kl=2.5), "bc": policy_entry(0.0, oracle, kl=0.0),
                         "dpo_policy": policy_entry(0.05, oracle), "greedy": policy_entry(0.1, oracle, kl=None)},
            "evaluation": {"horizon": 3, "prefixes": 6}}


TRACK_COUNTS = {"random": np.array([5, 4, 3, 2, 1, 0]), "bc": np.array([10, 3, 2, 0, 0, 0]),
                "dpo_policy": np.array([8, 5, 2, 0, 0, 0]), "greedy": np.array([15, 0, 0, 0, 0, 0])}


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()  # checks the chunks' CRCs
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


@pytest.mark.parametrize("oracle", [True, False])
def test_write_report(tmp_path, oracle):
    written = metrics(oracle)
    plots = write_report(written, TRACK_COUNTS, str(tmp_path))
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == written
    expected_plots = {"affect.png", "diversity.png", "track_frequency.png"}
    if oracle:
        expected_plots.add("utility_true_vs_predicted.png")
    assert set(plots.values()) == expected_plots
    assert {p.name for p in tmp_path.glob("*.png")} == expected_plots
    for file in expected_plots:
        assert_png(tmp_path / file)
    report = (tmp_path / REPORT_FILE).read_text()
    for name in written["policies"]:
        assert report.count(f"| {name} |") == (3 if oracle else 2), name  # policies, (true world), diversity
    for title, file in plots.items():
        assert f"![{title}]({file})" in report
    assert "| random | 0.600 [0.550, 0.650] |" in report  # engagement 0.7 - 0.1, with its interval
    assert "| 2.500 |" in report and "| - |" in report  # a KL, and none for greedy
    assert ("true synthetic world" in report) == oracle


def test_render_card_front_matter_prose_and_figures():
    figures = {"policies": {"dpo": {"predicted": {"utility": stats(0.5, half=0.1, n=3)}, "kl_to_bc": 0.0123456}},
               "prefixes": 6, "source": "synthetic", "ild": float("nan"), "ok": True, "shape": [2, 3], "none": None}
    text = render_card("amrs_policy", "My policy", figures, datasets=["org/logs"], base_model="org/base",
                       tags=["dpo"], summary="A summary line.")
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "amrs_hf"
    assert meta["tags"] == ["amrs_hf", "amrs_policy", "dpo"]
    assert meta["datasets"] == ["org/logs"] and meta["base_model"] == "org/base"
    assert body.lstrip().startswith("# My policy\n\nA summary line.\n")
    prose = (ROOT / "model_cards" / "amrs_policy.md").read_text().strip()
    assert prose.startswith("# ") and prose.partition("\n")[2].strip() in body  # the prose, under the caller's title
    assert body.count("\n# ") + body.startswith("# ") == 1  # one top-level heading
    rows = [line for line in body.splitlines() if line.startswith("| ") and line != "| metric | value |"]
    assert rows == ["| policies / dpo / predicted / utility | 0.5000 [0.4000, 0.6000] |",
                    "| policies / dpo / kl_to_bc | 0.0123 |",
                    "| prefixes | 6 |", "| source | synthetic |", "| ild | nan |", "| ok | True |",
                    "| shape | [2, 3] |", "| none | None |"]
    world = render_card("amrs_world_model", "World")
    assert "tags:\n- amrs_hf\n- amrs_world_model" in world and "Figures of this run" not in world
    assert (ROOT / "model_cards" / "amrs_world_model.md").read_text().partition("\n")[2].strip() in world
    assert world.count("\n# ") == 1 and "\n# World\n" in world


@pytest.mark.parametrize("path", ["/tmp/model", "./outputs/policy", "../policy"])
def test_a_local_path_is_refused_as_base_model(path):
    with pytest.raises(ValueError, match="not a local path"):
        render_card("amrs_policy", "x", base_model=path)


def test_an_existing_folder_is_refused_as_base_model(tmp_path, monkeypatch):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not a local path"):
        render_card("amrs_policy", "x", base_model="org/base")


def test_write_card_loads_with_huggingface_hub(tmp_path):
    path = write_card(tmp_path, "amrs_policy", "Policy", {"utility": stats(0.25)}, base_model="org/base-policy",
                      datasets=["org/logs"])
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)
    assert card.data.library_name == "amrs_hf"
    assert card.data.base_model == "org/base-policy" and card.data.datasets == ["org/logs"]
    assert "amrs_policy" in card.data.tags
    assert "| utility | 0.2500 [0.2000, 0.3000] |" in card.text


def test_write_report_with_single_prefix_intervals(tmp_path):
    """One prefix gives NaN intervals (`mean_interval`); the report is still written, with every plot."""
    written = metrics(True)
    for entry in written["policies"].values():
        for section in ("predicted", "oracle"):
            for value in entry[section].values():
                value.update(ci95=[float("nan"), float("nan")], n=1)
    plots = write_report(written, TRACK_COUNTS, str(tmp_path))
    for file in plots.values():
        assert_png(tmp_path / file)
    assert "| bc | 0.700 [nan, nan] |" in (tmp_path / REPORT_FILE).read_text()


def test_world_model_fidelity_is_a_table(tmp_path):
    written = metrics(oracle=False)
    written["world_model"] = {"members": 2, "test": {
        "rating": {"n": 40, "auc": 0.6771, "ece": 0.025},
        "valence": {"n": np.int64(30), "r2": np.float32(0.4774), "pearson_r": 0.69, "mae": 0.1022,
                    "coverage90": np.float32("nan")}}}
    write_report(written, TRACK_COUNTS, str(tmp_path))
    report = (tmp_path / REPORT_FILE).read_text()
    assert "- members: 2" in report
    assert "| outcome | plays | R² | Pearson r | MAE | 90% coverage | AUC | calibration error |" in report
    assert "| rating | 40 | - | - | - | - | 0.677 | 0.025 |" in report
    assert "| valence | 30 | 0.477 | 0.690 | 0.102 | - | - | - |" in report  # NaN shows as "-"
    from amrs_hf.evaluation.report import render_markdown  # numpy scalars, as numpy code hands them over

    assert "| valence | 30 | 0.477 | 0.690 | 0.102 | - |" in render_markdown(written, {})
    saved = json.loads((tmp_path / METRICS_FILE).read_text())["world_model"]["test"]["valence"]
    assert saved["n"] == 30 and saved["coverage90"] is None and saved["r2"] == pytest.approx(0.4774)
