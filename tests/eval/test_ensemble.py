"""Ensembles (`resnets eval` with several --checkpoint, the paper's Table 5): the averaged
softmax scores of tiny nets trained on a generated colour folder with train/ and test/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.checkpoint import load_checkpoint, save_checkpoint
from resnets.cli import main
from resnets.data import Normalization, load_image_set
from resnets.errors import UserError
from resnets.eval.checkpoint_eval import evaluate_checkpoint
from resnets.eval.ensemble import ensemble_weights, evaluate_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

CLASSES = [f"c{i}" for i in range(10)]
N_TRAIN, N_TEST, N_VAL = 240, 100, 40


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """ROOT/train/<class> (24 each) and ROOT/test/<class> (10 each): noisy colour images, noisy
    enough that a few dozen iterations leave some test errors for the ensemble to fix."""
    root = tmp_path_factory.mktemp("ensemble-data")
    rng = np.random.default_rng(1)
    palette = rng.integers(40, 216, size=(len(CLASSES), 3))
    for split, count in (("train", N_TRAIN // 10), ("test", N_TEST // 10)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                img = np.clip(palette[c] + rng.normal(0, 70, size=(32, 32, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(split_folder, tmp_path_factory):
    """Two resnet8 runs of 30 iterations with seeds 0 and 1 (so different held-out splits):
    ``{"a": run_dir, "b": run_dir, "cache": dir}``."""
    from resnets.config import resolve_config
    from resnets.train.loop import Trainer

    root = tmp_path_factory.mktemp("ensemble-runs")
    out = {"cache": root / "cache"}
    for name, seed in (("a", 0), ("b", 1)):
        cfg = resolve_config("cifar10-paper", model="resnet8", data=str(split_folder),
                             cache_dir=str(out["cache"]), iterations=30, milestones=[25],
                             batch_size=16, val_split=N_VAL, lr=0.05, log_every=10,
                             eval_every=10, save_every=10, device="cpu", deterministic=True,
                             seed=seed)
        Trainer(cfg, root / name, quiet=True).fit()
        out[name] = root / name
    return out


def _ckpt(runs, name, kind="last"):
    return str(runs[name] / f"{kind}.safetensors")


def _probs_by_hand(path, images):
    """Softmax of a checkpoint on uint8 images, with the normalization it records."""
    model, meta = load_checkpoint(path)
    x = Normalization.from_dict(meta["normalization"]).apply(images)
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


def test_two_nets_beat_or_match_the_worse_member(runs, split_folder):
    paths = [_ckpt(runs, "a"), _ckpt(runs, "b")]
    res = evaluate_ensemble(paths, data=str(split_folder), split="test", device="cpu",
                            cache_dir=str(runs["cache"]), batch_size=64)
    members, ens = res["members"], res["ensemble"]
    errors = [m["top1_error"] for m in members]
    print(f"test split: members {errors}, ensemble {ens['top1_error']}")
    assert res["n"] == ens["n"] == N_TEST and [m["n"] for m in members] == [N_TEST, N_TEST]
    assert [m["weight"] for m in members] == [0.5, 0.5] and ens["weights"] == [0.5, 0.5]
    assert ens["top1_error"] <= max(errors)
    # -log is convex: the loss of the mean probability is at most the mean of the losses.
    assert ens["loss"] <= sum(m["loss"] for m in members) / 2 + 1e-6
    # Learnt, and not everything. Measured (test split): 0.20 and 0.11 for seeds 0 and 1;
    # 0.02-0.44 over 3 generated folders x 4 seeds; an untrained net is at chance, 0.9.
    assert 0 < max(errors) < 0.4
    # Each member is what `resnets eval` reports for it alone.
    for path, member in zip(paths, members, strict=True):
        alone = evaluate_checkpoint(path, data=str(split_folder), split="test", device="cpu",
                                    cache_dir=str(runs["cache"]))
        assert member["top1_error"] == alone["top1_error"]
        assert member["confusion"] == alone["confusion"]
    # The ensemble's prediction is the argmax of the mean of the two softmaxes.
    test = load_image_set(split_folder, split="test", cache_dir=runs["cache"])
    mean = (_probs_by_hand(paths[0], test.images) + _probs_by_hand(paths[1], test.images)) / 2
    wrong = int((mean.argmax(1) != test.labels).sum())
    assert ens["top1_error"] == pytest.approx(wrong / N_TEST, abs=1e-9)
    assert int(torch.tensor(ens["confusion"]).trace()) == N_TEST - wrong


def test_weights_are_applied_and_validated(runs, split_folder):
    paths = [_ckpt(runs, "a"), _ckpt(runs, "b")]
    res = evaluate_ensemble(paths, weights="3,1", data=str(split_folder), split="test",
                            device="cpu", cache_dir=str(runs["cache"]))
    assert res["ensemble"]["weights"] == [0.75, 0.25]
    test = load_image_set(split_folder, split="test", cache_dir=runs["cache"])
    mean = (0.75 * _probs_by_hand(paths[0], test.images)
            + 0.25 * _probs_by_hand(paths[1], test.images))
    wrong = int((mean.argmax(1) != test.labels).sum())
    assert res["ensemble"]["top1_error"] == pytest.approx(wrong / N_TEST, abs=1e-9)

    assert ensemble_weights(None, 4) == [0.25] * 4
    assert ensemble_weights([2, 2], 2) == [0.5, 0.5]
    with pytest.raises(UserError, match="has 1 value.*there are 2 checkpoints"):
        ensemble_weights("1", 2)
    for bad in ("1,nan", "1,inf", "1,0", "1,-2"):
        with pytest.raises(UserError, match="finite and positive"):
            ensemble_weights(bad, 2)
    with pytest.raises(UserError, match="not a comma-separated list"):
        ensemble_weights("1;2", 2)


@pytest.mark.parametrize("protocol", [None, "ten_crop"])
def test_ensemble_of_one_is_the_net(runs, split_folder, protocol):
    path = _ckpt(runs, "a", "best")
    alone = evaluate_checkpoint(path, split="val", data=str(split_folder), device="cpu",
                                cache_dir=str(runs["cache"]), protocol=protocol)
    res = evaluate_ensemble([path], split="val", data=str(split_folder), device="cpu",
                            cache_dir=str(runs["cache"]), protocol=protocol)
    (member,), ens = res["members"], res["ensemble"]
    assert res["n"] == alone["n"] == N_VAL
    for r in (member, ens):
        assert r["top1_error"] == alone["top1_error"]
        assert r["top5_error"] == alone["top5_error"]
        assert r["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    assert member["weight"] == 1.0
    if protocol is None:
        assert ens["confusion"] == member["confusion"] == alone["confusion"]
    else:
        assert ens["protocol"] == "ten_crop" and ens["views_per_image"] == 10


def test_members_of_one_split_share_val_others_are_refused(runs, split_folder, capsys):
    # best and last of one run: the same held-out images.
    same = evaluate_ensemble([_ckpt(runs, "a", "best"), _ckpt(runs, "a", "last")],
                             split="val", data=str(split_folder), device="cpu",
                             cache_dir=str(runs["cache"]))
    assert same["n"] == N_VAL and same["note"] is None
    # Seeds 0 and 1 hold out different images: val is refused, train means every image.
    paths = [_ckpt(runs, "a"), _ckpt(runs, "b")]
    with pytest.raises(UserError, match=r"different held-out splits.*seed 0.*seed 1.*--split "
                                        r"test.*--split train"):
        evaluate_ensemble(paths, split="val", data=str(split_folder), device="cpu",
                          cache_dir=str(runs["cache"]))
    train = evaluate_ensemble(paths, split="train", data=str(split_folder), device="cpu",
                              cache_dir=str(runs["cache"]))
    assert train["n"] == N_TRAIN and "every training image" in train["note"]
    assert main(["eval", "--checkpoint", paths[0], "--checkpoint", paths[1], "--data",
                 str(split_folder), "--cache-dir", str(runs["cache"]), "--device", "cpu"]) == 2
    assert "different held-out splits" in capsys.readouterr().err


def test_mismatched_classes_are_refused(runs, split_folder, tmp_path):
    model, meta = load_checkpoint(_ckpt(runs, "b"))
    other = tmp_path / "renamed.safetensors"
    renamed = [f"k{i}" for i in range(10)]
    keep = ("model", "model_kwargs", "normalization", "image_size")
    save_checkpoint(other, model=model, meta={"kind": "weights", "classes": renamed,
                                              **{k: meta[k] for k in keep}})
    with pytest.raises(UserError, match=r"different classes.*\[c0, c1.*\].*renamed"
                                        r".*\[k0, k1.*\]"):
        evaluate_ensemble([_ckpt(runs, "a"), str(other)], split="test",
                          data=str(split_folder), device="cpu", cache_dir=str(runs["cache"]))
    # Same classes, but an ImageNet-style net: it reads other data, so it is refused too.
    from resnets import create_model

    r18 = save_checkpoint(tmp_path / "r18.safetensors",
                          model=create_model("resnet18", num_classes=10),
                          meta={"kind": "weights", "model": "resnet18", "classes": CLASSES,
                                "model_kwargs": {"num_classes": 10},
                                "normalization": meta["normalization"],
                                "image_size": [3, 32, 32]})
    with pytest.raises(UserError, match="mix model families \\(cifar, imagenet\\)"):
        evaluate_ensemble([_ckpt(runs, "a"), str(r18)], split="test",
                          data=str(split_folder), device="cpu", cache_dir=str(runs["cache"]))


def test_eval_cli_prints_members_and_ensemble(runs, split_folder, capsys):
    a, b = _ckpt(runs, "a"), _ckpt(runs, "b")
    argv = ["eval", "--checkpoint", a, "--checkpoint", b, "--data", str(split_folder),
            "--split", "test", "--cache-dir", str(runs["cache"]), "--device", "cpu",
            "--protocol", "center", "--weights", "1,1", "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert [m["checkpoint"] for m in res["members"]] == [a, b]
    assert res["ensemble"]["models"] == ["resnet8", "resnet8"]
    assert res["ensemble"]["protocol"] == "center" and res["n"] == N_TEST
    text = "\n".join(lines[:-1])
    assert text.startswith("ensemble of 2 on test split of ")
    for m in res["members"]:
        assert f"{100 * m['top1_error']:6.2f}%" in next(ln for ln in lines if m["checkpoint"]
                                                        in ln)
    row = next(ln for ln in lines if ln.startswith("  ensemble "))  # the table's last row
    assert f"{100 * res['ensemble']['top1_error']:6.2f}%" in row
    # A count of weights that does not match: one paragraph, exit status 2.
    assert main(argv[:-3] + ["--weights", "1,1,1"]) == 2
    assert "--weights has 3 value(s) but there are 2 checkpoints" in capsys.readouterr().err


def test_imagenet_family_members_on_a_folder(tmp_path, randomize_bn):
    """ImageNet-style nets read ROOT/<split>/<class> through the protocol pipeline, each
    with its own recorded resize / crop; the members are what `evaluate_checkpoint` says."""
    from resnets import create_model

    rng = np.random.default_rng(2)
    for c, name in enumerate(CLASSES):
        (tmp_path / "data" / "val" / name).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 256, size=(44 + 4 * c, 48, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / "val" / name / f"{i}.png")
    paths = []
    for seed, (resize, crop) in enumerate(((40, 32), (36, 28))):
        torch.manual_seed(seed)
        model = randomize_bn(create_model("resnet18", num_classes=10), seed=seed)
        meta = {"kind": "weights", "model": "resnet18", "model_kwargs": {"num_classes": 10},
                "classes": CLASSES, "image_size": [3, crop, crop],
                "preprocessing": {"resize": resize, "crop": crop, "interpolation": "bilinear"},
                "normalization": Normalization("channel_mean_std", [0.5, 0.5, 0.5],
                                               [0.25, 0.25, 0.25]).to_dict()}
        paths.append(str(save_checkpoint(tmp_path / f"r18-{seed}.safetensors", model=model,
                                         meta=meta)))
    data = str(tmp_path / "data")
    res = evaluate_ensemble(paths, data=data, split="val", device="cpu", workers=0,
                            protocol="ten_crop")
    assert res["n"] == 20 and res["data_source"] == f"image folder {data}/val"
    assert res["ensemble"]["views_per_image"] == 10
    for path, member in zip(paths, res["members"], strict=True):
        alone = evaluate_checkpoint(path, data=data, split="val", device="cpu", workers=0,
                                    protocol="ten_crop")
        assert member["top1_error"] == alone["top1_error"]
        assert member["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    one = evaluate_ensemble(paths[1:], data=data, split="val", device="cpu", workers=0,
                            protocol="ten_crop")
    assert one["ensemble"]["top1_error"] == res["members"][1]["top1_error"]
    assert one["ensemble"]["loss"] == pytest.approx(res["members"][1]["loss"], rel=1e-6)


@pytest.mark.realdata
@pytest.mark.slow
def test_ensemble_on_real_cifar(shared_cifar_tar, data_cache_dir, tmp_path):
    """Two resnet8 nets, 60 iterations on 2k shared CIFAR-10 images (same seed, so the same
    1k held-out images; different learning rates), and their ensemble on those 1k."""
    from resnets.config import resolve_config
    from resnets.train.loop import Trainer

    paths = []
    for name, lr in (("a", 0.1), ("b", 0.05)):
        cfg = resolve_config("cifar10-paper", model="resnet8", data=str(shared_cifar_tar),
                             cache_dir=str(data_cache_dir), val_split=1000, train_subset=2000,
                             iterations=60, milestones=[45], batch_size=64, lr=lr,
                             eval_every=60, save_every=60, log_every=20, device="cpu",
                             deterministic=True)
        Trainer(cfg, tmp_path / name, quiet=True).fit()
        paths.append(str(tmp_path / name / "last.safetensors"))
    res = evaluate_ensemble(paths, data=str(shared_cifar_tar), split="val", device="cpu",
                            cache_dir=str(data_cache_dir))
    errors = [m["top1_error"] for m in res["members"]]
    print(f"real CIFAR-10 val (1k): members {errors}, ensemble {res['ensemble']['top1_error']}")
    # Measured (val, 1k): 0.70 and 0.68 (seed 0, this test); 0.70 and 0.69 with seed 1. An
    # untrained resnet8 gets 0.89-0.90 (3 seeds), chance; 0.78 keeps a margin from both.
    assert res["n"] == 1000 and max(errors) < 0.78
    assert res["ensemble"]["top1_error"] <= max(errors)
    assert res["ensemble"]["loss"] <= sum(m["loss"] for m in res["members"]) / 2 + 1e-6


def test_multi_scale_says_its_scales_and_top5_needs_more_than_5_classes(tmp_path, capsys,
                                                                         randomize_bn):
    """A resnet18 trained at 32-pixel crops on 3 classes: multi_scale's sides follow the crop
    (224..640 scaled by 32/224) and are printed; top-5 of 3 classes (always 0) is not."""
    from resnets import create_model

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    for name in classes:
        (tmp_path / "data" / "val" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "val" / name / "0.png")
    paths = []
    for seed, (resize, crop) in enumerate(((37, 32), (32, 28))):
        model = randomize_bn(create_model("resnet18", num_classes=3), seed=seed)
        meta = {"kind": "weights", "model": "resnet18", "model_kwargs": {"num_classes": 3},
                "classes": classes, "image_size": [3, crop, crop],
                "preprocessing": {"resize": resize, "crop": crop, "interpolation": "bilinear"},
                "normalization": Normalization("channel_mean_std", [0.5] * 3,
                                               [0.25] * 3).to_dict()}
        paths.append(str(save_checkpoint(tmp_path / f"r18-{seed}.safetensors", model=model,
                                         meta=meta)))
    argv = ["eval", "--data", str(tmp_path / "data"), "--device", "cpu", "--workers", "0",
            "--protocol", "multi_scale"]
    assert main([*argv, "--checkpoint", paths[0]]) == 0
    out = capsys.readouterr().out
    assert ("protocol multi_scale: 10 views per image: shorter side 32, 37, 55, 69, 91 px, "
            "2 view(s) per scale (each with its mirror image)") in out
    assert "top-1 error" in out and "top-5" not in out
    # an ensemble of nets trained at other sizes names each member's sides
    assert main([*argv, "--checkpoint", paths[0], "--checkpoint", paths[1]]) == 0
    out = capsys.readouterr().out
    assert "protocol multi_scale: 10 views per image and member" in out
    assert f"{paths[1]}: protocol multi_scale: 10 views per image: shorter side 28, 32, 48, " \
           f"60, 80 px" in out
    assert "top-1" in out and "top-5" not in out
