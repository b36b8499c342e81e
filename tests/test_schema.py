"""The schema, validation of schema-shaped frames, splits and the track tokenizer, on small hand-made logs."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from amrs_hf.data import PLAY_FEATURES, SCHEMA_VERSION, LogValidationError
from amrs_hf.data.splits import cold_start_split, cold_start_splits, temporal_split
from amrs_hf.data.tokenizer import (
    build_track_tokenizer,
    text_to_tracks,
    track_token,
    track_token_ids,
    tracks_to_text,
)
from amrs_hf.data.validation import FILE, ROW, build_log


def make_frames(num_users=12, plays_per_user=5, num_tracks=8):
    rows = []
    for u in range(num_users):
        for p in range(plays_per_user):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "session_id": f"u{u}-s0",
                    "position": p,
                    "timestamp": 1_000.0 * (u + 1) + 10.0 * p * (u % 3 + 1),
                    "track_id": f"{(u + p) % num_tracks}",
                    "valence": 0.1 * (p % 10),
                    "rating": p % 2,
                    "mode": "calm" if u % 2 else None,
                }
            )
    plays = pd.DataFrame(rows)
    plays[FILE], plays[ROW] = "plays.csv", np.arange(1, len(plays) + 1)
    catalogue = pd.DataFrame({"track_id": [str(i) for i in range(num_tracks)], "energy": np.linspace(0, 1, num_tracks)})
    catalogue[FILE], catalogue[ROW] = "tracks.csv", np.arange(1, num_tracks + 1)
    return plays, catalogue


@pytest.fixture
def log():
    return build_log(*make_frames(), source="test")


def test_log_has_exact_features_and_version(log):
    assert log.plays.features == PLAY_FEATURES
    assert str(log.plays.info.version) == SCHEMA_VERSION
    summary = log.describe()
    assert (summary["plays"], summary["users"], summary["sessions"], summary["tracks"]) == (60, 12, 12, 8)
    assert summary["coverage"]["valence"] == 1.0 and summary["coverage"]["arousal"] == 0.0
    assert summary["coverage"]["rating"] == 1.0


def test_session_view_orders_plays(log):
    shuffled = build_log(*(f.sample(frac=1, random_state=0) for f in make_frames()), source="test")
    sessions = shuffled.sessions()
    assert sessions.num_rows == 12
    row = sessions.filter(lambda r: r["session_id"] == "u3-s0")[0]
    assert row["position"] == [0, 1, 2, 3, 4]
    assert row["track_id"] == ["3", "4", "5", "6", "7"]
    assert row["length"] == 5 and row["mode"] == "calm"


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("valence", 1.5, "out of range [0.0, 1.0]"),
        ("valence", "high", "not a number"),
        ("rating", 3, "must be 0 or 1"),
        ("mode", "party", "must be one of energize, focus, calm, sleep"),
        ("track_id", "99", "track is not in the catalogue"),
        ("position", 1, "duplicate (session_id, position)"),
        ("user_id", "", "missing value"),
    ],
)
def test_each_bad_value_names_file_row_column(column, value, message):
    plays, catalogue = make_frames()
    plays[column] = plays[column].astype(object)
    plays.loc[7, column] = value  # row 8 of plays.csv: user u1, position 2
    with pytest.raises(LogValidationError) as err:
        build_log(plays, catalogue, source="test")
    assert (err.value.file, err.value.row, err.value.column) == ("plays.csv", 8, column)
    assert message in str(err.value) and "plays.csv, row 8, column '" + column + "'" in str(err.value)


def test_lenient_drops_exactly_the_bad_rows_and_says_why():
    plays, catalogue = make_frames()
    plays["valence"] = plays["valence"].astype(object)
    plays.loc[[3, 9], "valence"] = 2.0
    plays.loc[20, "track_id"] = "missing"
    log = build_log(plays, catalogue, source="test", lenient=True)
    assert log.num_plays == 57
    assert log.dropped == {"valence: out of range [0.0, 1.0]": 2, "track_id: track is not in the catalogue": 1}


def test_missing_required_column_is_never_lenient():
    plays, catalogue = make_frames()
    with pytest.raises(LogValidationError, match="column 'track_id': required column is missing"):
        build_log(plays.drop(columns="track_id"), catalogue, source="test", lenient=True)


def test_catalogue_refuses_ids_that_could_be_mistaken_for_tokens():
    plays, catalogue = make_frames()
    catalogue.loc[2, "track_id"] = "<pad>"
    with pytest.raises(LogValidationError) as err:
        build_log(plays, catalogue, source="test")
    assert (err.value.file, err.value.row, err.value.column) == ("tracks.csv", 3, "track_id")


def test_cold_start_splits_are_user_disjoint_and_cover_everyone(log):
    splits = cold_start_splits(log, num_repeats=4, seed=7)
    test_users = []
    for split in splits:
        users = {name: set(part.plays["user_id"]) for name, part in split.items()}
        assert not users["train"] & users["valid"] and not users["train"] & users["test"]
        assert not users["valid"] & users["test"]
        assert users["train"] | users["valid"] | users["test"] == set(log.plays["user_id"])
        assert sum(part.num_plays for part in split.values()) == log.num_plays
        assert (len(users["train"]), len(users["valid"]), len(users["test"])) == (10, 1, 1)
        assert split["test"].catalogue.num_rows == log.catalogue.num_rows  # cold-start tracks keep features
        test_users.append(frozenset(users["test"]))
    assert len(set(test_users)) > 1, "Monte-Carlo repeats must draw different users"
    again = cold_start_split(log, seed=7)
    assert set(again["test"].plays["user_id"]) == set(splits[0]["test"].plays["user_id"])


def test_temporal_split_respects_the_cutoffs(log):
    split = temporal_split(log, fractions=(0.6, 0.2, 0.2))
    first, second = split["test"].split_info["cutoffs"]
    train, valid, test = (np.array(split[n].plays["timestamp"]) for n in ("train", "valid", "test"))
    assert train.max() < first <= valid.min() and valid.max() < second <= test.min()
    assert len(train) + len(valid) + len(test) == log.num_plays
    assert 0.5 < len(train) / log.num_plays < 0.7


def test_temporal_split_refuses_plays_without_time():
    plays, catalogue = make_frames()
    plays.loc[4, "timestamp"] = None
    with pytest.raises(ValueError, match="1 of 60 plays have none"):
        temporal_split(build_log(plays, catalogue, source="test"))


def test_tokenizer_round_trips_and_never_confuses_tracks_with_padding(tmp_path, log):
    track_ids = list(log.catalogue["track_id"]) + ["pad", "PAD", "unk"]
    tokenizer = build_track_tokenizer(track_ids)
    text = "<mode:sleep> <cohort:clinical> " + tracks_to_text(["3", "pad", "unk", "0"])
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert text_to_tracks(tokenizer.decode(ids)) == ["3", "pad", "unk", "0"]
    specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(specials) == 4 and not specials & set(track_token_ids(tokenizer))
    assert len(track_token_ids(tokenizer)) == len(track_ids)
    assert tokenizer.convert_tokens_to_ids(track_token("pad")) not in specials
    assert tokenizer(" " + track_token("3"))["input_ids"] == tokenizer(track_token("3"))["input_ids"]
    assert tokenizer(track_token("never-seen"))["input_ids"] == [tokenizer.unk_token_id]

    batch = tokenizer([tracks_to_text(["0"]), tracks_to_text(["1", "2", "3"])], padding=True, return_tensors="pt")
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 0, 0], [1, 1, 1]]))

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded(text)["input_ids"] == ids and reloaded.decode(ids) == text
    assert reloaded.pad_token_id == tokenizer.pad_token_id == 0


def test_tokenizer_refuses_ids_with_whitespace():
    with pytest.raises(ValueError, match="without whitespace"):
        build_track_tokenizer(["a b"])


def test_splits_of_a_subset_see_only_the_subset(log, tmp_path):
    """A log cut from a larger one (a `Dataset.select` view) splits and saves as the view, not the full table."""
    from amrs_hf.data import load_saved_log, save_log

    part = log.select_users([f"u{i}" for i in range(6)])
    split = cold_start_split(part, seed=1)
    assert sum(p.num_plays for p in split.values()) == part.num_plays == 30
    assert set(split["test"].plays["user_id"]) <= {f"u{i}" for i in range(6)}
    assert temporal_split(part)["train"].num_plays < 30
    save_log(split["test"], tmp_path)
    reloaded = load_saved_log(tmp_path)
    assert reloaded.plays.to_pandas().equals(split["test"].plays.to_pandas())
