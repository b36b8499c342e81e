"""Messy user files: every problem is one `LogValidationError` naming the file, the row (and line) and the column,
raised before any work starts; a lenient load drops only bad rows and says how many and why. Small files written here,
so these run in well under a second each and need no real data."""

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from amrs_hf.data import LogValidationError, load_log, load_saved_log, save_log
from amrs_hf.data.features import AudioFeatureScaler
from amrs_hf.data.splits import temporal_split
from amrs_hf.data.tokenizer import build_track_tokenizer

H = "user_id,session_id,position,track_id\n"


def write(folder: pathlib.Path, name: str, content) -> pathlib.Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def generic(folder, plays, name="p.csv", spec=None, **options):
    """Load `plays` (text, bytes, or a pyarrow table for .parquet) with the generic source, unmapped or with `spec`."""
    if isinstance(plays, pa.Table):
        pq.write_table(plays, folder / name)
    else:
        write(folder, name, plays)
    if spec is None:
        return load_log("generic", folder / name, **options)
    write(folder, "m.yaml", spec if isinstance(spec, str) else yaml.safe_dump({"plays": name, **spec}))
    return load_log("generic", folder / "m.yaml", **options)


def error(call, *args, **kwargs) -> LogValidationError:
    with pytest.raises(LogValidationError) as info:
        call(*args, **kwargs)
    return info.value


def where(err: LogValidationError) -> tuple:
    """(file name, row, line, column) of an error."""
    return (pathlib.Path(err.file).name if err.file else None, err.row, err.line, err.column)


def generic_error(folder, plays, **kwargs) -> LogValidationError:
    return error(generic, folder, plays, **kwargs)


# --- 1: positions that int32 cannot hold ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["4294967296", "2147483648", "1e20", "-1", "1.5"])
def test_position_outside_int32_is_refused_not_wrapped(tmp_path, value):
    err = generic_error(tmp_path, H + f"u,s,0,a\nu,s,{value},b\n")
    assert where(err) == ("p.csv", 2, 3, "position")
    assert f"must be a whole number from 0 to 2147483647; got '{value}'" in str(err)
    assert generic(tmp_path, H + "u,s,0,a\nu,s,2147483647,b\n").plays_frame()["position"].tolist() == [0, 2147483647]


def test_parquet_int64_position_beyond_int32_is_refused(tmp_path):
    table = pa.table({"user_id": ["u", "u"], "session_id": ["s", "s"], "position": pa.array([0, 2**32], pa.int64()),
                      "track_id": ["a", "b"]})
    err = generic_error(tmp_path, table, name="p.parquet")
    assert where(err) == ("p.parquet", 2, None, "position") and "got '4294967296'" in str(err)


# --- 2, 13, 28: CSV structure, with rows and physical lines --------------------------------------------------------

def test_trailing_comma_on_every_data_row_is_an_error_not_a_column_shift(tmp_path):
    err = generic_error(tmp_path, "user_id,session_id,position,track_id,engagement\n1,1,0,5,0.5,\n2,2,0,6,1.0,\n")
    assert where(err) == ("p.csv", 1, 2, None)
    assert "the row has 6 fields but the header has 5 columns" in str(err)
    assert "(row 1 is line 2 of the file)" in str(err)


def test_a_trailing_comma_on_every_line_including_the_header_is_harmless(tmp_path):
    plays = generic(tmp_path, "user_id,session_id,position,track_id,\nu,s,0,a,\nu,s,1,b\n").plays_frame()
    assert plays["track_id"].tolist() == ["a", "b"]


def test_row_with_too_few_fields_is_an_error(tmp_path):
    err = generic_error(tmp_path, "user_id,session_id,position,track_id,engagement\nu,s,0,0.5\n")
    assert where(err) == ("p.csv", 1, 2, None) and "the row has 4 fields but the header has 5 columns" in str(err)


def test_unclosed_quote_names_the_file_and_line(tmp_path):
    err = generic_error(tmp_path, H + 'u,s,0,a\nu,s,1,"b\nu,s,2,c\n')
    assert where(err) == ("p.csv", None, 3, None)
    assert "a quoted value starting on line 3 is never closed" in str(err) and "p.csv, line 3:" in str(err)


def test_rows_skip_blank_lines_and_errors_give_the_physical_line(tmp_path):
    text = H.replace("\n", ",engagement\n") + 'u,s,0,"a",0.5\n\n\nu,s,1,b,7\n'
    err = generic_error(tmp_path, text)
    assert where(err) == ("p.csv", 2, 5, "engagement") and "(row 2 is line 5 of the file)" in str(err)
    quoted = H.replace("\n", ",context\n") + 'u,s,0,a,"two\nlines"\nu,s,x,b,\n'
    err = generic_error(tmp_path, quoted)
    assert where(err) == ("p.csv", 2, 4, "position")


def test_lenient_drops_unreadable_rows_and_counts_them(tmp_path):
    log = generic(tmp_path, H + "u,s,0,a\nu,s,1,b,EXTRA\nu,s,2,c\n", lenient=True)
    assert log.num_plays == 2
    assert log.dropped == {"the row has 5 fields but the header has 4 columns (a trailing or stray comma, or a value "
                           "with a comma that is not quoted?)": 1}


# --- 8: a column name twice -----------------------------------------------------------------------------------------

def test_duplicate_column_name_in_the_header(tmp_path):
    err = generic_error(tmp_path, "user_id,session_id,position,track_id,engagement,engagement\nu,s,0,a,0.5,1\n",
                        lenient=True)
    assert where(err) == ("p.csv", None, 1, "engagement") and "appears twice in the header" in str(err)


# --- 3: exact ids in JSON Lines and Parquet ------------------------------------------------------------------------

def test_jsonl_integer_ids_keep_their_exact_text_even_with_nulls(tmp_path):
    lines = [{"user_id": 7, "session_id": 1, "position": 0, "track_id": 9007199254740993},
             {"user_id": 7, "session_id": 1, "position": 1, "track_id": 9007199254740992},
             {"user_id": 7, "session_id": 1, "position": 2, "track_id": None}]
    log = generic(tmp_path, "\n".join(map(json.dumps, lines)) + "\n", name="p.jsonl", lenient=True)
    plays = log.plays_frame()
    assert plays["track_id"].tolist() == ["9007199254740993", "9007199254740992"]
    assert set(plays["user_id"]) == {"7"} and log.dropped == {"track_id: missing value": 1}


def test_parquet_integer_ids_with_nulls_keep_their_exact_text(tmp_path):
    table = pa.table({"user_id": pa.array([7, 7, None], pa.int64()), "session_id": ["s", "s", "s"],
                      "position": [0, 1, 2], "track_id": pa.array([9007199254740993, 9007199254740992, 1], pa.int64())})
    log = generic(tmp_path, table, name="p.parquet", lenient=True)
    assert log.plays_frame()["track_id"].tolist() == ["9007199254740993", "9007199254740992"]
    assert log.plays_frame()["user_id"].tolist() == ["7", "7"] and log.dropped == {"user_id: missing value": 1}


# --- 4: one session, one user ---------------------------------------------------------------------------------------

def test_a_session_shared_by_two_users_is_refused(tmp_path):
    err = generic_error(tmp_path, H + "alice,s1,0,a\nbob,s1,1,b\n")
    assert where(err) == ("p.csv", 2, 3, "session_id")
    assert "session 's1' belongs to user 'alice' (row 1) and to user 'bob' (row 2)" in str(err)
    log = generic(tmp_path, H + "alice,s1,0,a\nbob,s1,1,b\nbob,s2,0,a\n", lenient=True)
    assert log.num_plays == 2 and log.dropped == {"session_id: the session already belongs to another user": 1}


# --- 5, 16, 22, 24: the YAML mapping's values ------------------------------------------------------------------------

COLUMNS = "columns: {user_id: u, session_id: s, position: i, track_id: t, valence: mood}\n"


@pytest.mark.parametrize(
    "option, key, message",
    [
        ("scale: {valence: [-.inf, 1]}", "scale.valence", "two finite numbers with low < high"),
        ("scale: {valence: [-1, .nan]}", "scale.valence", "two finite numbers with low < high"),
        ("scale: {valence: [a, 1]}", "scale.valence", "got ['a', 1]"),
        ("scale: {valence: [true, 2]}", "scale.valence", "two finite numbers"),
        ("like_threshold: .nan", "like_threshold", "expected a finite number, got nan"),
        ("like_threshold: .inf", "like_threshold", "expected a finite number, got inf"),
        ("session_gap_minutes: .nan", "session_gap_minutes", "expected a finite number, got nan"),
        ("session_gap_minutes: -5", "session_gap_minutes", "must be positive"),
        ("columns: {user_id: u}", "columns", "given twice (again on line 3)"),
    ],
)
def test_yaml_option_values_are_checked(tmp_path, option, key, message):
    spec = "plays: p.csv\n" + COLUMNS + option + "\n"
    err = generic_error(tmp_path, "u,s,i,t,mood\nu1,s,0,a,-0.5\n", spec=spec)
    assert err.file == str(tmp_path / "m.yaml") and f"m.yaml: key '{key}': " in str(err) and message in str(err)


def test_session_gap_refuses_a_log_that_already_has_positions(tmp_path):
    spec = {"session_gap_minutes": 30}
    err = generic_error(tmp_path, "user_id,position,track_id,timestamp\nu,0,a,1\n", spec=spec)
    assert "key 'session_gap_minutes': the log already has position" in str(err)


# --- 6, 21: finite numbers, shown as written --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "column, value, message",
    [
        ("timestamp", "inf", "not a finite number; got 'inf'"),
        ("timestamp", "1e400", "not a finite number; got '1e400'"),
        ("rating_score", "-inf", "not a finite number; got '-inf'"),
        ("rating_score", "1e39", "too large to store (the limit is ±3.403e+38); got '1e39'"),
        ("propensity", "1e-50", "too small to store (below 1.175e-38, the smallest normal float32); got '1e-50'"),
        ("engagement", "True", "not a number; got 'True'"),
    ],
)
def test_numeric_columns_hold_finite_storable_numbers(tmp_path, column, value, message):
    err = generic_error(tmp_path, H.replace("\n", f",{column}\n") + f"u,s,0,a,{value}\n")
    assert where(err) == ("p.csv", 1, 2, column) and message in str(err)


def test_json_infinity_and_booleans_are_not_numbers(tmp_path):
    line = {"user_id": "u", "session_id": "s", "position": 0, "track_id": "a"}
    text = json.dumps(line)[:-1] + ', "engagement": Infinity}\n'
    err = generic_error(tmp_path, text, name="p.jsonl")
    assert where(err) == ("p.jsonl", 1, 1, "engagement") and "not a finite number; got 'Infinity'" in str(err)
    err = generic_error(tmp_path, json.dumps({**line, "valence": True}) + "\n", name="p.jsonl")
    assert where(err) == ("p.jsonl", 1, 1, "valence") and "not a number; got 'true'" in str(err)


def test_parquet_booleans_are_not_numbers(tmp_path):
    table = pa.table({"user_id": ["u"], "session_id": ["s"], "position": [0], "track_id": ["a"],
                      "engagement": [True]})
    err = generic_error(tmp_path, table, name="p.parquet")
    assert where(err) == ("p.parquet", 1, None, "engagement") and "not a number; got 'true'" in str(err)


def test_rating_takes_booleans_as_likes_in_every_format(tmp_path):
    csv_log = generic(tmp_path, H.replace("\n", ",rating\n") + "u,s,0,a,True\nu,s,1,b,false\n")
    assert csv_log.plays_frame()["rating"].tolist() == [1, 0]
    table = pa.table({"user_id": ["u"], "session_id": ["s"], "position": [0], "track_id": ["a"], "rating": [True]})
    assert generic(tmp_path, table, name="p.parquet").plays_frame()["rating"].tolist() == [1]


def test_catalogue_feature_beyond_double_is_refused_and_the_scaler_ignores_inf(tmp_path):
    write(tmp_path, "c.csv", "id,loudness\na,-1e400\n")
    err = generic_error(tmp_path, H + "u,s,0,a\n", spec={"catalogue": "c.csv", "catalogue_columns": {"track_id": "id"}})
    assert where(err) == ("c.csv", 1, 2, "loudness") and "not a finite number; got '-1e400'" in str(err)
    catalogue = pd.DataFrame({name: [0.0, 1.0, np.inf] for name in AudioFeatureScaler.__dataclass_fields__["names"]
                              .default})
    scaler = AudioFeatureScaler.fit(catalogue)
    assert np.isfinite(scaler.mean).all() and np.isfinite(scaler.transform(catalogue)).all()


# --- 9, 10: ids and labels normalised -------------------------------------------------------------------------------

def test_cohort_is_normalised_like_mode(tmp_path):
    plays = generic(tmp_path, H.replace("\n", ",mode,cohort\n") + "u,s,0,a, Calm , Clinical \n").plays_frame()
    assert plays[["mode", "cohort"]].values.tolist() == [["calm", "clinical"]]


MUSIC = (",item_id,general_genre,duration,valence,energy,danceability,tempo,acousticness,instrumentalness,speechiness,"
         "loudness\n0,1,pop,200000,0.5,0.5,0.5,120,0.1,0.0,0.1,-8\n1,2,rock,100000,0.2,0.9,0.4,140,0.1,0.0,0.1,-5\n")
STAGE1 = "user_id,item_id,timestamp,rating,duration,emo_valence,emo_arousal\n"
STAGE2 = ("inter_id,user_id,item_id,timestamp,rating,duration,rec_type,emo_pre_valence,emo_pre_arousal,"
          "emo_post_valence,emo_post_arousal\n")


def situnes_folder(folder, stage1="1,1,1000,4,100,0.5,0.5\n1,2,1060,2,50,-0.5,0\n",
                   stage2="1,1,2,90000,5,80,WD,0,0,0.5,0.5\n", env='{"1": {"time": 2}}', music=MUSIC):
    folder.mkdir(exist_ok=True)
    write(folder, "music_info.csv", music)
    write(folder, "stage1_interactions.csv", STAGE1 + stage1)
    write(folder, "stage2_interactions.csv", STAGE2 + stage2)
    write(folder, "stage2_env.json", env)
    return folder


def test_situnes_mini_folder_loads(tmp_path):
    log = load_log("situnes", situnes_folder(tmp_path / "s"), stages=(1, 2))
    plays = log.plays_frame()
    assert log.num_plays == 3 and set(plays["user_id"]) == {"u1"}
    assert plays["context"].tolist() == ["stage=1", "stage=1", "stage=2;time=2"]


def test_situnes_ids_that_differ_only_in_format_are_the_same(tmp_path):
    folder = situnes_folder(tmp_path / "s", stage1="1,1,1000,4,100,0.5,0.5\n1.0,02,1060,2,50,-0.5,0\n",
                            stage2="1.0,01,2.0,90000,5,80,WD,0,0,0.5,0.5\n")
    plays = load_log("situnes", folder, stages=(1, 2)).plays_frame()
    assert set(plays["user_id"]) == {"u1"} and plays["track_id"].tolist() == ["1", "2", "2"]
    assert plays["context"].tolist()[-1] == "stage=2;time=2"  # inter_id 1.0 is the env's "1"


@pytest.mark.parametrize(
    "changes, file, row, column, message",
    [
        ({"stage1": "1,1,1000,4.5,100,0.5,0.5\n"}, "stage1_interactions.csv", 1, "rating",
         "must be a whole number from 1 to 5 (5-point Likert); got '4.5'"),
        ({"stage1": "1,1,1000,4,inf,0.5,0.5\n"}, "stage1_interactions.csv", 1, "duration",
         "not a finite number; got 'inf'"),
        ({"music": MUSIC.replace("200000", "90000000")}, "music_info.csv", 1, "duration",
         "track length (ms) must be at most 86400000 (24 hours); got '90000000'"),
    ],
)
def test_situnes_bad_values_in_source_units(tmp_path, changes, file, row, column, message):
    err = error(load_log, "situnes", situnes_folder(tmp_path / "s", **changes), stages=(1, 2))
    assert where(err) == (file, row, row + 1, column) and message in str(err)


@pytest.mark.parametrize(
    "env, key, message",
    [
        ("[1, 2]", None, "expected a JSON object keyed by inter_id, got a list"),
        ('{"1": 3}', "1", "the entry of inter_id '1' must be an object"),
        ('{"1": {"time": [1]}}', "1", "the time slot of inter_id '1' must be a plain value"),
        ('{"1": ', None, "not valid UTF-8 JSON"),
    ],
)
def test_situnes_malformed_env_json_names_the_file_and_key(tmp_path, env, key, message):
    err = error(load_log, "situnes", situnes_folder(tmp_path / "s", env=env), stages=(1, 2))
    assert where(err) == ("stage2_env.json", None, None, key) and message in str(err)


# --- 11, 12: missing positions, dates far from today ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["NaN", "None", "null", "NA", ""])
def test_missing_position_is_a_missing_value_even_lenient(tmp_path, value):
    err = generic_error(tmp_path, H + f"u,s,0,a\nu,s,{value},b\n")
    assert where(err) == ("p.csv", 2, 3, "position") and "missing value" in str(err)
    log = generic(tmp_path, H + f"u,s,0,a\nu,s,{value},b\n", lenient=True)
    assert log.num_plays == 1 and log.dropped == {"position: missing value": 1}


def test_missing_position_in_json_lines_is_a_missing_value(tmp_path):
    text = '{"user_id": "u", "session_id": "s", "position": null, "track_id": "a"}\n'
    assert where(generic_error(tmp_path, text, name="p.jsonl")) == ("p.jsonl", 1, 1, "position")


def test_iso_dates_outside_the_nanosecond_range_are_read(tmp_path):
    text = H.replace("\n", ",timestamp\n") + "u,s,0,a,2300-01-01\nu,s,1,a,1677-01-01T00:00:00Z\nu,s,2,a,0001-01-01\n"
    stamps = generic(tmp_path, text).plays_frame()["timestamp"].tolist()
    assert stamps == [10413792000.0, -9246096000.0, -62135596800.0]


def test_an_iso_basic_date_is_a_number_of_seconds_as_documented(tmp_path):
    text = H.replace("\n", ",timestamp\n") + "u,s,0,a,20210701\nu,s,1,a,2021-07-01\n"
    assert generic(tmp_path, text).plays_frame()["timestamp"].tolist() == [20210701.0, 1625097600.0]


# --- 14: unreadable Parquet ------------------------------------------------------------------------------------------

def test_unreadable_parquet_names_the_file(tmp_path):
    table = pa.table({"user_id": ["u"], "session_id": ["s"], "position": [0], "track_id": ["a"]})
    pq.write_table(table, tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    for content in (data[: len(data) // 2], b"not parquet at all"):
        err = generic_error(tmp_path, content, name="p.parquet")
        assert where(err) == ("p.parquet", None, None, None) and "not a readable Parquet file" in str(err)
    err = generic_error(tmp_path, H + "u,s,0,a\n", spec={"format": "parquet"})
    assert where(err) == ("p.csv", None, None, None) and "not a readable Parquet file" in str(err)


# --- 15: lenient with every row bad -----------------------------------------------------------------------------------

def test_lenient_with_every_row_bad_names_the_file_and_the_reasons(tmp_path):
    spec = {"columns": {"user_id": "u", "track_id": "t", "timestamp": "ts"}, "session_gap_minutes": 30}
    err = generic_error(tmp_path, "u,t,ts\nx,a,bad\ny,b,worse\n", spec=spec, lenient=True)
    assert where(err) == ("p.csv", None, None, None)
    assert ("no plays left after validation (dropped rows by reason: ts: not Unix seconds or an ISO 8601 date-time: 2)"
            in str(err))
    err = generic_error(tmp_path, H + "u,s,0,a b\nu,s,x,c\n", lenient=True)
    assert where(err)[0] == "p.csv" and "position: not a number: 1" in str(err)
    assert "track_id: track is not in the catalogue: 1" in str(err)


def test_situnes_lenient_with_every_row_bad(tmp_path):
    folder = situnes_folder(tmp_path / "s", stage1="1,1,1000,9,100,0.5,0.5\n1,2,1060,0,50,-0.5,0\n")
    err = error(load_log, "situnes", folder, stages=(1,), lenient=True)
    assert where(err)[0] == "stage1_interactions.csv"
    assert "(dropped rows by reason: rating: must be a whole number from 1 to 5 (5-point Likert): 2)" in str(err)


# --- 18, 22: JSON Lines structure ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, row, column, message",
    [
        ('[{"user_id": "u", "session_id": "s", "position": 0, "track_id": "a"}]\n', 1, None,
         "each line must be a JSON object"),
        ('{"user_id": "u", "session_id": "s", "position": 0, "track_id": "a"}\n\n[1, 2]\n', 2, None,
         "each line must be a JSON object"),
        ('{"user_id": "u", "session_id": "s", "position": 0, "track_id": "a"}\n\n{"user_id": "u",\n', 2, None,
         "not valid JSON (Expecting property name enclosed in double quotes at character"),
        ('{"user_id": "u", "session_id": "s", "position": 0, "track_id": "a", "track_id": "b"}\n', 1, "track_id",
         "the key appears twice on this line"),
        ('{"user_id": "u", "session_id": "s", "position": 0, "track_id": ["a"]}\n', 1, "track_id",
         "a nested JSON list"),
    ],
)
def test_json_lines_problems_name_row_line_and_key(tmp_path, text, row, column, message):
    err = generic_error(tmp_path, text, name="p.json")
    line = {1: 1, 2: 3}[row]
    assert where(err) == ("p.json", row, line, column) and message in str(err)


# --- 19: no catalogue file --------------------------------------------------------------------------------------------

def test_without_a_catalogue_track_id_errors_name_the_plays_row(tmp_path):
    err = generic_error(tmp_path, "u,s,i,song\nu,s,0,a\nu,s,1,a b\n",
                        spec={"columns": {"user_id": "u", "session_id": "s", "position": "i", "track_id": "song"}})
    assert where(err) == ("p.csv", 2, 3, "song") and "track ids cannot contain whitespace" in str(err)


# --- 20: encodings ----------------------------------------------------------------------------------------------------

def test_encoding_error_points_at_the_undecodable_cell_not_an_earlier_replacement_character(tmp_path):
    content = (H + "u,s,0,x\ufffdy\n").encode("utf-8") + b"u,s,1,caf\xe9\n"
    err = generic_error(tmp_path, content, lenient=True)
    assert where(err) == ("p.csv", 2, 3, "track_id") and "not valid utf-8 text (byte 0xe9 at line 3)" in str(err)


def test_wrong_multibyte_encoding_is_an_error_not_a_crash(tmp_path):
    err = generic_error(tmp_path, H + "u,s,0,a\n", spec={"encoding": "utf-16-le"})
    assert where(err)[0] == "p.csv" and "not valid utf-16-le text" in str(err)
    err = generic_error(tmp_path, (H + "u,s,0,a\n").encode("utf-16"))
    assert "it starts like UTF-16 text" in str(err)
    str(err).encode("utf-8")  # printable: no lone surrogates in the message


# --- 25: saved logs of a newer schema ---------------------------------------------------------------------------------

def test_saved_log_of_a_newer_minor_schema_is_refused(tmp_path):
    log = generic(tmp_path, H + "u,s,0,a\n")
    save_log(log, tmp_path / "saved")
    assert load_saved_log(tmp_path / "saved").num_plays == 1
    table = pq.read_table(tmp_path / "saved" / "plays.parquet")
    newer = table.replace_schema_metadata({b"amrs_schema_version": b"1.7.0"})
    pq.write_table(newer, tmp_path / "saved" / "plays.parquet")
    err = error(load_saved_log, tmp_path / "saved")
    assert where(err)[0] == "plays.parquet" and "written with schema 1.7.0, this amrs_hf reads schema 1.0.0" in str(err)


# --- 24: MSSD whole numbers, and values shown as written --------------------------------------------------------------

MSSD_HEADER = ("session_id,session_position,track_id_clean,skip_1,skip_2,skip_3,not_skipped,date,hour_of_day,"
               "context_type,hist_user_behavior_is_shuffle\n")


@pytest.mark.parametrize(
    "row2, column, message",
    [
        ("s1,2,t2,False,False,False,True,15-07-18,12.5,radio,False", "hour_of_day",
         "must be a whole number from 0 to 23; got '12.5'"),
        ("s1,4294967297,t2,False,False,False,True,15-07-18,12,radio,False", "session_position",
         "must be a whole number from 1 to 2147483648; got '4294967297'"),
        ("s1 ,1,t2,False,False,False,True,15-07-18,12,radio,False", "session_position",
         "duplicate (session_id, session_position): another row has the same session and position; got '1'"),
        ("s1,2,t2,False,False,False,True,2300-01-01,12,radio,False", None, None),
    ],
)
def test_mssd_checks_in_its_own_units(tmp_path, row2, column, message):
    write(tmp_path, "log.csv", MSSD_HEADER + "s1,1,t1,False,False,False,True,15-07-18,12,radio,False\n" + row2 + "\n")
    if column is None:
        assert load_log("mssd", tmp_path / "log.csv").plays_frame()["timestamp"].iloc[1] == 10413792000.0 + 12 * 3600
        return
    err = error(load_log, "mssd", tmp_path / "log.csv")
    assert where(err) == ("log.csv", 2, 3, column) and message in str(err)


# --- 26, 27: splits and the tokenizer -------------------------------------------------------------------------------

def timed_log(tmp_path):
    text = H.replace("\n", ",timestamp\n") + "".join(f"u{i},s{i},0,a,{i}\n" for i in range(10))
    return generic(tmp_path, text)


def test_temporal_split_refuses_non_finite_cutoffs(tmp_path):
    log = timed_log(tmp_path)
    for cutoffs in ((math.nan, math.nan), (5, math.nan), (-math.inf, 5), (6, 5)):
        with pytest.raises(ValueError, match="cutoffs must be"):
            temporal_split(log, cutoffs=cutoffs)


@pytest.mark.parametrize("fractions, sizes", [((1, 0, 0), (10, 0, 0)), ((0.9, 0.1, 0), (8, 2, 0)),
                                               ((0.5, 0, 0.5), (4, 0, 6)), ((0, 0, 1), (0, 0, 10))])
def test_temporal_split_part_with_fraction_zero_is_empty(tmp_path, fractions, sizes):
    parts = temporal_split(timed_log(tmp_path), fractions=fractions)
    assert tuple(parts[name].num_plays for name in ("train", "valid", "test")) == sizes


def test_tokenizer_refuses_repeated_modes_and_non_string_ids():
    with pytest.raises(ValueError, match=r"cohorts must be unique; repeated: \['clinical'\]"):
        build_track_tokenizer(["a"], cohorts=("clinical", "clinical"))
    with pytest.raises(ValueError, match="modes must be unique"):
        build_track_tokenizer(["a"], modes=("calm", "calm", "focus"))
    with pytest.raises(TypeError, match=r"track ids must be strings \(e\.g\. str\(7\), not 7\); offending: \[7, 8\]"):
        build_track_tokenizer([7, 8])
    vocab = build_track_tokenizer(["a"]).get_vocab()
    assert sorted(vocab.values()) == list(range(len(vocab)))
