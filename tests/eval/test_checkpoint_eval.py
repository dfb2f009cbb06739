"""`resnets eval` / `resnets analyze responses` on every kind of checkpoint the package
writes: a training checkpoint (last), the best weights, and weights without a training
config (what `resnets import` writes)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from resnets.checkpoint import load_checkpoint, read_checkpoint
from resnets.cli import main
from resnets.errors import DataError
from resnets.eval.checkpoint_eval import evaluate_checkpoint
from resnets.serve.weights import ImportedWeights

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

N_IMAGES, N_VAL = 240, 40  # the colour folder of tests/conftest.py; the runs' held-out split


@pytest.fixture(scope="module")
def checkpoints(color_folder, tmp_path_factory):
    """``{"last": path, "best": path, "imported": path}`` from one 10-iteration resnet8 run."""
    from resnets.config import resolve_config
    from resnets.train.loop import Trainer

    root = tmp_path_factory.mktemp("eval-run")
    cfg = resolve_config("cifar10-paper", model="resnet8", data=str(color_folder),
                         cache_dir=str(root / "cache"), iterations=10, milestones=[8],
                         batch_size=16, val_split=N_VAL, lr=0.05, log_every=5, eval_every=5,
                         save_every=5, device="cpu", deterministic=True)
    Trainer(cfg, root / "run", quiet=True).fit()
    best = root / "run" / "best.safetensors"
    model, meta = load_checkpoint(best)
    # What an importer writes: the net, its classes and normalization; no training record.
    keep = ("model", "model_kwargs", "classes", "normalization", "image_size")
    record = {"kind": "weights", **{k: meta[k] for k in keep},
              "source": {"format": "test", "weights": str(best)}}
    imported = ImportedWeights(model, record).save(root / "imported.safetensors")
    assert "config" not in read_checkpoint(imported).meta
    return {"last": root / "run" / "last.safetensors", "best": best, "imported": imported}


def _total(res: dict) -> torch.Tensor:
    return torch.tensor(res["confusion"])


def test_every_checkpoint_evaluates(checkpoints, color_folder):
    res = {kind: evaluate_checkpoint(str(path), data=str(color_folder), split="train",
                                     device="cpu", batch_size=64)
           for kind, path in checkpoints.items()}
    # Trained checkpoints re-create their run's split; imported weights see every image.
    assert res["last"]["n"] == res["best"]["n"] == N_IMAGES - N_VAL
    assert res["imported"]["n"] == N_IMAGES
    for r in res.values():
        assert 0 <= r["top1_error"] <= 1 and r["top5_error"] <= r["top1_error"]
        assert int(_total(r).sum()) == r["n"]
    # The imported copy of best: its all-image confusion is best's train + val confusions.
    val = evaluate_checkpoint(str(checkpoints["best"]), data=str(color_folder), split="val",
                              device="cpu")
    assert val["n"] == N_VAL and val["data_source"] == res["best"]["data_source"]
    assert torch.equal(_total(res["imported"]), _total(res["best"]) + _total(val))


def test_imported_weights_need_data_and_have_no_val_split(checkpoints, color_folder):
    path = str(checkpoints["imported"])
    with pytest.raises(DataError, match="no training config.*give --data"):
        evaluate_checkpoint(path, split="train", device="cpu")
    with pytest.raises(DataError, match="no held-out val split.*--split test.*--split train"):
        evaluate_checkpoint(path, data=str(color_folder), split="val", device="cpu")


def test_eval_cli_on_imported_weights(checkpoints, color_folder, capsys):
    argv = ["eval", "--checkpoint", str(checkpoints["imported"]), "--data", str(color_folder),
            "--split", "train", "--device", "cpu", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == N_IMAGES and res["model"] == "resnet8"
    assert f"top-5 error {100 * res['top5_error']:.2f}%" in out  # 10 classes: top-5 says much
    # Without --data: a clear one-paragraph error, no KeyError traceback.
    assert main(["eval", "--checkpoint", str(checkpoints["imported"]), "--split", "train",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "give --data" in err and "KeyError" not in err


def test_analyze_responses_on_every_checkpoint(checkpoints, color_folder, tmp_path, capsys):
    out = tmp_path / "responses"
    argv = ["analyze", "responses", "--data", str(color_folder), "--split", "train",
            "--device", "cpu", "--out", str(out)]
    for path in checkpoints.values():
        argv += ["--checkpoint", str(path)]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "responses.json").read_text())["results"]
    assert [r["n"] for r in results] == [N_IMAGES - N_VAL, N_IMAGES - N_VAL, N_IMAGES]
    # resnet8: the stem and two 3x3 layers in each of its three blocks.
    assert all(len(r["layers"]) == 7 for r in results)
    assert results[1]["model_kwargs"] == results[2]["model_kwargs"]
    assert (out / "responses.png").is_file()
    # best and its imported copy hold the same net: the same responses on the same images
    # (a test split, which both read whole). The same net on fewer images (best on its
    # training images, above) responds otherwise: the comparison can tell.
    both = tmp_path / "with-test"
    for split in ("train", "test"):
        shutil.copytree(color_folder, both / split)
    argv = ["analyze", "responses", "--data", str(both), "--split", "test", "--device", "cpu",
            "--out", str(tmp_path / "on-test")]
    for name in ("best", "imported"):
        argv += ["--checkpoint", str(checkpoints[name])]
    assert main(argv) == 0, capsys.readouterr().err
    best, imported = json.loads((tmp_path / "on-test" / "responses.json").read_text())["results"]
    assert best["n"] == imported["n"] == N_IMAGES
    assert imported["layers"] == best["layers"] != results[1]["layers"]
    assert main(["analyze", "responses", "--checkpoint", str(checkpoints["imported"]),
                 "--device", "cpu", "--split", "train", "--out", str(out)]) == 2
    assert "give --data" in capsys.readouterr().err


def test_eval_of_an_akamaster_import(checkpoints, color_folder, tmp_path, capsys):
    """`resnets import --from akamaster` then `resnets eval`: the imported checkpoint is
    evaluated with the normalization it records (ImageNet mean/std), on every image."""
    model, _ = load_checkpoint(checkpoints["best"])
    # A .th file in akamaster's layout (module. prefix, linear. head) from resnet8's tensors.
    state = {f"module.{k.replace('fc.', 'linear.')}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 50.0}, tmp_path / "resnet8.th")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(sorted(p.name for p in color_folder.iterdir())) + "\n")
    out = tmp_path / "aka.safetensors"
    assert main(["import", "--from", "akamaster", "--weights", str(tmp_path / "resnet8.th"),
                 "--classes", str(classes), "--out", str(out)]) == 0
    assert main(["eval", "--checkpoint", str(out), "--data", str(color_folder), "--split",
                 "train", "--device", "cpu", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == N_IMAGES and res["model"] == "resnet8"
    assert int(_total(res).sum()) == N_IMAGES
    assert read_checkpoint(out).meta["normalization"]["kind"] == "channel_mean_std"


def test_eval_recreates_the_images_a_subset_run_trained_and_validated_on(color_folder, tmp_path,
                                                                         capsys):
    """A run with --train-subset and --skip-bad-images: `resnets eval --split val` scores the
    very images the run validated on (its count and its last val error), `--split train` the
    subset it trained on. An unreadable file sorts first in its class, so without skipping it
    again every index after it would point at another image."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(color_folder, data)
    first_class = sorted(p.name for p in data.iterdir())[0]
    (data / first_class / "0-broken.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--data", str(data), "--cache-dir",
                 str(tmp_path / "cache"), "--iterations", "4", "--batch-size", "16",
                 "--val-split", str(N_VAL), "--train-subset", "64", "--skip-bad-images",
                 "--eval-every", "4", "--save-every", "4", "--log-every", "2",
                 "--device", "cpu", "--precision", "fp32", "--no-channels-last",
                 "--deterministic", "--out", str(out), "--quiet"]) == 0
    last_val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "val"][-1]
    capsys.readouterr()

    def evaluate(split: str) -> dict:
        assert main(["eval", "--checkpoint", str(out / "last.safetensors"), "--data", str(data),
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                     "--split", split, "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    val = evaluate("val")
    assert val["n"] == N_VAL
    assert val["top1_error"] == pytest.approx(last_val["val_error"], abs=1e-9)
    assert val["loss"] == pytest.approx(last_val["val_loss"], rel=1e-5)
    assert evaluate("train")["n"] == 64
