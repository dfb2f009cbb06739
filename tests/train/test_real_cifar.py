"""The main job on real data: resnet20 on 10k shared CIFAR-10 images, validated on 2k others."""

import json

import pytest

from resnets.cli import main
from resnets.config import resolve_config
from resnets.train.loop import Trainer


@pytest.mark.realdata
@pytest.mark.slow
def test_resnet20_learns_cifar10_on_cpu(shared_cifar_tar, data_cache_dir, tmp_path, capsys):
    cfg = resolve_config(
        "cifar10-paper", model="resnet20", data=str(shared_cifar_tar),
        cache_dir=str(data_cache_dir), val_split=2000, train_subset=10000, iterations=400,
        milestones=[300], eval_every=400, save_every=400, log_every=50, device="cpu")
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    assert (trainer.num_train, trainer.num_val) == (10000, 2000)
    result = trainer.fit()
    val_error = result.final["val"]["val_error"]
    print(f"resnet20, 400 iterations on 10k images: val error {val_error:.4f}")
    assert val_error <= 0.60, f"validation accuracy {1 - val_error:.3f} < 0.40"

    # `resnets eval` re-creates the same 2k validation split from the checkpoint's config
    # (the data's location comes from the user, never from the file).
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(tmp_path / "run" / "best.safetensors"),
                 "--data", str(shared_cifar_tar), "--cache-dir", str(data_cache_dir),
                 "--split", "val", "--device", "cpu", "--json"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and last["n"] == 2000
    # Training validated under bf16 autocast where native; `eval` runs fp32: allow 1%.
    assert last["top1_error"] == pytest.approx(val_error, abs=0.01)
    assert 0 <= last["top5_error"] <= last["top1_error"]
