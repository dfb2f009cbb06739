"""Input that used to end in a traceback, a crash midway or invalid output, and now gets one
clear line (exit 2) naming the input and the fix: unreadable paths, file names that are not
UTF-8, `eval --json` with empty classes, `analyze` / `export` inputs and outputs, timm
configs. Programming errors keep their traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from resnets.checkpoint import LAST
from resnets.cli import main

NOT_UTF8 = os.fsdecode(b"\xff")  # a byte no UTF-8 text holds, as Python decodes a file name


def strict_json(line: str):
    """Parse ``line`` as RFC 8259 JSON: no NaN / Infinity, no lone surrogates."""
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant} in {line[:200]}")

    value = json.loads(line, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


# --------------------------------------------------------------------------------------------
# 1. Unreadable inputs: one line, never a traceback; programming errors keep theirs


def test_unreadable_checkpoint_chmod(cli, trained, tmp_path, permissions_bind):
    path = Path(shutil.copy(trained / LAST, tmp_path / "ckpt.safetensors"))
    path.chmod(0)
    with permissions_bind():  # root too: a real EACCES from the OS
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


@pytest.mark.parametrize("error, where", [
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "file/cache/decoded"),
     "a file where a folder was expected (a part of the path is a file), {tmp}/file/cache/"
     "decoded (in --cache-dir file/cache): check the path."),
    (PermissionError(errno.EACCES, "Permission denied", "data/c3"),
     "permission denied, {tmp}/data/c3 (in --data data): give yourself access"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "data"),
     "a folder where a file was expected, {tmp}/data (--data): give the file itself."),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "data/c3/0.png"),
     "no such file or folder, {tmp}/data/c3/0.png (in --data data): check the path."),
])
def test_os_error_on_a_path_the_user_gave(cli, trained, tmp_path, monkeypatch, error, where):
    """The safety net for readers that do not check their input: an OS error on or below a
    path of the command line (relative paths included) names the path and the option."""
    from resnets.eval import checkpoint_eval as eval_run

    def fail(*args, **kwargs):
        raise error

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(eval_run, "evaluate_checkpoint", fail)
    message = cli.error("eval", "--checkpoint", trained / LAST, "--data", "data",
                        "--cache-dir", "file/cache", "--device", "cpu")
    assert where.format(tmp=tmp_path) in message


def test_out_below_a_file(cli, trained, color_folder, tmp_path):
    (tmp_path / "file").write_text("a regular file")
    message = cli.error("analyze", "responses", "--checkpoint", trained / LAST, "--data",
                        color_folder, "--split", "train", "--cache-dir", tmp_path / "cache",
                        "--out", tmp_path / "file" / "fig7", "--device", "cpu")
    assert f"--out {tmp_path / 'file' / 'fig7'}: {tmp_path / 'file'} is a file" in message


@pytest.mark.parametrize("error", [
    KeyError("model"), AttributeError("'list' object has no attribute 'get'"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent/internal.json"),
    PermissionError(errno.EACCES, "Permission denied", "/root/.somewhere/else"),
    UnicodeEncodeError("ascii", "caf\u00e9", 3, 4, "ordinal not in range(128)"),
])
def test_programming_errors_keep_their_traceback(cli, trained, monkeypatch, error):
    """The boundary catches input errors only: an OS error on a path the user never gave, or
    any other exception, propagates with its traceback."""
    from resnets.eval import checkpoint_eval as eval_run

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", broken)
    with pytest.raises(type(error)):
        cli("eval", "--checkpoint", trained / LAST, "--device", "cpu")


def test_text_file_that_is_not_utf8_is_one_line(cli, trained, monkeypatch):
    """A reader that decodes a user's file as UTF-8 without naming it: the safety net says
    what the bytes were and how to fix the file."""
    from resnets.eval import checkpoint_eval as eval_run

    def read_classes(*args, **kwargs):
        b"cat\ndog\nm\xf6we\n".decode("utf-8")

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", read_classes)
    message = cli.error("eval", "--checkpoint", trained / LAST, "--device", "cpu")
    assert "a file given to this command is not UTF-8 text, invalid start byte at byte 9 " \
           "('cat\\ndog\\nm\\xf6we\\n'): save it as UTF-8." in message


# --------------------------------------------------------------------------------------------
# 2. File names that are not UTF-8


def test_train_into_a_non_utf8_out_stops_before_training(cli, tiny_train_args, tmp_path):
    out = tmp_path / f"run-{NOT_UTF8}"
    message = cli.error(*tiny_train_args(out))
    assert f"--out {tmp_path}/run-\\xff is not a UTF-8 path" in message
    assert "choose another --out" in message
    assert not out.exists()


def test_an_error_naming_a_non_utf8_path_is_printed(cli, tmp_path):
    """A UserError whose message holds such a path: printing it must not raise again."""
    missing = tmp_path / f"ckpt-{NOT_UTF8}.safetensors"
    message = cli.error("eval", "--checkpoint", missing, "--device", "cpu")
    assert f"{tmp_path}/ckpt-\\xff.safetensors" in message


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
    from resnets.eval import checkpoint_eval as eval_run

    def print_name(*args, **kwargs):
        f"class c{NOT_UTF8}".encode()

    monkeypatch.setattr(eval_run, "evaluate_checkpoint", print_name)
    message = cli.error("eval", "--checkpoint", trained / LAST, "--device", "cpu")
    assert "a file, folder or class name is not UTF-8, 'class c\\xff'" in message


def test_analyze_into_a_non_utf8_out(cli, trained, color_folder, tmp_path):
    """Results written to a folder whose name is not UTF-8 are reported, escaped."""
    out = tmp_path / f"fig7-{NOT_UTF8}"
    code, stdout, err = cli(*analyze_args(trained / LAST, out, color_folder))
    assert code == 0, err
    assert f"wrote {tmp_path}/fig7-\\xff/responses.json and " in stdout
    assert (out / "responses.json").is_file()


def test_export_into_a_non_utf8_out(cli, trained, tmp_path):
    """torch's exporters take UTF-8 paths only: refused before anything is loaded."""
    out = tmp_path / f"r8-{NOT_UTF8}.pt"
    message = cli.error("export", "--checkpoint", trained / LAST, "--format", "torchscript",
                        "--out", out)
    assert f"--out {tmp_path}/r8-\\xff.pt is not a UTF-8 path" in message
    assert not out.exists()


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


# --------------------------------------------------------------------------------------------
# 4. analyze / export


@pytest.fixture(scope="module")
def unit_runs(tiny_train_args, tmp_path_factory):
    """``unit -> run directory`` of 2-iteration resnet8 runs whose units have no BN right after
    a 3x3 conv."""
    runs = {}
    for unit in ("full_preact", "bn_after_add"):
        out = tmp_path_factory.mktemp(unit) / "run"
        assert main(tiny_train_args(out, "--unit", unit)) == 0
        runs[unit] = out
    return runs


def analyze_args(checkpoint, out, data, *extra):
    return ["analyze", "responses", "--checkpoint", checkpoint, "--data", data, "--split",
            "train", "--device", "cpu", "--cache-dir", out.parent / "cache", "--out", out,
            *extra]


def test_analyze_batch_size_zero(cli, trained, color_folder, tmp_path):
    message = cli.error(*analyze_args(trained / LAST, tmp_path / "fig7", color_folder,
                                      "--batch-size", "0"))
    assert "--batch-size must be >= 1, got 0" in message
    assert not (tmp_path / "fig7").exists()


@pytest.mark.parametrize("unit", ["full_preact", "bn_after_add"])
def test_analyze_a_net_without_fig7_responses(cli, trained, unit_runs, color_folder, tmp_path,
                                              unit):
    checkpoint = unit_runs[unit] / LAST
    message = cli.error(*analyze_args(trained / LAST, tmp_path / "fig7", color_folder,
                                      "--checkpoint", checkpoint))
    assert f"--checkpoint {checkpoint} holds resnet8: its units ({unit}) have no 3x3 layer " \
           f"with BN right after the conv" in message
    assert "Fig. 7's responses (after BN, before ReLU / addition) are undefined" in message
    assert "original, relu_before_add or relu_preact units" in message
    assert not (tmp_path / "fig7").exists()  # refused before anything was written


def test_analyze_refuses_earlier_results_without_overwrite(cli, trained, color_folder,
                                                          tmp_path):
    out = tmp_path / "fig7"
    code, _, err = cli(*analyze_args(trained / LAST, out, color_folder))
    assert code == 0, err
    before = (out / "responses.json").read_bytes()
    message = cli.error(*analyze_args(trained / LAST, out, color_folder))
    assert f"--out {out} already holds responses.json and responses.png" in message
    assert "Pass --overwrite to replace them, or choose another --out" in message
    assert (out / "responses.json").read_bytes() == before
    code, _, err = cli(*analyze_args(trained / LAST, out, color_folder, "--overwrite"))
    assert code == 0, err
    assert json.loads((out / "responses.json").read_text())["results"][0]["model"] == "resnet8"


def test_analyze_out_is_a_file(cli, trained, color_folder, tmp_path):
    (tmp_path / "fig7").write_text("a file")
    message = cli.error(*analyze_args(trained / LAST, tmp_path / "fig7", color_folder))
    assert f"--out {tmp_path / 'fig7'}: {tmp_path / 'fig7'} is a file, not a folder" in message


def test_export_refuses_an_existing_file_without_overwrite(cli, trained, tmp_path):
    out = tmp_path / "r8.pt"
    out.write_bytes(b"an earlier export")
    argv = ["export", "--checkpoint", trained / LAST, "--format", "torchscript", "--out", out]
    message = cli.error(*argv)
    assert f"--out {out} already exists. Pass --overwrite to replace it" in message
    assert out.read_bytes() == b"an earlier export"
    code, stdout, err = cli(*argv, "--overwrite")
    assert code == 0, err
    assert f"wrote {out} (torchscript)" in stdout and out.read_bytes() != b"an earlier export"


def test_export_out_is_a_folder(cli, trained, tmp_path):
    message = cli.error("export", "--checkpoint", trained / LAST, "--format", "torchscript",
                        "--out", tmp_path, "--overwrite")
    assert f"--out {tmp_path} is a folder; give the file to write" in message


# --------------------------------------------------------------------------------------------
# 5. timm's config.json


BAD_TIMM_CONFIGS = [
    ({"pretrained_cfg": {"crop_pct": 0}}, "pretrained_cfg.crop_pct must be a number in (0, 1]",
     "got 0."),
    ({"pretrained_cfg": {"crop_pct": "0.9"}}, "pretrained_cfg.crop_pct must be", 'got "0.9".'),
    ({"pretrained_cfg": "resnet50.a1_in1k"}, "pretrained_cfg must be an object",
     'got "resnet50.a1_in1k".'),
    ({"pretrained_cfg": {"input_size": [3, 224]}}, "pretrained_cfg.input_size must be [3, H, W]",
     "got [3, 224]."),
    ({"pretrained_cfg": {"std": [0, 0.2, 0.2]}}, "pretrained_cfg.std must be 3 positive",
     "got [0, 0.2, 0.2]."),
    ({"pretrained_cfg": {"interpolation": "lanczos"}},
     "pretrained_cfg.interpolation must be one of bilinear, bicubic, nearest", 'got "lanczos".'),
    ({"label_names": "tench"}, "label_names must be a list of class names", 'got "tench".'),
]


@pytest.mark.parametrize("config, field, got", BAD_TIMM_CONFIGS,
                         ids=[json.dumps(c)[:40] for c, _, _ in BAD_TIMM_CONFIGS])
def test_bad_timm_config(cli, tmp_path, config, field, got):
    from safetensors.torch import save_file

    # The config is checked before the tensors are: one tensor stands for the weights.
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    message = cli.error("import", "--from", "timm", "--weights", tmp_path / "model.safetensors",
                        "--out", tmp_path / "r50.safetensors")
    assert f"{tmp_path / 'config.json'} (timm's model config beside the weights): {field}" \
        in message
    assert f"{got} Correct the field, or delete it to get timm's default." in message
    assert not (tmp_path / "r50.safetensors").exists()
