"""Two-process DDP on CPU (gloo), launched by torchrun, against a one-process run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from resnets.checkpoint import load_checkpoint, read_checkpoint

ARGS = ["--model", "resnet8", "--batch-size", "16", "--val-split", "40", "--lr", "0.05",
        "--device", "cpu", "--precision", "fp32", "--deterministic", "--log-every", "2",
        "--eval-every", "100", "--save-every", "100", "--quiet"]


def _train(color_folder, out, iterations, nproc, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--standalone"] if nproc > 1 else [sys.executable]
    cmd = [*launcher, "-m", "resnets", "train", "--data", str(color_folder), "--cache-dir",
           str(out.parent / "cache"), "--out", str(out), "--iterations", str(iterations),
           "--milestones", "1000", *ARGS, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] != "segment"]


@pytest.fixture(scope="module")
def runs(color_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {
        "two": _train(color_folder, root / "two", 10, nproc=2),
        "one": _train(color_folder, root / "one", 10, nproc=1),
        "two_1step": _train(color_folder, root / "two1", 1, nproc=2),
        "one_1step": _train(color_folder, root / "one1", 1, nproc=1),
        "part": _train(color_folder, root / "part", 6, nproc=2, extra=["--save-every", "3"]),
        "resumed": _train(color_folder, root / "part", 10, nproc=2,
                          extra=["--save-every", "3", "--resume", "auto"]),
        "root": root,
    }


def test_rank0_checkpoint_loads_and_loss_decreases(runs):
    root = runs["root"]
    model, meta = load_checkpoint(root / "two" / "last.safetensors")
    assert meta["iteration"] == 10 and not model.training
    cfg = json.loads((root / "two" / "config.json").read_text())["run"]
    assert (cfg["world_size"], cfg["global_batch"], cfg["per_rank_batch"]) == (2, 16, 8)
    train = [r for r in runs["two"] if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [2, 4, 6, 8, 10]  # rank 0 alone logs
    assert train[-1]["train_loss"] < train[0]["train_loss"] - 0.3


def test_matches_one_process_with_the_same_global_batch(runs, color_folder):
    """Same data, order and augmentation; gradients averaged over ranks. Without SyncBN (CUDA
    only) each rank normalizes its own 8 images, so the exact one-process twin of a 2-rank
    step is: the global batch of 16, split in halves, gradients of the halves averaged. After
    one step the DDP weights equal that twin within 1e-6 (float summation order). Against a
    plain one-process step on all 16 images (BN over 16), the logged losses of 10-step runs
    stay within 0.35 of each other."""
    from resnets.config import resolve_config
    from resnets.train.loop import Trainer

    root = runs["root"]
    cfg = resolve_config("cifar10-paper", data=str(color_folder), cache_dir=str(root / "cache"),
                         model="resnet8", batch_size=16, val_split=40, lr=0.05, device="cpu",
                         precision="fp32", iterations=1, milestones=[1000])
    twin = Trainer(cfg, root / "twin", quiet=True)
    x, y = next(twin.data.train_batches(0, 0))
    grads = []
    for half in (slice(0, 8), slice(8, 16)):
        twin.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin.model(x[half]), y[half]).backward()
        grads.append([p.grad.clone() for p in twin.model.parameters()])
    for p, g1, g2 in zip(twin.model.parameters(), *grads, strict=True):
        p.grad = (g1 + g2) / 2
    twin.optimizer.step()
    ddp = read_checkpoint(root / "two1" / "last.safetensors").model_state
    own = twin.model.state_dict()
    worst = max((ddp[k] - own[k]).abs().max().item() for k, _ in twin.model.named_parameters())
    assert worst < 1e-6, worst
    for r2, r1 in zip(runs["two"], runs["one"], strict=True):
        if r2["kind"] == "train":
            assert r2["iteration"] == r1["iteration"]
            assert abs(r2["train_loss"] - r1["train_loss"]) < 0.35, (r2, r1)


def test_ddp_resume_continues_exactly(runs):
    """Stop a 2-process run at 6 iterations, resume it to 10: same weights as 10 in one go."""
    root = runs["root"]
    full = read_checkpoint(root / "two" / "last.safetensors")
    resumed = read_checkpoint(root / "part" / "last.safetensors")
    assert resumed.iteration == full.iteration == 10
    for k, v in full.model_state.items():
        assert torch.equal(v, resumed.model_state[k]), k
    timing = {"img_per_s", "elapsed_s"}

    def train_rows(rows):  # the stopped run also validated at its end (iteration 6)
        return [{k: v for k, v in r.items() if k not in timing} for r in rows
                if r["kind"] == "train"]

    assert train_rows(runs["resumed"]) == train_rows(runs["two"])


def test_sync_bn_on_cpu_is_a_clear_error(color_folder, tmp_path, capsys):
    from resnets.cli import main

    code = main(["train", "--data", str(color_folder), "--cache-dir", str(tmp_path / "c"),
                 "--out", str(tmp_path / "o"), "--sync-bn", "--device", "cpu", *ARGS[:2]])
    assert code == 2 and "--sync-bn needs CUDA" in capsys.readouterr().err
    assert torch.distributed.is_available()
