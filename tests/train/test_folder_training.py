"""The ImageNet-side trainer on real JPEGs: the folder pipeline, test protocols, fine-tuning.

Uses a slice of the shared CIFAR-10 JPEG archive as a small ImageFolder (train/ and val/),
with the paper's augmentation at a reduced size (crop 32, shorter side in [32, 40])."""

import json
import tarfile

import pytest
import torch

from resnets.checkpoint import read_checkpoint
from resnets.cli import main

PER_CLASS_TRAIN, PER_CLASS_VAL = 400, 50


@pytest.fixture(scope="module")
def jpeg_folder(shared_cifar_tar, tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    seen: dict[str, int] = {}
    with tarfile.open(shared_cifar_tar, "r:xz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            cls = parts[1]
            k = seen.get(cls, 0)
            if k >= PER_CLASS_TRAIN + PER_CLASS_VAL:
                continue
            seen[cls] = k + 1
            split = "train" if k < PER_CLASS_TRAIN else "val"
            target = root / split / cls / parts[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if len(seen) == 10 and all(v >= PER_CLASS_TRAIN + PER_CLASS_VAL
                                       for v in seen.values()):
                break
    return root


SMALL = ["--crop-size", "32", "--scale-range", "32,40", "--eval-resize", "32", "--device", "cpu",
         "--workers", "2", "--quiet"]


@pytest.fixture(scope="module")
def folder_run(jpeg_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r18"
    code = main(["train", "--recipe", "imagenet-steps", "--model", "resnet18", "--data",
                 str(jpeg_folder), "--out", str(out), "--batch-size", "64", "--lr", "0.1",
                 "--iterations", "300", "--milestones", "250", "--log-every", "25",
                 "--eval-every", "300", "--save-every", "300", *SMALL])
    assert code == 0
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_imagenet_net_trains_through_the_folder_pipeline(folder_run):
    rows = [json.loads(line) for line in (folder_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    print("folder pipeline resnet18:", [round(r["train_loss"], 3) for r in train], val)
    assert len(train) == 12 and train[-1]["iteration"] == 300
    # Loss clearly down: from ~2.3 (chance) by at least 0.4 nats, averaged over 2 windows.
    first = (train[0]["train_loss"] + train[1]["train_loss"]) / 2
    last = (train[-1]["train_loss"] + train[-2]["train_loss"]) / 2
    assert last < first - 0.4, (first, last)
    assert val and val[-1]["val_error"] < 0.8  # 500 val/ images; chance is 0.9
    run = json.loads((folder_run / "config.json").read_text())["run"]
    assert run["pipeline"] == "FolderData" and run["val_images"] == 500
    # Validated on ROOT/val, the split results are reported on: no weights chosen there.
    assert run["validation"]["held_out_of_training"] is False
    assert not (folder_run / "best.safetensors").exists()
    meta = read_checkpoint(folder_run / "last.safetensors").meta
    assert meta["image_size"] == [3, 32, 32] and meta["preprocessing"]["crop"] == 32


@pytest.mark.realdata
@pytest.mark.slow
def test_protocols_on_the_trained_folder_net(folder_run, jpeg_folder, capsys):
    results = {}
    for protocol in ("center", "ten_crop"):
        capsys.readouterr()
        code = main(["eval", "--checkpoint", str(folder_run / "last.safetensors"), "--data",
                     str(jpeg_folder), "--split", "val", "--protocol", protocol, "--device",
                     "cpu", "--workers", "0", "--json"])
        assert code == 0
        results[protocol] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["center"]["n"] == results["ten_crop"]["n"] == 500
    assert results["ten_crop"]["views_per_image"] == 10
    for r in results.values():
        assert 0 <= r["top5_error"] <= r["top1_error"] < 0.85


@pytest.mark.realdata
@pytest.mark.slow
def test_fine_tune_on_another_label_set(folder_run, jpeg_folder, tmp_path):
    """--init from the 10-class net onto 5 classes: the head is re-initialised (with a
    warning), frozen parts keep their weights exactly, the rest trains."""
    sub = tmp_path / "five"
    for cls in sorted(p.name for p in (jpeg_folder / "train").iterdir())[:5]:
        (sub / cls).mkdir(parents=True)
        for f in sorted((jpeg_folder / "train" / cls).iterdir())[:60]:
            (sub / cls / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "ft"
    with pytest.warns(UserWarning, match="dropping fc.bias, fc.weight"):
        code = main(["train", "--recipe", "imagenet-steps", "--model", "resnet18", "--data",
                     str(sub), "--init", str(folder_run / "last.safetensors"), "--num-classes",
                     "5", "--freeze", "stem,layer1", "--val-split", "50", "--out", str(out),
                     "--batch-size", "25", "--iterations", "8", "--milestones", "100",
                     "--lr", "0.01", "--log-every", "4", "--eval-every", "8",
                     "--save-every", "8", *SMALL])
    assert code == 0
    before = read_checkpoint(folder_run / "last.safetensors").model_state
    after = read_checkpoint(out / "last.safetensors").model_state
    assert after["fc.weight"].shape == (5, 512)
    for key in ("conv1.weight", "bn1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                "layer1.1.bn2.running_var"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])
    # A minival carved out of the training images may choose a best; eval's --split val
    # reads the folder's val/, not these images.
    chosen = read_checkpoint(out / "best.safetensors").meta["selected_on"]
    assert chosen["held_out_of_training"] and chosen["eval_split"] is None


def test_num_classes_mismatch_is_a_clear_error(color_folder, tmp_path, capsys):
    code = main(["train", "--data", str(color_folder), "--cache-dir", str(tmp_path / "c"),
                 "--out", str(tmp_path / "o"), "--num-classes", "5", "--val-split", "40",
                 "--model", "resnet8", "--device", "cpu"])
    assert code == 2
    assert "--num-classes 5 does not match the 10 class folders" in capsys.readouterr().err
