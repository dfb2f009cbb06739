"""Fine-tuning on a folder of one's own images: weight names wherever weights are taken, the
defaults fitted to the data (each stated), the pretrained normalization kept, crop sizes that
agree, and the milestones of a resumed run (issue 24)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets import config, create_model
from resnets.checkpoint import read_checkpoint, read_state_dict, save_checkpoint, weights_record
from resnets.cli import main
from resnets.config import (
    finetune_before_data,
    finetune_to_data,
    kept_milestones_note,
    resolve_config,
    sizes_for_crop,
)
from resnets.data import Normalization, load_image_set
from resnets.errors import UserError
from resnets.eval.run_split import run_split
from resnets.models import get_weights
from resnets.train.data import check_batch
from resnets.train.loop import Trainer

README = Path(__file__).resolve().parents[2] / "README.md"
SHIPPED = "resnet20.cifar10"
CLASSES = ("cat", "dog", "ship")
SIZES = ((32, 32), (64, 64), (100, 80))  # (width, height) in turn


def write_photos(root: Path) -> Path:
    """3 classes x 40 learnable images of mixed sizes (one grayscale), and one corrupt file."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(40):
            w, h = SIZES[i % 3]
            pixels = np.clip(60 + 70 * c + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if name == "cat" and i == 39:
                image = image.convert("L")
            image.save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture
def short_finetune(monkeypatch, tmp_path):
    """Runs in ``tmp_path`` with its own cache; fine-tuning's default schedule shortened to one
    epoch, so that commands run exactly as a user types them yet take seconds."""
    monkeypatch.setattr(config, "FINETUNE_EPOCHS", 1)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------- weight names
def test_init_takes_a_shipped_weight_name():
    state = read_state_dict(SHIPPED)
    shipped = get_weights(SHIPPED)
    assert set(state) == set(shipped.state_dict())
    assert torch.equal(state["conv1.weight"], shipped.state_dict()["conv1.weight"])
    assert weights_record(SHIPPED)["normalization"] == shipped.meta["normalization"]
    with pytest.raises(UserError, match="no pretrained weights named 'resnet20.cifar100'"):
        read_state_dict("resnet20.cifar100")


# ------------------------------------------------------------ the whole journey, by CLI
def test_finetune_journey_with_no_other_flag(short_finetune, capsys):
    photos = write_photos(short_finetune / "photos")
    assert main(["train", "--init", SHIPPED, "--data", str(photos), "--num-classes", "3"]) == 0
    err = capsys.readouterr().err
    run = short_finetune / "runs" / "resnet20"
    # Each default is stated in the run's first lines, before any metric.
    head = err[:err.index("speed after") if "speed after" in err else len(err)]
    for line in ("fine-tuning default: --skip-bad-images",
                 "fine-tuning default: --val-split 12 (a tenth of the 120 images",
                 "fine-tuning default: --batch-size 27 (the recipe's 128, at most a quarter of "
                 "the 108 training images)",
                 "fine-tuning default: --iterations 4 (1 epochs of 4 steps; lr x 0.1 at "
                 "iterations 2,3",
                 "fine-tuning default: --lr 0.01",
                 f"input normalization: kept from {SHIPPED} (per_pixel_mean"):
        assert line in head, line
    record = json.loads((run / "config.json").read_text())
    cfg = record["config"]
    assert (cfg["val_split"], cfg["batch_size"], cfg["iterations"], cfg["milestones"],
            cfg["skip_bad_images"], cfg["lr"]) == (12, 27, 4, [2, 3], True, 0.01)
    assert record["run"]["skipped_files"] == [str(photos / "dog" / "broken.png")]
    assert record["run"]["chosen"][1].startswith("fine-tuning default: --val-split 12")

    # The pretrained normalization is kept exactly; re-fitting would have moved it.
    pretrained = get_weights(SHIPPED).meta["normalization"]
    for name in ("best.safetensors", "last.safetensors"):
        assert read_checkpoint(run / name).meta["normalization"] == pretrained
    data = load_image_set(photos, skip_bad_images=True)
    train_idx, _ = run_split(len(data.labels), val_split=12, seed=0)
    refit = Normalization.fit(data.images[train_idx])
    gap = (torch.tensor(refit.mean) - torch.tensor(pretrained["mean"])).abs().max().item()
    assert gap > 0.05

    assert main(["eval", "--checkpoint", str(run / "best.safetensors"), "--data",
                 str(photos)]) == 0
    out = capsys.readouterr().out
    assert "n=12" in out and "per-class accuracy" in out
    assert main(["predict", str(photos / "ship" / "2.png"), str(photos / "cat" / "39.png"),
                 "--checkpoint", str(run / "best.safetensors")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ship/2\.png: (cat|dog|ship) \d\.\d{4}", out)
    assert "2 images: 2 ok, 0 failed" in out


def readme_finetune_commands() -> list[str]:
    """The `resnets` lines of the README's fine-tuning block."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "resnets train --init" in b)
    return [line for line in block.splitlines() if line.startswith("resnets ")]


def test_readme_finetune_lines_run_as_written(short_finetune, capsys):
    commands = readme_finetune_commands()
    assert [c.split()[1] for c in commands] == ["train", "eval", "predict"]
    train = shlex.split(commands[0])
    folder = train[train.index("--data") + 1]
    assert train[train.index("--num-classes") + 1] == str(len(CLASSES))
    write_photos(short_finetune / folder)
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert "top-1 error" in out and "1 images: 1 ok, 0 failed" in out


def test_refit_normalization_is_an_explicit_flag(tmp_path):
    photos = write_photos(tmp_path / "photos")
    cfg = resolve_config("cifar10-paper", init=SHIPPED, data=str(photos), device="cpu",
                         cache_dir=str(tmp_path / "cache"), precision="fp32",
                         refit_normalization=True, skip_bad_images=True)
    trainer = Trainer(cfg, tmp_path / "run", explicit={"init", "data", "device", "cache_dir",
                                                       "precision", "refit_normalization",
                                                       "skip_bad_images"})
    trainer.close()
    assert "input normalization: measured on the new training images " \
           "(--refit-normalization)" in trainer.notes
    pretrained = get_weights(SHIPPED).meta["normalization"]["mean"]
    assert trainer.data.normalization.mean != pretrained
    assert trainer.cfg.val_split == 12  # the other defaults still fit the data


# ------------------------------------------------------------ defaults fitted to the data
def test_finetune_defaults_fit_the_data_and_keep_what_was_given():
    cfg = resolve_config("cifar10-paper", init=SHIPPED)
    fitted, notes = finetune_to_data(cfg, set(), images=121, val_folder=False)
    assert (fitted.val_split, fitted.batch_size, fitted.iterations, fitted.milestones,
            fitted.eval_every, fitted.lr) == (12, 27, 120, (60, 90), 12, pytest.approx(0.01))
    assert len(notes) == 4 and all(n.startswith("fine-tuning default: --") for n in notes)
    # A folder with its own val/ validates on it.
    fitted, notes = finetune_to_data(cfg, set(), images=121, val_folder=True)
    assert fitted.val_split == 0 and fitted.batch_size == 30
    assert "--val-split 0 (validates on the data's val/ folder)" in notes[0]
    # Data-parallel processes share the batch evenly.
    assert finetune_to_data(cfg, set(), images=121, val_folder=False,
                            world_size=4)[0].batch_size == 24
    # What the user gave stands; without --init nothing changes.
    given = {"val_split", "batch_size", "iterations", "lr"}
    kept, notes = finetune_to_data(resolve_config("cifar10-paper", init=SHIPPED, val_split=20,
                                                  batch_size=8, iterations=50, lr=0.2),
                                   given, images=121, val_folder=False)
    assert (kept.val_split, kept.batch_size, kept.iterations, kept.lr, notes) == \
        (20, 8, 50, 0.2, [])
    plain = resolve_config("cifar10-paper")
    assert finetune_to_data(plain, set(), images=121, val_folder=False) == (plain, [])
    assert finetune_before_data(plain, set()) == (plain, [])
    assert finetune_before_data(cfg, set())[0].skip_bad_images
    assert not finetune_before_data(cfg, {"skip_bad_images"})[0].skip_bad_images


def test_sizes_that_do_not_fit_the_data_name_the_flag_and_a_value_that_works():
    with pytest.raises(UserError) as e:
        run_split(121, val_split=5000, seed=0, source="image folder photos")
    assert ("--val-split 5000 leaves no training images: the data (image folder photos) holds "
            "only 121. Use --val-split 12 (a tenth) or any number below 121; --val-split 0 "
            "trains on all of them without validation.") == str(e.value)
    with pytest.raises(UserError, match=r"--val-split 0 validates on its val/ folder instead"):
        run_split(90, val_split=5000, seed=0, val_folder=True)
    with pytest.raises(UserError) as e:
        check_batch(128, 91)
    assert str(e.value) == ("--batch-size 128: the 91 training images give no complete batch. "
                            "Use --batch-size 22 (a quarter of them) or any number up to 91, "
                            "or use more data.")
    check_batch(91, 91)


def test_a_folder_with_val_validates_on_it(tmp_path):
    """The ImageNet-style pipeline on train/ + val/: the default validates on val/."""
    for split, count in (("train", 12), ("val", 4)):
        write_photos(tmp_path / "full" / split)
        for cls in CLASSES:
            for f in sorted((tmp_path / "full" / split / cls).iterdir())[count:]:
                f.unlink()
    given = {"model", "data", "crop_size", "device", "precision", "workers"}
    plain = dict(model="resnet18", data=str(tmp_path / "full"), crop_size=32, device="cpu",
                 precision="fp32", workers=0)
    with pytest.raises(UserError, match=r"--val-split 5000 .* holds only 36.*--val-split 0 "
                                        r"validates on its val/ folder"):
        Trainer(resolve_config("imagenet-steps", **plain, val_split=5000), tmp_path / "plain",
                explicit=given | {"val_split"})
    with pytest.raises(UserError, match=r"--batch-size 256: the 36 training images give no "
                                        r"complete batch. Use --batch-size 9"):
        Trainer(resolve_config("imagenet-steps", **plain), tmp_path / "plain", explicit=given)
    torch.manual_seed(0)
    own = {"kind": "channel_mean_std", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    save_checkpoint(tmp_path / "r18.safetensors", model=create_model("resnet18", num_classes=3),
                    meta={"kind": "weights", "model": "resnet18",
                          "model_kwargs": {"num_classes": 3}, "classes": list(CLASSES),
                          "image_size": [3, 32, 32], "normalization": own})
    ft = resolve_config("imagenet-steps", **plain, init=str(tmp_path / "r18.safetensors"))
    trainer = Trainer(ft, tmp_path / "ft", explicit=given | {"init"})
    trainer.close()
    assert (trainer.cfg.val_split, trainer.num_train, trainer.num_val) == (0, 36, 12)
    assert trainer.data.normalization.to_dict() == own  # kept from --init


# ------------------------------------------------------------------------ crop sizes
def test_crop_size_alone_sets_the_sizes_it_is_cut_from():
    assert sizes_for_crop(224) == ((256, 480), 256)
    cfg = resolve_config("imagenet-paper", crop_size=32)
    assert (cfg.scale_range, cfg.eval_resize) == ((37, 69), 37)
    cfg = resolve_config("imagenet-paper", crop_size=32, scale_range=[32, 40])
    assert (cfg.scale_range, cfg.eval_resize) == ((32, 40), 37)


@pytest.mark.parametrize("sizes", [dict(scale_range=[256, 480]), dict(eval_resize=256),
                                   dict(scale_range=[24, 40])])
def test_a_crop_that_does_not_fit_its_sizes_is_refused_with_those_that_do(sizes):
    with pytest.raises(UserError) as e:
        resolve_config("imagenet-paper", crop_size=32, **sizes)
    assert "--crop-size 32 does not fit" in str(e.value)
    assert "use --scale-range 37,69 and --eval-resize 37" in str(e.value)


# ---------------------------------------------------------------- milestones on resume
def test_resuming_longer_keeps_the_milestones_and_says_so(tiny_config, tmp_path, capsys):
    Trainer(tiny_config(iterations=4, milestones=[2, 3], eval_every=4, save_every=4),
            tmp_path / "r", quiet=True).fit()
    capsys.readouterr()
    longer = tiny_config(iterations=8, eval_every=4, save_every=4)
    resumed = Trainer(longer, tmp_path / "r", resume="auto", quiet=True,
                      explicit={"iterations"})
    assert resumed.cfg.milestones == (2, 3)
    resumed.fit()
    assert ("resumed with --iterations 8 (was 4): the milestones stay 2,3, the run's own; give "
            "--milestones 4,6 to move them to the same fractions of the new length"
            ) in capsys.readouterr().out
    assert kept_milestones_note({"iterations": 8}, resumed.cfg, {"iterations"}) is None
    assert kept_milestones_note({"iterations": 4}, resumed.cfg, {"iterations",
                                                                "milestones"}) is None


def test_help_says_what_resume_does_with_milestones(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "rescaled when --iterations is given for a new run; a resumed run keeps its own" in text
