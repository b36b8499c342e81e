import os
import pathlib

import pytest
import torch

# Tests build tiny models: one intra-op thread is fastest, and on a small shared machine more threads thrash
# (a training test took 100 s with torch's default threads against 5 s with one). Subprocesses inherit the setting.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("AMRS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _data_dir(name: str) -> pathlib.Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data beside the checkout; "
                    "set AMRS_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture
def situnes_dir() -> pathlib.Path:
    """The real SiTunes logs; the test skips with the reason when the folder is absent."""
    return _data_dir("situnes")


@pytest.fixture
def mssd_dir() -> pathlib.Path:
    """The real Spotify MSSD sample; the test skips with the reason when the folder is absent."""
    return _data_dir("mssd_samples")
