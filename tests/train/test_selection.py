"""No number is chosen on the images it is reported on: a ``best`` checkpoint is kept only where
the validation images were held out of the training images, its record names them, and
`resnets eval` warns when asked to score it on them (issue 23)."""

from __future__ import annotations

import json
import shutil

import pytest

from resnets.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from resnets.cli import main
from resnets.eval.checkpoint_eval import evaluate_checkpoint, selection_warning
from resnets.eval.ensemble import evaluate_ensemble
from resnets.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture
def cifar_run(tiny_config, tmp_path):
    """A 10-iteration resnet8 run validating on 40 images held out of the colour folder."""
    cfg = tiny_config(iterations=10, milestones=[8], eval_every=5, save_every=5)
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    return tmp_path / "run"


def test_best_records_the_held_out_images_that_chose_it(cifar_run):
    chosen = read_checkpoint(cifar_run / "best.safetensors").meta["selected_on"]
    assert chosen["images"] == 40 and chosen["eval_split"] == "val"
    assert chosen["held_out_of_training"] is True
    assert chosen["what"].startswith("40 images held out of the training images of ")
    assert "--val-split 40, seed 0" in chosen["what"]
    run = json.loads((cifar_run / "config.json").read_text())["run"]
    assert run["validation"] == chosen and run["best_checkpoint"].startswith("kept")
    assert "selected_on" not in read_checkpoint(cifar_run / "last.safetensors").meta


def test_eval_warns_when_best_is_scored_on_the_split_that_chose_it(cifar_run, color_folder,
                                                                   capsys):
    best, last = str(cifar_run / "best.safetensors"), str(cifar_run / "last.safetensors")
    on_val = evaluate_checkpoint(best, data=str(color_folder), split="val", device="cpu")
    assert on_val["n"] == 40
    assert "images of --split val: its error there was chosen to be low" in on_val["warning"]
    assert "Report the run's final weights" in on_val["warning"]
    # Other splits, and the final weights on val, are honest numbers: no warning.
    assert "warning" not in evaluate_checkpoint(best, data=str(color_folder), split="train",
                                                device="cpu")
    assert "warning" not in evaluate_checkpoint(last, data=str(color_folder), split="val",
                                                device="cpu")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", best, "--data", str(color_folder), "--split", "val",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {best} holds the weights of the lowest validation error")
    ens = evaluate_ensemble([best, last], data=str(color_folder), split="val", device="cpu")
    assert ["warning" in m for m in ens["members"]] == [True, False]


def test_a_best_from_before_the_record_is_still_flagged_on_val(cifar_run, tmp_path):
    model, meta = load_checkpoint(cifar_run / "best.safetensors")
    old = {k: v for k, v in meta.items() if k != "selected_on"}
    (tmp_path / "old").mkdir()
    path = save_checkpoint(tmp_path / "old" / "best.safetensors", model=model, meta=old)
    assert "selected_on" not in read_checkpoint(path).meta
    assert "written before runs named the images" in selection_warning(old, path, "val")
    assert selection_warning(old, path, "test") is None
    assert selection_warning(old, tmp_path / "final.safetensors", "val") is None


def test_a_run_validating_on_the_datas_own_val_split_keeps_no_best(color_folder, tiny_config,
                                                                   tmp_path):
    """ImageNet practice (imagenet-paper: plateau drops on ROOT/val): the split it validates on
    is the one results are reported on, so no weights are chosen on it."""
    root = tmp_path / "folder"
    for split in ("train", "val"):
        shutil.copytree(color_folder, root / split)
    cfg = tiny_config(data=str(root), pipeline="folder", normalization="channel_mean_std",
                      val_split=0, crop_size=32, scale_range=(32, 36), eval_resize=32,
                      workers=0, iterations=4, milestones=[3], log_every=2, eval_every=2,
                      save_every=2, lighting=0.0)
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    out = tmp_path / "run"
    assert not (out / "best.safetensors").exists()
    run = json.loads((out / "config.json").read_text())["run"]
    assert run["validation"]["eval_split"] == "val" and run["val_images"] == 240
    assert run["validation"]["held_out_of_training"] is False
    assert run["validation"]["what"] == f"{root}/val, the data's own val split"
    assert run["best_checkpoint"].startswith("not kept")
    val_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if '"kind": "val"' in line]
    assert [r["iteration"] for r in val_rows] == [2, 4]  # still validated (plateau schedule)


def test_fig7_defaults_to_the_test_split_and_labels_the_split(cifar_run, color_folder, tmp_path,
                                                              capsys):
    last = str(cifar_run / "last.safetensors")
    with_test = tmp_path / "with-test"
    for split in ("train", "test"):
        shutil.copytree(color_folder, with_test / split)
    capsys.readouterr()
    assert main(["analyze", "responses", "--checkpoint", last, "--data", str(with_test),
                 "--device", "cpu", "--out", str(tmp_path / "a")]) == 0
    (result,) = json.loads((tmp_path / "a" / "responses.json").read_text())["results"]
    assert (result["split"], result["n"]) == ("test", 240)
    assert "on 240 test images" in capsys.readouterr().out
    # No test split in the data: the run's held-out val split, said so.
    assert main(["analyze", "responses", "--checkpoint", last, "--data", str(color_folder),
                 "--device", "cpu", "--out", str(tmp_path / "b")]) == 0
    (result,) = json.loads((tmp_path / "b" / "responses.json").read_text())["results"]
    assert (result["split"], result["n"]) == ("val", 40)
    out = capsys.readouterr().out
    assert "split: val (the data has no test split; the paper's Fig. 7 is on test data)" in out
    # The report's table names the split of every net.
    from resnets.report import build_report

    md = tmp_path / "report.md"
    build_report([tmp_path / "b"], tmp_path / "report.html", md)
    assert "| val (40 images) |" in md.read_text()


def test_a_run_without_validation_says_so_and_keeps_no_best(tiny_config, tmp_path):
    cfg = tiny_config(val_split=0, iterations=4, milestones=[3], eval_every=2, save_every=2,
                      log_every=2)
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    run = json.loads((tmp_path / "run" / "config.json").read_text())["run"]
    assert run["validation"] is None and run["best_checkpoint"] == "none (no validation images)"
    assert not (tmp_path / "run" / "best.safetensors").exists()
