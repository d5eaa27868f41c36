"""ModelArts jobs with a stand-in `moxing` that copies between local folders."""
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_image_folder, run_job

from shufflenet.engine.config import Config
from shufflenet.engine.modelarts import DONE, modelarts_session, sync_inputs, wait_for_marker


def test_job_trains_on_the_cache_and_uploads_its_outputs(moxing_path, tmp_path):
    data = make_image_folder(tmp_path / "obs_data", train=6, val=2)
    result = run_job(moxing_path, data, tmp_path / "obs_out", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    [inputs] = (tmp_path / "cache").glob("inputs-*")  # this job's own folder
    assert (inputs / "data" / "train" / "cat").is_dir()
    for name in ("final.ckpt", "best.ckpt", "train.log", "config.yaml", "metrics.csv"):
        assert (tmp_path / "obs_out" / name).is_file(), name


def test_a_failed_job_still_uploads_its_logs(moxing_path, tmp_path):
    data = make_image_folder(tmp_path / "obs_data", train=6, val=2)
    (data / "train" / "cat" / "broken.jpg").write_text("not an image")
    result = run_job(moxing_path, data, tmp_path / "obs_out", tmp_path / "cache")
    assert result.returncode == 1
    assert "broken.jpg cannot be decoded" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "obs_out" / "config.yaml").is_file()
    assert (tmp_path / "obs_out" / "train.log").is_file()


def test_without_moxing_the_job_explains_itself(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moxing", None)  # import moxing raises ImportError
    config = Config(enable_modelarts=True, data_url="obs://bucket/data", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs the moxing package"):
        with modelarts_session(config, 0, 0):
            pass


def test_other_ranks_wait_for_the_copier_with_a_time_out(tmp_path):
    token = "node:1234"
    tmp_path = tmp_path / "job"
    tmp_path.mkdir()
    with pytest.raises(ValueError, match="waited 0 s for the inputs"):
        wait_for_marker(tmp_path, token, timeout=0.3, poll=0.05)
    (tmp_path / DONE).write_text("node:999")  # left by an earlier job
    with pytest.raises(ValueError, match="waited"):
        wait_for_marker(tmp_path, token, timeout=0.3, poll=0.05)

    def copy(url, local):
        time.sleep(0.3)
        Path(local).mkdir()

    copier = threading.Thread(target=sync_inputs,
                              args=(copy, {"data": "obs://x"}, tmp_path, True, 10, token))
    copier.start()
    sync_inputs(copy, {"data": "obs://x"}, tmp_path, False, 10, token)  # waits, then returns
    copier.join()
    assert (tmp_path / "data").is_dir()
    wait_for_marker(tmp_path, token, timeout=0.3, poll=0.05)  # a late rank passes at once


def test_a_failed_copy_is_reported_to_the_waiting_ranks(tmp_path):
    def broken(url, local):
        raise OSError("OBS unreachable")

    with pytest.raises(OSError, match="OBS unreachable"):
        sync_inputs(broken, {"data": "obs://x"}, tmp_path / "job", True, 10, "node:1")
    with pytest.raises(ValueError, match="copying the inputs .* failed"):
        wait_for_marker(tmp_path / "job", "node:1", timeout=5, poll=0.05)
