"""The README's Python examples run as written (with a tiny trained model standing in for the output folder)."""

import pathlib
import re

from amrs_hf.cli import main as amrs

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_data_example_runs(situnes_dir):
    block = next(b for b in python_blocks() if "load_log(\"situnes\"" in b)
    namespace = {}
    exec(block.replace("../shared/data/situnes", str(situnes_dir)), namespace)
    assert namespace["log"].num_plays == 2006 and len(namespace["splits"]) == 10


def test_world_model_example_runs(tmp_path):
    out = tmp_path / "world_model"
    assert amrs(["train-world-model", "--data_source", "synthetic", "--data_options", '{"num_plays": 1500}',
                 "--num_train_epochs", "1", "--output_dir", str(out), "--hidden_size", "16",
                 "--num_attention_heads", "2", "--intermediate_size", "32", "--max_history", "16",
                 "--disable_tqdm", "true", "--report_to", "none"]) == 0
    block = next(b for b in python_blocks() if "simulate(" in b)
    assert 'path = "outputs/world_model"' in block
    namespace = {}
    exec(block.replace('path = "outputs/world_model"', f'path = "{out}"'), namespace)
    assert tuple(namespace["scores"].valence_mean.shape) == (4, 1000)
    assert tuple(namespace["rollouts"].tracks.shape) == (32, 10)
