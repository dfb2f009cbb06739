"""torchrun on one GPU: `resnets train --device cuda` launched by torch.distributed.run.

With one process the trainer sees WORLD_SIZE=1 and (by design) joins no process group, so
the plain launch checks that torchrun's environment is handled on CUDA. A second launch
forces the distributed path with that one rank (a wrapper makes `DistEnv.enabled` true and
joins an nccl group first), so the DDP wrapper, the nccl all-reduces and the rank-0 saving
run on the GPU even where only one GPU exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from resnets.checkpoint import load_checkpoint, read_checkpoint

ITERATIONS = 20

# Runs as torchrun's script: one rank, but through every DDP code path of the trainer.
FORCED_DDP = """\
import sys

import torch
import torch.distributed as dist

from resnets.cli import main
from resnets.train import distributed

distributed.DistEnv.enabled = property(lambda self: True)  # one rank, distributed code path
dist.init_process_group(backend="nccl")
torch.cuda.set_device(0)
assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
code = main(sys.argv[1:])
if dist.is_initialized():
    dist.destroy_process_group()
sys.exit(code)
"""


def _torchrun(color_folder, out, script: list[str]) -> tuple[list[dict], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
           "--standalone", *script, "train", "--model", "resnet8", "--data", str(color_folder),
           "--cache-dir", str(out.parent / "cache"), "--out", str(out), "--iterations",
           str(ITERATIONS), "--milestones", "1000", "--batch-size", "16", "--val-split", "40",
           "--lr", "0.05", "--device", "cuda", "--precision", "fp32", "--log-every", "5",
           "--eval-every", "100", "--save-every", "100", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"], proc.stdout + proc.stderr


def _check_run(out, train: list[dict]) -> dict:
    assert [r["iteration"] for r in train] == [5, 10, 15, 20]
    assert train[-1]["train_loss"] < train[0]["train_loss"] - 0.3, train
    model, meta = load_checkpoint(out / "last.safetensors")  # on the CPU
    assert meta["iteration"] == ITERATIONS and not model.training
    state = read_checkpoint(out / "last.safetensors").model_state
    assert not [k for k in state if k.startswith("module.")]  # DDP's prefix never saved
    return json.loads((out / "config.json").read_text())["run"]


@pytest.mark.parametrize("forced", [False, True], ids=["torchrun", "torchrun-nccl-ddp"])
def test_one_process_torchrun_on_cuda_trains_and_saves(color_folder, tmp_path, forced):
    out = tmp_path / "run"
    script = ["-m", "resnets"]
    if forced:
        (tmp_path / "forced_ddp.py").write_text(FORCED_DDP)
        script = [str(tmp_path / "forced_ddp.py")]
    train, _ = _torchrun(color_folder, out, script)
    run = _check_run(out, train)
    assert (run["world_size"], run["global_batch"], run["per_rank_batch"]) == (1, 16, 16)
