"""The `amrs` command as a user runs it: `amrs data describe|generate|calibrate`."""

import json
import pathlib
import subprocess
import sys

import pytest


from amrs_hf.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_situnes_json(capsys, situnes_dir):
    code, out, _ = run_cli(capsys, "data", "describe", "--source", "situnes", "--path", str(situnes_dir), "--json")
    summary = json.loads(out)
    assert code == 0
    assert (summary["plays"], summary["users"], summary["tracks"]) == (2006, 30, 307)
    assert set(summary) >= {"plays", "users", "sessions", "tracks", "coverage"}
    assert summary["coverage"]["valence"] == summary["coverage"]["arousal"] == 1.0


def test_describe_mssd_table(capsys, mssd_dir):
    code, out, _ = run_cli(capsys, "data", "describe", "--source", "mssd", "--path", str(mssd_dir))
    assert code == 0
    assert "plays             201" in out and "sessions          11" in out


def test_generate_is_deterministic_and_describable(capsys, tmp_path):
    for name in ("a", "b"):
        code, out, _ = run_cli(capsys, "data", "generate", "--output", str(tmp_path / name), "--plays", "3000",
                               "--seed", "5")
        assert code == 0 and "wrote 3,000 plays" in out
    for file in ("plays.parquet", "catalogue.parquet"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    code, out, _ = run_cli(capsys, "data", "generate", "--output", str(tmp_path / "c"), "--plays", "3000",
                           "--seed", "6")
    assert (tmp_path / "a" / "plays.parquet").read_bytes() != (tmp_path / "c" / "plays.parquet").read_bytes()
    code, out, _ = run_cli(capsys, "data", "describe", "--source", "synthetic", "--path", str(tmp_path / "a"), "--json")
    assert json.loads(out)["plays"] == 3000


def test_bad_file_gives_one_line_error_and_exit_code(capsys, tmp_path):
    (tmp_path / "plays.csv").write_text("user_id,session_id,position,track_id,valence\nu1,s1,0,t1,7\n")
    (tmp_path / "map.yaml").write_text("plays: plays.csv\n")
    code, _, err = run_cli(capsys, "data", "describe", "--source", "generic", "--path", str(tmp_path / "map.yaml"))
    assert code == 1
    assert "plays.csv, row 1, column 'valence': out of range" in err


def test_unknown_command_and_help(capsys):
    assert run_cli(capsys, "frobnicate")[0] == 2
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "data" in out


def test_console_script_is_installed():
    amrs = pathlib.Path(sys.executable).parent / "amrs"
    result = subprocess.run([str(amrs), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("amrs_hf ")


def test_bad_input_is_one_line_on_the_command_line(tmp_path):
    """From the console: the message, exit status 2, no traceback; from Python the error propagates."""
    amrs = pathlib.Path(sys.executable).parent / "amrs"
    missing = tmp_path / "no_policy_here"
    result = subprocess.run([str(amrs), "dpo", "--policy_path", str(missing), "--preferences_path", str(tmp_path),
                             "--output_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"amrs dpo: error: policy_path '{missing}' is not a saved policy" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was written
    with pytest.raises(FileNotFoundError, match="is not a saved policy"):
        main(["dpo", "--policy_path", str(missing), "--preferences_path", str(tmp_path)])



@pytest.mark.parametrize("args, message", [
    (["--data_source", "synthetic", "--data_options", '{"bogus": 1}'], "data source 'synthetic' has no option 'bogus'"),
    (["--config", "BAD_YAML"], "amrs train-world-model: error: "),
])
def test_bad_options_and_configs_are_one_line(tmp_path, args, message):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("output_dir: x\n  bad: [\n")
    args = [str(bad_yaml) if a == "BAD_YAML" else a for a in args]
    amrs = pathlib.Path(sys.executable).parent / "amrs"
    result = subprocess.run([str(amrs), "train-world-model", *args, "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
