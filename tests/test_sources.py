"""Source adapters: SiTunes and MSSD on the real logs (skipped when absent), the generic YAML loader on small files
written here, and one clear error (file, row, column) for every kind of bad input."""

import csv
import pathlib
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from amrs_hf.data import LogValidationError, load_log, save_log

ROOT = pathlib.Path(__file__).resolve().parents[1]

PLAYS = """listener,visit,idx,song,mood_after
ann,v1,0,t1,0.5
ann,v1,1,t2,-0.5
bob,v2,0,t1,1
"""
TRACKS = """id,nrg,genre
t1,0.3,rock
t2,0.9,pop
"""
MAPPING = {
    "plays": "plays.csv",
    "catalogue": "tracks.csv",
    "columns": {"user_id": "listener", "session_id": "visit", "position": "idx", "track_id": "song",
                "valence": "mood_after"},
    "catalogue_columns": {"track_id": "id", "energy": "nrg"},
    "scale": {"valence": [-1, 1]},
}


def write_log(folder, text=PLAYS, file_encoding="utf-8", **changes):
    """Write plays.csv (`text`), tracks.csv and mapping.yaml (MAPPING updated with `changes`; None removes a key)."""
    (folder / "plays.csv").write_bytes(text.encode(file_encoding))
    (folder / "tracks.csv").write_text(TRACKS)
    spec = {**MAPPING, **changes}
    (folder / "mapping.yaml").write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return folder / "mapping.yaml"


def raises_at(path, file, row, column, message):
    """Load `path` with the generic loader and check the one error: file, row, column and message."""
    with pytest.raises(LogValidationError) as info:
        load_log("generic", path)
    err = info.value
    assert pathlib.Path(err.file).name == file and err.row == row and err.column == column, str(err)
    assert file in str(err) and message in str(err)
    if row is not None:
        assert f"row {row}" in str(err)
    if column is not None:
        assert f"column '{column}'" in str(err)
    return err


# --- generic -------------------------------------------------------------------------------------------------------

def test_generic_maps_columns_scale_and_catalogue(tmp_path):
    log = load_log("generic", write_log(tmp_path))
    plays = log.plays_frame()
    assert list(plays["user_id"]) == ["ann", "ann", "bob"] and list(plays["position"]) == [0, 1, 0]
    np.testing.assert_allclose(plays["valence"], [0.75, 0.25, 1.0])
    catalogue = log.catalogue_frame().set_index("track_id")
    assert catalogue.loc["t2", "genre"] == "pop"
    np.testing.assert_allclose(catalogue["energy"], [0.3, 0.9], rtol=1e-6)
    assert log.source == "generic" and log.dropped == {}


def test_generic_one_column_may_feed_two(tmp_path):
    columns = {**MAPPING["columns"], "user_id": "visit"}  # sessions without users: each visit is its own listener
    plays = load_log("generic", write_log(tmp_path, columns=columns)).plays_frame()
    assert (plays["user_id"] == plays["session_id"]).all() and list(plays["user_id"]) == ["v1", "v1", "v2"]


def test_generic_without_catalogue_lists_the_played_tracks(tmp_path):
    log = load_log("generic", write_log(tmp_path, catalogue=None, catalogue_columns=None))
    catalogue = log.catalogue_frame()
    assert sorted(catalogue["track_id"]) == ["t1", "t2"] and catalogue["energy"].isna().all()


def test_generic_derives_sessions_and_likes(tmp_path):
    (tmp_path / "log.jsonl").write_text("\n".join([
        '{"user": "ann", "when": "2024-01-01T10:00:00Z", "song": "a", "stars": 5}',
        '{"user": "ann", "when": "2024-01-01T10:04:00Z", "song": "b", "stars": 2}',
        '{"user": "ann", "when": "2024-01-01T12:00:00Z", "song": "a", "stars": 4}',
        '{"user": "bob", "when": 1704103200, "song": "b", "stars": null}',
    ]))
    spec = {"plays": "log.jsonl", "session_gap_minutes": 30, "like_threshold": 4,
            "columns": {"user_id": "user", "timestamp": "when", "track_id": "song", "rating": "stars"}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    plays = load_log("generic", tmp_path / "m.yaml").plays_frame()
    assert list(plays["session_id"]) == ["ann-0000", "ann-0000", "ann-0001", "bob-0000"]
    assert list(plays["position"]) == [0, 1, 0, 0]
    assert plays["timestamp"].iloc[0] == pd.Timestamp("2024-01-01T10:00:00Z").timestamp()
    assert plays["timestamp"].iloc[3] == 1704103200
    assert plays["rating"].tolist()[:3] == [1, 0, 1] and pd.isna(plays["rating"].iloc[3])
    assert plays["rating_score"].tolist()[:3] == [5, 2, 4]


def test_generic_reads_a_schema_named_file_and_saved_parquet(tmp_path):
    (tmp_path / "plays.csv").write_text("user_id,session_id,position,track_id,engagement\nu,s,0,x,0.5\nu,s,1,y,\n")
    log = load_log("generic", tmp_path / "plays.csv")
    assert log.num_plays == 2 and sorted(log.catalogue_frame()["track_id"]) == ["x", "y"]

    save_log(log, tmp_path / "saved")
    (tmp_path / "saved" / "m.yaml").write_text("plays: plays.parquet\ncatalogue: catalogue.parquet\n")
    again = load_log("generic", tmp_path / "saved" / "m.yaml")
    pd.testing.assert_frame_equal(again.plays_frame(), log.plays_frame())
    pd.testing.assert_frame_equal(again.catalogue_frame(), log.catalogue_frame())


def test_docs_example_mapping_loads(tmp_path):
    docs = (ROOT / "docs" / "data_sources.md").read_text()
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", docs, re.S).group(1))
    (tmp_path / "my_logs.csv").write_text(PLAYS)
    (tmp_path / "tracks.csv").write_text(TRACKS)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(example))
    assert load_log("generic", tmp_path / "m.yaml").num_plays == 3


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"colums": {}}, "colums"),
        ({"columns": {**MAPPING["columns"], "mood": "mood_after"}}, "columns.mood"),
        ({"catalogue_columns": {"track_id": "id", "bpm": "nrg"}}, "catalogue_columns.bpm"),
        ({"scale": {"tempo": [0, 300]}}, "scale.tempo"),
        ({"scale": {"valence": [1, -1]}}, "scale.valence"),
        ({"plays": None}, "plays"),
        ({"encoding": "klingon-8"}, "encoding"),
        ({"session_gap_minutes": 30}, "session_gap_minutes"),  # the log already has sessions
    ],
)
def test_generic_mapping_errors_name_the_yaml_file_and_key(tmp_path, changes, key):
    path = write_log(tmp_path, **changes)
    with pytest.raises(LogValidationError) as info:
        load_log("generic", path)
    assert info.value.file == str(path) and f"mapping.yaml: key '{key}'" in str(info.value)


def test_generic_empty_mapping_file(tmp_path):
    (tmp_path / "m.yaml").write_text("")
    with pytest.raises(LogValidationError, match=r"m\.yaml: the file is empty"):
        load_log("generic", tmp_path / "m.yaml")


# --- bad input: one clear error each, and exact counts when lenient --------------------------------------------------

@pytest.mark.parametrize(
    "plays, file, row, column, message",
    [
        ("listener,idx,song,mood_after\nann,0,t1,0.5\n", "plays.csv", None, "visit", "required column is missing"),
        (PLAYS.replace("t2,-0.5", "t2,-1.5"), "plays.csv", 2, "mood_after", "out of range [-1, 1]; got '-1.5'"),
        (PLAYS.replace("bob,v2,0", "bob,v2,first"), "plays.csv", 3, "idx", "not a number; got 'first'"),
        (PLAYS.replace("bob,v2,0", "ann,v1,1"), "plays.csv", 3, "idx", "duplicate (session_id, position)"),
        (PLAYS.replace("ann,v1,1,t2", "ann,v1,1,t9"), "plays.csv", 2, "song",
         "track is not in the catalogue; got 't9'"),
        ("", "plays.csv", None, None, "the file is empty"),
    ],
    ids=["missing-column", "out-of-range", "non-numeric", "duplicate", "unknown-track", "empty"],
)
def test_generic_bad_input_raises_naming_file_row_column(tmp_path, plays, file, row, column, message):
    raises_at(write_log(tmp_path, text=plays), file, row, column, message)


def test_wrong_encoding_names_the_cell(tmp_path):
    path = write_log(tmp_path, text=PLAYS.replace("bob", "zoé"), file_encoding="latin-1")
    raises_at(path, "plays.csv", 3, "listener", "not valid utf-8 text (byte 0xe9 at line 4)")
    (tmp_path / "mapping.yaml").write_text((tmp_path / "mapping.yaml").read_text() + "encoding: latin-1\n")
    assert "zoé" in set(load_log("generic", path).plays_frame()["user_id"])


def test_lenient_drops_bad_rows_and_counts_them(tmp_path):
    plays = PLAYS + "\n".join([
        "cat,v3,0,t1,7",        # out of range
        "cat,v3,x,t1,0",        # not a number
        "cat,v3,y,t2,0",        # not a number
        "ann,v1,1,t1,0",        # duplicate of ann's (v1, 1)
        "dan,v4,0,t404,0",      # not in the catalogue
        "eve,v5,0,t2,",         # fine: valence is optional
    ]) + "\n"
    path = write_log(tmp_path, text=plays)
    with pytest.raises(LogValidationError):
        load_log("generic", path)
    log = load_log("generic", path, lenient=True)
    assert log.num_plays == 4
    assert log.dropped == {
        "mood_after: out of range [-1, 1]": 1,
        "idx: not a number": 2,
        "idx: duplicate (session_id, position): another row has the same session and position": 1,
        "song: track is not in the catalogue": 1,
    }


def test_lenient_still_refuses_whole_file_problems(tmp_path):
    with pytest.raises(LogValidationError, match="the file is empty"):
        load_log("generic", write_log(tmp_path, text=""), lenient=True)
    with pytest.raises(LogValidationError, match="required column is missing"):
        load_log("generic", write_log(tmp_path, text="listener,song\nann,t1\n"), lenient=True)


# --- SiTunes -------------------------------------------------------------------------------------------------------

def read_raw(folder, name):
    return pd.read_csv(folder / name)


def corrupted_copy(situnes_dir, tmp_path, name, row, column, value):
    """Copy the SiTunes files (not the wristband series) to tmp_path and set one cell; rows count from 1."""
    folder = tmp_path / "situnes"
    folder.mkdir()
    for path in situnes_dir.iterdir():
        if "interactions" in path.name or "env" in path.name or path.name == "music_info.csv":
            shutil.copy(path, folder / path.name)
    with open(folder / name, newline="") as f:
        rows = list(csv.reader(f))
    rows[row][rows[0].index(column)] = value
    with open(folder / name, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return folder


def test_situnes_real_log(situnes_dir):
    log = load_log("situnes", situnes_dir)
    summary = log.describe()
    assert (summary["plays"], summary["users"], summary["catalogue_tracks"]) == (2006, 30, 946)
    assert summary["coverage"]["valence"] == 1.0 and summary["coverage"]["arousal"] == 1.0
    plays = log.plays_frame()
    for column in ("valence", "arousal", "pre_valence", "pre_arousal", "engagement"):
        values = plays[column].dropna()
        assert values.between(0, 1).all(), column
    stage1 = plays["context"] == "stage=1"
    assert stage1.sum() == 600 and plays.loc[stage1, "pre_valence"].isna().all()
    assert plays.loc[~stage1, "pre_valence"].notna().all()
    assert plays["context"].str.fullmatch(r"stage=1|stage=[23];time=[123]").all()

    raw = pd.concat([read_raw(situnes_dir, f"stage{s}_interactions.csv") for s in (1, 2, 3)])
    assert plays["rating"].mean() == pytest.approx((raw["rating"] >= 4).mean())
    assert plays["engagement"].notna().sum() == raw["duration"].notna().sum()
    assert set(plays["logging_policy"].dropna()) == {"Rand", "WD", "GCN", "Random", "Situ-MT", "Situ-MT_c"}

    # One play traced by hand: stage 2, inter_id 45 (user 2, item 936).
    stage2 = read_raw(situnes_dir, "stage2_interactions.csv").set_index("inter_id").loc[45]
    music = read_raw(situnes_dir, "music_info.csv").set_index("item_id").loc[936]
    play = plays[(plays["user_id"] == "u2") & (plays["timestamp"] == stage2["timestamp"])].iloc[0]
    assert play["track_id"] == "936" and play["logging_policy"] == stage2["rec_type"]
    assert play["valence"] == pytest.approx((stage2["emo_post_valence"] + 1) / 2, abs=1e-6)
    assert play["pre_arousal"] == pytest.approx((stage2["emo_pre_arousal"] + 1) / 2, abs=1e-6)
    assert play["engagement"] == pytest.approx(min(1.0, stage2["duration"] / (music["duration"] / 1000)), abs=1e-6)


def test_situnes_sessions(situnes_dir):
    plays = load_log("situnes", situnes_dir).plays_frame()
    assert not plays.duplicated(["session_id", "position"]).any()
    assert plays["session_id"].str.fullmatch(r"situnes-s[123]-u\d+-\d{4}").all()
    sessions = plays.groupby("session_id", sort=False)
    assert (plays["position"] == sessions.cumcount()).all()  # plays come sorted by (user, session, position)
    assert (sessions["user_id"].nunique() == 1).all()
    stage = plays["context"].str.extract(r"stage=(\d)")[0]
    assert (plays["session_id"].str.extract(r"-s(\d)-")[0] == stage).all()
    assert sessions["timestamp"].diff().dropna().between(0, 30 * 60).all()
    # One session per user and stage when no gap splits them: 30 + 30 + 10.
    one = load_log("situnes", situnes_dir, session_gap_minutes=1e9, stages=(1, 2, 3))
    assert one.describe()["sessions"] == 70
    assert load_log("situnes", situnes_dir, stages=(1,)).num_plays == 600


@pytest.mark.parametrize(
    "name, row, column, value, message",
    [
        ("stage2_interactions.csv", 5, "emo_post_valence", "1.7", "out of range [-1.0, 1.0]; got '1.7'"),
        ("stage2_interactions.csv", 5, "emo_post_valence", "glad", "not a number; got 'glad'"),
        ("stage1_interactions.csv", 3, "item_id", "99999", "track is not in the catalogue; got '99999'"),
        ("music_info.csv", 2, "duration", "-1", "track length (ms) must be positive; got '-1'"),
    ],
)
def test_situnes_bad_cell_names_file_row_column(situnes_dir, tmp_path, name, row, column, value, message):
    folder = corrupted_copy(situnes_dir, tmp_path, name, row, column, value)
    with pytest.raises(LogValidationError) as info:
        load_log("situnes", folder)
    err = info.value
    assert (pathlib.Path(err.file).name, err.row, err.column, err.line) == (name, row, column, row + 1)
    assert f"{name}, row {row}, column '{column}': {message} (row {row} is line {row + 1} of the file)" in str(err)


def test_situnes_lenient_drops_the_bad_row(situnes_dir, tmp_path):
    folder = corrupted_copy(situnes_dir, tmp_path, "stage2_interactions.csv", 5, "emo_post_valence", "1.7")
    log = load_log("situnes", folder, lenient=True)
    assert log.num_plays == 2005 and log.dropped == {"emo_post_valence: out of range [-1.0, 1.0]": 1}


# --- MSSD ----------------------------------------------------------------------------------------------------------

def expected_engagement(row) -> float:
    """The skip ladder, written out independently of the adapter."""
    if row["skip_1"]:
        return 0.1
    if row["skip_2"]:
        return 0.25
    if row["skip_3"]:
        return 0.75
    if row["not_skipped"]:
        return 1.0
    return np.nan


def test_mssd_real_log(mssd_dir):
    log = load_log("mssd", mssd_dir)
    summary = log.describe()
    assert (summary["plays"], summary["sessions"], summary["users"], summary["catalogue_tracks"]) == (201, 11, 11, 175)
    plays = log.plays_frame()
    assert (plays["user_id"] == plays["session_id"]).all()
    assert not plays.duplicated(["session_id", "position"]).any()
    for _, session in plays.groupby("session_id"):
        assert list(session["position"]) == list(range(len(session)))

    raw = read_raw(mssd_dir, "log_very_small_joined_features.csv")
    raw["position"] = raw["session_position"] - 1
    merged = plays.merge(raw, on=["session_id", "position"], validate="one_to_one")
    assert len(merged) == 201 and (merged["track_id"] == merged["track_id_clean"]).all()
    np.testing.assert_allclose(merged["engagement"], merged.apply(expected_engagement, axis=1), rtol=1e-6)
    assert merged["engagement"].isna().sum() == 9
    # Specific rows: session 0_00006f66 starts played in full; its 13th play (skip_1 .. skip_3 all true) is 0.1.
    first = plays[plays["session_id"].str.startswith("0_00006f66")].set_index("position")
    assert first.loc[0, "engagement"] == 1.0
    assert first.loc[0, "timestamp"] == pd.Timestamp("2018-07-15T16:00:00Z").timestamp()
    assert first.loc[0, "context"] == "context_type=editorial_playlist;shuffle=true"
    skipped = raw[raw["skip_1"] & raw["session_id"].str.startswith("0_00006f66")]["position"]
    assert (first.loc[skipped, "engagement"] == np.float32(0.1)).all() and len(skipped) > 0

    catalogue = log.catalogue_frame().set_index("track_id")
    track = raw.drop_duplicates("track_id_clean").set_index("track_id_clean")
    np.testing.assert_allclose(catalogue.loc[track.index, "valence"], track["valence"], rtol=1e-6)
    np.testing.assert_allclose(catalogue.loc[track.index, "duration_s"], track["duration"], rtol=1e-6)


def test_mssd_plain_log_has_a_featureless_catalogue(mssd_dir):
    log = load_log("mssd", mssd_dir / "log_very_small.csv")
    assert log.num_plays == 201 and log.catalogue_frame()["valence"].isna().all()


def test_mssd_bad_flag_names_file_row_column(mssd_dir, tmp_path):
    text = (mssd_dir / "log_very_small.csv").read_text().splitlines()
    cells = text[7].split(",")
    cells[text[0].split(",").index("skip_2")] = "maybe"
    text[7] = ",".join(cells)
    (tmp_path / "log.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(LogValidationError) as info:
        load_log("mssd", tmp_path / "log.csv")
    assert (info.value.row, info.value.column) == (7, "skip_2")
    assert "log.csv, row 7, column 'skip_2': not a boolean (True or False); got 'maybe'" in str(info.value)
    assert load_log("mssd", tmp_path / "log.csv", lenient=True).dropped == {"skip_2: not a boolean (True or False)": 1}



def test_unknown_source_options_are_named():
    from amrs_hf.data import load_log

    with pytest.raises(ValueError, match="data source 'synthetic' has no option 'bogus'.*num_plays, seed"):
        load_log("synthetic", None, num_plays=100, bogus=1)
    with pytest.raises(ValueError, match="data source 'situnes' has no option 'bogus'; its options: "):
        load_log("situnes", "unused", bogus=1)  # refused before any file is read
