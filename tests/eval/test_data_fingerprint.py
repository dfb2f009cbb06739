"""A run's split is only re-created on the run's own images: every run records a fingerprint of
its data, and `resnets eval`, `analyze`, ensembles and `check` compare the data they are given
with it (issue 22)."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from resnets.checkpoint import read_checkpoint, save_checkpoint
from resnets.checkpoint.files import build_model
from resnets.cli import main
from resnets.config import resolve_config
from resnets.data import data_fingerprint, load_image_set
from resnets.errors import CheckpointError, DataError
from resnets.eval.checkpoint_eval import evaluate_checkpoint
from resnets.eval.ensemble import evaluate_ensemble
from resnets.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

N_IMAGES, N_VAL = 240, 40  # the colour folder of tests/conftest.py; the run's held-out split


def other_colours(root):
    """Another dataset with the colour folder's classes and image count (other pixels)."""
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, size=(10, 3))
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(24):
            img = np.clip(palette[c] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(color_folder, tmp_path_factory):
    """A 4-iteration resnet8 run on the colour folder, and a dataset of the same shape."""
    root = tmp_path_factory.mktemp("fingerprint")
    cfg = resolve_config("cifar10-paper", model="resnet8", data=str(color_folder),
                         cache_dir=str(root / "cache"), iterations=4, milestones=[3],
                         batch_size=16, val_split=N_VAL, log_every=2, eval_every=2,
                         save_every=2, device="cpu", deterministic=True)
    Trainer(cfg, root / "run", quiet=True).fit()
    return {"dir": root / "run", "best": root / "run" / "best.safetensors",
            "cache": root / "cache", "other": other_colours(root / "other")}


def _eval(args, run, capsys) -> tuple[int, str, str]:
    code = main(["eval", "--device", "cpu", "--cache-dir", str(run["cache"]), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_record_of_the_run_carries_the_fingerprint(run, color_folder):
    expected = data_fingerprint(load_image_set(color_folder, cache_dir=run["cache"]))
    assert expected["images"] == N_IMAGES and expected["classes"] == [f"c{i}" for i in range(10)]
    assert expected["source"] == {"kind": "image folder", "name": color_folder.name,
                                  "bytes": sum(p.stat().st_size for p in
                                               color_folder.rglob("*.png")),
                                  "files": N_IMAGES}
    config = json.loads((run["dir"] / "config.json").read_text())
    assert config["run"]["data_fingerprint"] == expected
    for name in ("last.safetensors", "previous.safetensors", "best.safetensors"):
        assert read_checkpoint(run["dir"] / name).meta["data_fingerprint"] == expected


def test_other_data_of_the_same_shape_is_refused_with_the_reason_and_the_fix(run, color_folder,
                                                                           capsys):
    other = run["other"]
    assert len(load_image_set(other, cache_dir=run["cache"])) == N_IMAGES
    code, out, err = _eval(["--checkpoint", str(run["best"]), "--data", str(other),
                            "--split", "val"], run, capsys)
    assert code == 2 and "top-1 error" not in out
    message = " ".join(err.split())
    # What the run trained on, what was given, why the split would be wrong, and the fix.
    assert f"was trained on image folder {color_folder.name} (" in message
    assert f"but --data {other} holds image folder other (" in message
    assert "240 images of 10 classes" in message
    assert f"{N_VAL} images held out by seed 0" in message and "trained on" in message
    assert f"--data {color_folder} (it exists on this machine)" in message
    assert "--split test" in message
    # --split train is re-created by position too; analyze and ensembles share the check.
    assert _eval(["--checkpoint", str(run["best"]), "--data", str(other), "--split", "train"],
                 run, capsys)[0] == 2
    with pytest.raises(DataError, match="refusing --split val"):
        evaluate_ensemble([str(run["best"]), str(run["dir"] / "last.safetensors")],
                          data=str(other), split="val", device="cpu",
                          cache_dir=str(run["cache"]))
    assert main(["analyze", "responses", "--checkpoint", str(run["best"]), "--data",
                 str(other), "--device", "cpu", "--cache-dir", str(run["cache"]), "--out",
                 str(run["dir"].parent / "responses")]) == 2
    assert "refusing --split val" in capsys.readouterr().err


def test_the_same_images_at_another_path_or_packed_as_a_tar_are_accepted(run, color_folder,
                                                                          tmp_path):
    reference = evaluate_checkpoint(str(run["best"]), data=str(color_folder), split="val",
                                    device="cpu", cache_dir=str(run["cache"]))
    copy = tmp_path / "elsewhere" / "colours"
    shutil.copytree(color_folder, copy)
    packed = tmp_path / "colours.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(color_folder, arcname="colours")
    for data in (copy, packed):
        res = evaluate_checkpoint(str(run["best"]), data=str(data), split="val", device="cpu",
                                  cache_dir=str(run["cache"]))
        assert res["n"] == N_VAL and res["confusion"] == reference["confusion"]
        assert res["loss"] == pytest.approx(reference["loss"], rel=1e-6)


def test_a_checkpoint_from_before_fingerprints_warns_that_the_split_is_unverified(run, tmp_path):
    ckpt = read_checkpoint(run["best"])
    model = build_model(ckpt.meta)
    model.load_state_dict(ckpt.model_state)
    old = save_checkpoint(tmp_path / "old.safetensors", model=model,
                          meta={k: v for k, v in ckpt.meta.items() if k != "data_fingerprint"})
    with pytest.warns(UserWarning, match="before resnets recorded a fingerprint.*cannot be "
                                         "verified"):
        res = evaluate_checkpoint(str(old), data=str(run["other"]), split="val", device="cpu",
                                  cache_dir=str(run["cache"]))
    assert res["n"] == N_VAL


def test_without_data_nothing_is_downloaded_and_the_run_data_is_named(run, color_folder,
                                                                     monkeypatch, capsys):
    from resnets.data import sources

    def no_download(*args, **kwargs):
        raise AssertionError("evaluating a trained checkpoint without --data downloaded data")

    monkeypatch.setattr(sources, "load_torchvision", no_download)
    for split in ("val", "test"):
        code, out, err = _eval(["--checkpoint", str(run["best"]), "--split", split], run,
                               capsys)
        message = " ".join(err.split())
        assert code == 2, err
        assert f"was trained on image folder {color_folder.name}" in message
        assert f"recorded as --data {color_folder} (it exists on this machine)" in message
        assert "nothing is read or downloaded" in message and "Give --data" in message


def test_resuming_on_other_data_is_refused(run, color_folder, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run["dir"], out)
    cfg = resolve_config("cifar10-paper", model="resnet8", data=str(run["other"]),
                         cache_dir=str(run["cache"]), iterations=6, milestones=[3],
                         batch_size=16, val_split=N_VAL, device="cpu")
    with pytest.raises(CheckpointError, match="held-out split would change mid-run"):
        Trainer(cfg, out, resume="auto", quiet=True, explicit={"data", "iterations"})


def test_a_damaged_fingerprint_is_an_invalid_record(run, tmp_path):
    ckpt = read_checkpoint(run["best"])
    model = build_model(ckpt.meta)
    model.load_state_dict(ckpt.model_state)
    bad = {**ckpt.meta, "data_fingerprint": {**ckpt.meta["data_fingerprint"], "sha256": "x"}}
    path = save_checkpoint(tmp_path / "bad.safetensors", model=model, meta=bad)
    with pytest.raises(CheckpointError, match="data_fingerprint.sha256 is not a sha256"):
        read_checkpoint(path)
