"""Input that used to end in a traceback, a crash midway or invalid output, and now gets one
clear line (exit 2) naming the input and the fix: unreadable paths, file names that are not
UTF-8, `eval --json` with empty classes, `analyze` / `export` inputs and outputs, timm
configs. Programming errors keep their traceback."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.train.checkpoint import LAST

NOT_UTF8 = os.fsdecode(b"\xff")  # a byte no UTF-8 text holds, as Python decodes a file name


def strict_json(line: str):
    """Parse ``line`` as RFC 8259 JSON: no NaN / Infinity, no lone surrogates."""
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant} in {line[:200]}")

    value = json.loads(line, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


@pytest.fixture
def deny(monkeypatch):
    """``deny(path)``: opening or listing ``path`` or anything below it raises PermissionError,
    as after ``chmod 000`` for a user who is not root (root reads anything, and these tests
    may run as root)."""
    denied: list[str] = []

    def check(path) -> None:
        if isinstance(path, int):
            return  # a file descriptor: already open
        full = os.path.abspath(os.fsdecode(path))
        if any(full == d or full.startswith(d + os.sep) for d in denied):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), full)

    def wrap(real):
        def guarded(path=".", *args, **kwargs):
            check(path)
            return real(path, *args, **kwargs)
        return guarded

    for module, name in [(io, "open"), (__import__("builtins"), "open"), (os, "open"),
                         (os, "scandir"), (os, "listdir")]:
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))
    return lambda path: denied.append(os.path.abspath(path))


# --------------------------------------------------------------------------------------------
# 1. Unreadable inputs: one line, never a traceback; programming errors keep theirs


def test_unreadable_checkpoint_chmod(cli, trained, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file; test_unreadable_checkpoint covers it")
    path = Path(shutil.copy(trained / LAST, tmp_path / "ckpt.safetensors"))
    path.chmod(0)
    message = cli.error("eval", "--checkpoint", path, "--device", "cpu")
    assert f"permission denied, {path} (--checkpoint)" in message


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_unreadable_checkpoint(cli, trained, color_folder, tmp_path, deny, command):
    path = Path(shutil.copy(trained / LAST, tmp_path / "ckpt.safetensors"))
    deny(path)
    argv = {"eval": ["eval", "--checkpoint", path, "--device", "cpu"],
            "predict": ["predict", "--checkpoint", path, "--device", "cpu", color_folder],
            "export": ["export", "--checkpoint", path, "--format", "torchscript", "--out",
                       tmp_path / "r8.pt"]}[command]
    message = cli.error(*argv)
    assert f"permission denied, {path} (--checkpoint): give yourself access" in message


def test_unreadable_data_folder(cli, trained, color_folder, tmp_path, deny):
    data = shutil.copytree(color_folder, tmp_path / "data")
    deny(data / "c3")
    message = cli.error("eval", "--checkpoint", trained / LAST, "--data", data, "--split",
                        "train", "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert str(data / "c3") in message
    assert "permission denied" in message or "Permission denied" in message


def test_unreadable_data_file(cli, trained, color_folder, tmp_path, deny):
    data = shutil.copytree(color_folder, tmp_path / "data")
    deny(data / "c3" / "0.png")
    message = cli.error("eval", "--checkpoint", trained / LAST, "--data", data, "--split",
                        "train", "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert str(data / "c3" / "0.png") in message and "Permission denied" in message


def test_out_below_a_file(cli, trained, tmp_path):
    (tmp_path / "file").write_text("a regular file")
    message = cli.error("analyze", "responses", "--checkpoint", trained / LAST, "--out",
                        tmp_path / "file" / "fig7", "--device", "cpu")
    assert f"{tmp_path / 'file'}" in message and "--out" in message


@pytest.mark.parametrize("error", [
    KeyError("model"), AttributeError("'list' object has no attribute 'get'"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent/internal.json"),
    PermissionError(errno.EACCES, "Permission denied", "/root/.somewhere/else"),
    UnicodeEncodeError("ascii", "caf\u00e9", 3, 4, "ordinal not in range(128)"),
])
def test_programming_errors_keep_their_traceback(cli, trained, monkeypatch, error):
    """The boundary catches input errors only: an OS error on a path the user never gave, or
    any other exception, propagates with its traceback."""
    from resnets.eval import run as eval_run

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", broken)
    with pytest.raises(type(error)):
        cli("eval", "--checkpoint", trained / LAST, "--device", "cpu")


# --------------------------------------------------------------------------------------------
# 2. File names that are not UTF-8


def test_train_into_a_non_utf8_out_stops_before_training(cli, tiny_train_args, tmp_path):
    out = tmp_path / f"run-{NOT_UTF8}"
    message = cli.error(*tiny_train_args(out))
    assert f"--out {tmp_path}/run-\\xff is not a UTF-8 path" in message
    assert "choose another --out" in message
    assert not out.exists()


@pytest.fixture
def odd_names(color_folder, tmp_path):
    """A folder of four images, one of them named with a byte that is not UTF-8."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["a.png", f"b-{NOT_UTF8}.png", "c.png", "d.png"]):
        shutil.copy(color_folder / f"c{i}" / "0.png", folder / name)
    return folder


def test_predict_with_a_non_utf8_file_name(cli, trained, odd_names):
    code, out, err = cli("predict", "--checkpoint", trained / LAST, "--device", "cpu",
                         "--batch-size", "2", "--json", odd_names)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith(f"{odd_names}/b-\\xff.png: c")  # escaped, in its place
    assert lines[4] == "4 images: 4 ok, 0 failed"
    record = strict_json(lines[5])
    assert [Path(p["path"]).name for p in record["predictions"]] == [
        "a.png", "b-\\xff.png", "c.png", "d.png"]


def test_predict_with_non_utf8_class_names(cli, trained, odd_names, tmp_path, with_metadata):
    def rename(record):
        record["classes"] = [f"{name}-{NOT_UTF8}" for name in record["classes"]]

    ckpt = with_metadata(trained / LAST, tmp_path / "odd.safetensors", rename)
    code, out, err = cli("predict", "--checkpoint", ckpt, "--device", "cpu", "--json",
                         "--topk", "2", odd_names)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and lines[4] == "4 images: 4 ok, 0 failed"
    assert lines[0].startswith(f"{odd_names}/a.png: c") and "-\\xff 0." in lines[0]
    record = strict_json(lines[5])
    assert all(t["class"].endswith("-\\xff") for p in record["predictions"] for t in p["topk"])


def test_predict_failure_with_a_non_utf8_name(cli, trained, tmp_path):
    bad = tmp_path / f"broken-{NOT_UTF8}.png"
    bad.write_bytes(b"not an image")
    code, out, err = cli("predict", "--checkpoint", trained / LAST, "--device", "cpu",
                         "--json", bad)
    assert code == 1
    assert err.startswith(f"{tmp_path}/broken-\\xff.png: error: ")
    assert strict_json(out.splitlines()[-1])["failed"][0]["path"].endswith("broken-\\xff.png")


def test_encoding_error_of_a_name_is_one_line(cli, trained, monkeypatch):
    """Any output that meets a name with undecodable bytes: the safety net names it."""
    from resnets.eval import run as eval_run

    def print_name(*args, **kwargs):
        f"class c{NOT_UTF8}".encode()

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", print_name)
    message = cli.error("eval", "--checkpoint", trained / LAST, "--device", "cpu")
    assert "a file, folder or class name is not UTF-8, 'class c\\\\xff'" in message


# --------------------------------------------------------------------------------------------
# 3. eval: standard JSON, and no flag eval lacks


@pytest.fixture(scope="module")
def small_val(tiny_train_args, tmp_path_factory):
    """A 2-iteration run that held out 5 images: most classes have no val sample."""
    out = tmp_path_factory.mktemp("small-val") / "run"
    assert main(tiny_train_args(out, "--val-split", "5")) == 0
    return out


@pytest.mark.parametrize("members", [1, 2])
def test_eval_json_is_standard_when_a_class_has_no_samples(cli, small_val, color_folder,
                                                           tmp_path, members):
    code, out, err = cli("eval", *["--checkpoint", small_val / LAST] * members, "--data",
                         color_folder, "--cache-dir", tmp_path, "--split", "val", "--device",
                         "cpu", "--json")
    assert code == 0, err
    res = strict_json(out.splitlines()[-1])
    assert res["n"] == 5
    scores = res["ensemble"] if members > 1 else res
    seen = [sum(row) > 0 for row in scores["confusion"]] if members == 1 else None
    accuracy = scores["per_class_accuracy"]
    assert accuracy.count(None) >= 5  # 5 images cannot cover 10 classes
    if seen is not None:
        assert [a is not None for a in accuracy] == seen
    assert "- (no samples)" in out and "nan" not in out


def test_eval_bad_image_suggests_no_flag_eval_lacks(cli, trained, color_folder, tmp_path):
    data = shutil.copytree(color_folder, tmp_path / "data")
    (data / "c2" / "5.png").write_bytes(b"not a png")
    message = cli.error("eval", "--checkpoint", trained / LAST, "--data", data, "--split",
                        "train", "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert str(data / "c2" / "5.png") in message and "Delete or replace them" in message
    assert "or pass --skip-bad-images" not in message
    assert "(`resnets train` only) pass --skip-bad-images" in message
