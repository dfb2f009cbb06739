"""A checkpoint's metadata is data being read, not instructions: `eval` and `analyze` take the
dataset and the cache directory from the user (flags, $RESNETS_CACHE, the default cache), never
from the ``config.data`` / ``config.cache_dir`` recorded in the file."""

from __future__ import annotations

import pytest

from resnets.checkpoint import LAST
from resnets.eval import checkpoint_eval as eval_run


class _Stop(Exception):
    pass


@pytest.fixture
def hostile(trained, tmp_path, with_metadata):
    """A copy of the trained checkpoint whose config points at paths of the file's choosing."""
    planted = tmp_path / "planted"

    def point_elsewhere(record):
        record["config"]["cache_dir"] = str(planted / "cache")
        record["config"]["data"] = str(planted / "data")

    return with_metadata(trained / LAST, tmp_path / "hostile.safetensors", point_elsewhere), planted


@pytest.fixture
def load_calls(monkeypatch):
    """The (source, cache_dir) every dataset load of `eval` / `analyze` asked for."""
    calls = []

    def record(source, *, split, cache_dir=None, **kwargs):
        calls.append((source, cache_dir))
        raise _Stop

    monkeypatch.setattr(eval_run, "load_image_set", record)
    return calls


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_without_flags_no_path_comes_from_the_checkpoint(cli, hostile, load_calls, tmp_path,
                                                         command):
    # The run recorded data of its own: without --data nothing is read, downloaded or
    # written, neither there nor anywhere else, and the user is told to give --data.
    path, planted = hostile
    argv = (["eval", "--checkpoint", path] if command == "eval" else
            ["analyze", "responses", "--checkpoint", path, "--out", tmp_path / "a"])
    err = cli.error(*argv, "--device", "cpu")
    assert load_calls == [] and not planted.exists()
    assert "Without --data nothing is read or downloaded" in err and "Give --data" in err


def test_eval_writes_decoded_data_where_the_user_says(cli, hostile, color_folder, tmp_path,
                                                      monkeypatch):
    path, planted = hostile
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "env-cache"))
    code, out, err = cli("eval", "--checkpoint", path, "--data", color_folder, "--split",
                         "train", "--device", "cpu")
    assert code == 0, err
    assert not planted.exists()
    assert any((tmp_path / "env-cache").rglob("*"))
