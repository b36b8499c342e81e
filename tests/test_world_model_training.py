"""`amrs train-world-model` and `amrs evaluate-world-model` end to end on small synthetic logs, and the fidelity
aggregation on hand-made numbers."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from amrs_hf.cli import main as amrs
from amrs_hf.data import load_log
from amrs_hf.data.splits import cold_start_split
from amrs_hf.evaluation.fidelity import aggregate, markdown_table
from amrs_hf.models.world_model import AmrsWorldModel
from amrs_hf.models.world_model.processing_world_model import WorldModelCollator, user_sequences
from amrs_hf.scripts.train_world_model import (
    DataArguments,
    WorldModelArguments,
    WorldModelTrainingArguments,
    train_world_model,
)

TINY = ["--hidden_size", "16", "--num_attention_heads", "2", "--intermediate_size", "32", "--max_history", "16",
        "--logging_steps", "1000", "--disable_tqdm", "true", "--report_to", "none"]


def test_training_lowers_the_loss_on_what_it_saw(tmp_path):
    log = load_log("synthetic", None, num_plays=1500, seed=3)
    split = cold_start_split(log, seed=0)
    data_args = DataArguments(max_history=16)
    model_args = WorldModelArguments(hidden_size=16, num_attention_heads=2, intermediate_size=32, dropout=0.0)
    training_args = WorldModelTrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=8, learning_rate=3e-3, logging_steps=1000, disable_tqdm=True,
        save_strategy="no", eval_strategy="no", load_best_model_at_end=False, report_to="none",
    )
    model, tokenizer = train_world_model(split, log, data_args, model_args, training_args)
    fresh = AmrsWorldModel(model.config)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "feature" in k}, strict=False)
    batch = WorldModelCollator(tokenizer.pad_token_id)(user_sequences(split["train"], tokenizer, model.config, 16))
    with torch.no_grad():
        trained_loss, fresh_loss = model.eval()(**batch).loss.item(), fresh.eval()(**batch).loss.item()
    assert trained_loss < 0.9 * fresh_loss


def test_train_world_model_command_writes_a_reproducible_checkpoint(tmp_path):
    out = tmp_path / "wm"
    code = amrs(["train-world-model", "--data_source", "synthetic", "--data_options", '{"num_plays": 1200, "seed": 1}',
                 "--num_train_epochs", "2", "--output_dir", str(out), *TINY])
    assert code == 0
    resolved = json.loads((out / "train_config.json").read_text())
    assert resolved["data"]["data_options"] == {"num_plays": 1200, "seed": 1}
    assert resolved["model"]["hidden_size"] == 16 and resolved["training"]["num_train_epochs"] == 2
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results) == {"engagement", "rating", "valence", "arousal"} and results["valence"]["n"] > 0

    model = AutoModel.from_pretrained(out)
    assert isinstance(model, AmrsWorldModel) and model.config.hidden_size == 16
    assert torch.count_nonzero(model.track_features) > 0, "the catalogue's features travel with the checkpoint"


def test_evaluate_world_model_writes_report(tmp_path):
    out = tmp_path / "eval"
    code = amrs(["evaluate-world-model", "--data_source", "synthetic", "--data_options", '{"num_plays": 1500}',
                 "--num_splits", "2", "--num_train_epochs", "1", "--variants", "world_model", "wm_no_history",
                 "--baselines", "global_mean", "feature_only", "--output_dir", str(out), *TINY])
    assert code == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert report["protocol"]["num_splits"] == 2 and len(report["per_split"]) == 2
    assert set(report["summary"]) == {"world_model", "wm_no_history", "global_mean", "feature_only"}
    assert report["summary"]["global_mean"]["rating"]["auc"]["mean"] == 0.5  # a constant ranks nothing
    table = (out / "fidelity.md").read_text()
    assert "| valence R² |" in table and "0.426" in table
    assert (out / "calibration.png").stat().st_size > 10_000


def test_aggregate_and_table_by_hand():
    splits = [
        {"m": {"valence": {"r2": 0.2, "mae": 0.1}}},
        {"m": {"valence": {"r2": 0.4, "mae": 0.3}}},
    ]
    summary = aggregate(splits)
    assert summary["m"]["valence"]["r2"] == {"mean": pytest.approx(0.3), "std": pytest.approx(0.1), "n": 2}
    table = markdown_table(summary, ["m"])
    assert "| valence R² | 0.300 ± 0.100 | 0.426 |" in table
    assert "| like AUC | n/a |" in table
    assert np.isclose(summary["m"]["valence"]["mae"]["mean"], 0.2)


def test_ensemble_members_differ_and_reload(tmp_path):
    from amrs_hf.simulation.ensemble import WorldModelEnsemble

    out = tmp_path / "ensemble"
    code = amrs(["train-world-model", "--data_source", "synthetic", "--data_options", '{"num_plays": 1200}',
                 "--num_train_epochs", "1", "--ensemble_size", "2", "--output_dir", str(out), *TINY])
    assert code == 0 and (out / "ensemble.json").exists() and (out / "tokenizer.json").exists()
    ensemble = WorldModelEnsemble.from_pretrained(out)
    assert len(ensemble) == 2
    first, second = (m.track_embedding.weight for m in ensemble.members)
    assert not torch.equal(first, second), "members are trained from different seeds"
    assert json.loads((out / "eval_results.json").read_text())["valence"]["n"] > 0


@pytest.mark.multiprocess
def test_accelerate_launch_trains_on_two_processes(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    accelerate = pathlib.Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "amrs_hf.scripts.train_world_model",
         "--data_source", "synthetic", "--data_options", '{"num_plays": 1500}', "--num_train_epochs", "1",
         "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "wm"), "--log_level", "info", *TINY],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in result.stdout + result.stderr
    assert AutoModel.from_pretrained(tmp_path / "wm").config.hidden_size == 16


def test_mood_carries_forward_within_a_session_only():
    import pandas as pd

    from amrs_hf.models.world_model.processing_world_model import carry_mood_forward

    plays = pd.DataFrame({
        "session_id": ["a", "a", "a", "b"],
        "valence": [0.2, 0.7, np.nan, 0.9],
        "arousal": [0.3, 0.4, 0.5, 0.6],
        "pre_valence": [np.nan, np.nan, 0.1, np.nan],
        "pre_arousal": [np.nan, np.nan, np.nan, np.nan],
    })
    carried = carry_mood_forward(plays)
    # first play of a session: nothing before it; an observed pre-state is kept; session b starts afresh
    assert carried["pre_valence"].tolist()[1:3] == [0.2, 0.1] and np.isnan(carried["pre_valence"][0])
    assert np.isnan(carried["pre_valence"][3]) and np.isnan(carried["pre_arousal"][3])
    assert carried["pre_arousal"].tolist()[1:3] == [0.3, 0.4]
    assert np.isnan(plays["pre_valence"][1]), "the input frame is not modified"


def test_session_inputs_from_the_log():
    import pandas as pd

    from amrs_hf.models.world_model.processing_world_model import session_inputs

    plays = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u2"],
        "session_id": ["a", "a", "b", "c", "c"],
        "position": [0, 1, 0, 3, 4],
        "timestamp": [0.0, 1800.0, 90000.0, np.nan, 7200.0],
    })
    out = session_inputs(plays)
    # u2's log starts inside session c (position 3): whether it opens a session is unknown
    np.testing.assert_array_equal(out["session_start"], [1.0, 0.0, 1.0, np.nan, 0.0])
    np.testing.assert_array_equal(out["time_gap"], [np.nan, 0.5, 24.5, np.nan, np.nan])
    assert "session_start" not in plays, "the input frame is not modified"


def test_user_sequences_carry_session_inputs():
    log = load_log("synthetic", None, num_plays=600, seed=2)
    from amrs_hf.data.tokenizer import build_track_tokenizer
    from amrs_hf.models.world_model.processing_world_model import world_model_config

    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    config = world_model_config(log, tokenizer)
    windows = user_sequences(log, tokenizer, config, max_length=8, overlap=4)
    frame = log.plays_frame()
    for window in windows:
        rows = frame.iloc[window["play_index"]]
        starts = np.asarray(window["session_start"])
        expected = (rows["position"].to_numpy() == 0).astype(float)
        np.testing.assert_array_equal(starts[~np.isnan(starts)], expected[~np.isnan(starts)])
        gaps = np.asarray(window["time_gap"])[1:]
        np.testing.assert_allclose(gaps, np.diff(rows["timestamp"].to_numpy()) / 3600.0)
        assert (gaps[starts[1:] == 1] > 0.5).all() and (gaps[starts[1:] == 0] < 0.5).all()
    batch = WorldModelCollator(tokenizer.pad_token_id)(windows[:4])
    assert batch["session_start"].shape == batch["track_ids"].shape and batch["time_gap"].dtype == torch.float32


def test_play_count_feature_holds_the_training_logs_counts():
    """With `play_count_feature`, each track's feature column is log(1 + its plays in the training log), z-scored
    over the catalogue; nothing of the other listeners' plays enters it."""
    from amrs_hf.data.tokenizer import build_track_tokenizer, track_token
    from amrs_hf.models.world_model.processing_world_model import (
        PLAY_COUNT_FEATURE, set_catalogue, world_model_config)

    log = load_log("synthetic", None, num_plays=800, seed=1, num_tracks=40, num_users=30)
    split = cold_start_split(log, seed=0)
    tokenizer = build_track_tokenizer(log.catalogue["track_id"])
    config = world_model_config(split["train"], tokenizer, play_count_feature=True, hidden_size=16,
                                num_attention_heads=2, intermediate_size=32)
    assert config.audio_features[-1] == PLAY_COUNT_FEATURE
    model = AmrsWorldModel(config)
    with pytest.raises(ValueError, match="play_log"):
        set_catalogue(model, log.catalogue_frame(), tokenizer)
    set_catalogue(model, log.catalogue_frame(), tokenizer, play_log=split["train"])
    counts = split["train"].plays_frame()["track_id"].value_counts()
    tracks = log.catalogue_frame()["track_id"]
    raw = np.log1p(tracks.map(counts).fillna(0).to_numpy(dtype=float))
    expected = (raw - raw.mean()) / raw.std()
    ids = tokenizer.convert_tokens_to_ids([track_token(t) for t in tracks])
    np.testing.assert_allclose(model.track_features[ids, -1].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert raw.std() > 0  # the column carries information (counts differ across tracks)


def test_inverse_propensity_weights():
    import pandas as pd

    from amrs_hf.data.validation import build_log
    from amrs_hf.models.world_model.processing_world_model import inverse_propensity_weights

    plays = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "session_id": ["s", "s", "t", "t"], "position": [0, 1, 0, 1],
                          "track_id": ["0", "1", "0", "1"], "propensity": [0.5, 0.1, 0.25, 0.02]})
    log = build_log(plays, pd.DataFrame({"track_id": ["0", "1"], "energy": [0.1, 0.9]}), source="test")
    inverse = 1 / np.array([0.5, 0.1, 0.25, 0.02])  # 2, 10, 4, 50: mean 16.5
    np.testing.assert_allclose(inverse_propensity_weights(log, max_weight=100), inverse / inverse.mean(), rtol=1e-6)
    clipped = np.minimum(inverse / inverse.mean(), 2.0)  # 50 / 16.5 = 3.03 is clipped to 2, then mean 1 again
    weights = inverse_propensity_weights(log, max_weight=2.0)
    np.testing.assert_allclose(weights, clipped / clipped.mean(), rtol=1e-6)
    assert weights.mean() == pytest.approx(1.0) and weights.argmax() == 3
    plays.loc[2, "propensity"] = None
    missing = build_log(plays, pd.DataFrame({"track_id": ["0", "1"], "energy": [0.1, 0.9]}), source="test")
    with pytest.raises(ValueError, match=r"1 of the 4 plays given .* row 2 of those plays, column 'propensity'"):
        inverse_propensity_weights(missing)


def test_training_with_propensity_weighting(tmp_path):
    """`--propensity_weighting` trains on the synthetic world's logged propensities; the weights a window carries
    reach the loss."""
    log = load_log("synthetic", None, num_plays=600, num_users=30, num_tracks=40, seed=0)
    args = ["--data_source", "synthetic", "--data_options", '{"num_plays": 600, "num_users": 30, "num_tracks": 40}',
            *TINY, "--num_train_epochs", "2", "--disable_tqdm", "true"]
    assert amrs(["train-world-model", *args, "--propensity_weighting", "true", "--output_dir", str(tmp_path / "w")]) == 0
    model = AutoModel.from_pretrained(tmp_path / "w")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "w")
    windows = user_sequences(log, tokenizer, model.config, max_length=32,
                             play_weights=np.linspace(0.1, 3.0, log.num_plays))
    batch = WorldModelCollator(tokenizer.pad_token_id)(windows[:4])
    weighted = model.eval()(**batch).loss
    batch.pop("play_weight")
    assert not torch.isclose(weighted, model(**batch).loss)
