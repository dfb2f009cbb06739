"""Training on CUDA: fp32, bf16 + channels_last and torch.compile learn and write checkpoints
that the CPU reads; with --deterministic, a run stopped and resumed on the GPU ends bitwise
equal to one that ran straight through."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from resnets.checkpoint import load_checkpoint, read_checkpoint
from resnets.data import Normalization, load_image_set
from resnets.train.loop import Trainer

TIMING = {"img_per_s", "elapsed_s"}


def _rows(run_dir, kind=None) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in rows if r["kind"] != "segment"]
    return [r for r in rows if kind is None or r["kind"] == kind]


def _assert_learned(run_dir, iterations: int) -> list[float]:
    train = _rows(run_dir, "train")
    losses = [r["train_loss"] for r in train]
    assert [r["iteration"] for r in train] == list(range(5, iterations + 5, 5))
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 0.3, losses  # colours are easy: a clear fall
    return losses


def _cpu_logits_match_cuda(path, color_folder, cache) -> None:
    """The checkpoint loads on the CPU; its logits there equal those of the same weights on
    CUDA (fp32, TF32 off) on the colour images, and are mostly right."""
    data = load_image_set(color_folder, split="train", cache_dir=cache)
    cpu_model, meta = load_checkpoint(path, device="cpu")
    assert next(cpu_model.parameters()).device.type == "cpu"
    x = Normalization.from_dict(meta["normalization"]).apply(data.images[::4])  # (60, 3, 32, 32)
    gpu_model, _ = load_checkpoint(path, device="cuda")
    with torch.no_grad():
        on_cpu, on_gpu = cpu_model(x), gpu_model(x.cuda()).cpu()
    assert torch.isfinite(on_cpu).all()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)
    accuracy = float((on_cpu.argmax(1) == data.labels[::4]).float().mean())
    assert accuracy > 0.5, accuracy  # chance is 0.1


def test_fp32_run_learns_and_its_checkpoint_reads_on_the_cpu(cuda_run, color_folder,
                                                            gpu_config, no_tf32):
    _assert_learned(cuda_run, 40)
    run = json.loads((cuda_run / "config.json").read_text())["run"]
    assert run["precision"] == "fp32" and run["channels_last"] is False
    assert "cuda" in run["device"].lower() or "nvidia" in run["device"].lower(), run["device"]
    ckpt = read_checkpoint(cuda_run / "last.safetensors")
    assert ckpt.iteration == 40
    assert all(t.device.type == "cpu" for t in ckpt.model_state.values())
    val = _rows(cuda_run, "val")
    assert val and val[-1]["val_error"] < 0.5
    _cpu_logits_match_cuda(cuda_run / "best.safetensors", color_folder,
                           gpu_config().cache_dir)


def test_bf16_channels_last_run_learns_and_saves_fp32_weights(gpu_config, tmp_path,
                                                             color_folder):
    out = tmp_path / "bf16"
    trainer = Trainer(gpu_config(precision="bf16", channels_last=True), out, quiet=True)
    assert trainer.amp_dtype == torch.bfloat16
    convs = [p for p in trainer.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    result = trainer.fit()
    assert (result.iteration, result.exit_code) == (30, 0)
    _assert_learned(out, 30)
    run = json.loads((out / "config.json").read_text())["run"]
    assert (run["precision"], run["channels_last"]) == ("bf16", True)
    state = read_checkpoint(out / "last.safetensors").model_state
    assert {t.dtype for k, t in state.items() if "num_batches" not in k} == {torch.float32}
    model, meta = load_checkpoint(out / "last.safetensors", device="cpu")
    data = load_image_set(color_folder, split="train", cache_dir=gpu_config().cache_dir)
    with torch.no_grad():
        logits = model(Normalization.from_dict(meta["normalization"]).apply(data.images[:8]))
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()


def test_compiled_run_learns_and_saves_plain_state_dict_keys(gpu_config, tmp_path):
    out = tmp_path / "compiled"
    trainer = Trainer(gpu_config(compile=True), out, quiet=True)
    assert trainer.step_model is not trainer.model  # the compiled wrapper runs the steps
    result = trainer.fit()
    assert (result.iteration, result.exit_code) == (30, 0)
    losses = _assert_learned(out, 30)
    state = read_checkpoint(out / "last.safetensors").model_state
    assert not [k for k in state if "_orig_mod" in k or k.startswith("module.")]
    model, meta = load_checkpoint(out / "last.safetensors", device="cpu")
    assert meta["iteration"] == 30 and not model.training
    # Same data, seed and settings uncompiled: the compiled run's losses stay close.
    eager = Trainer(gpu_config(), tmp_path / "eager", quiet=True)
    eager.fit()
    eager_losses = [r["train_loss"] for r in _rows(tmp_path / "eager", "train")]
    assert max(abs(a - b) for a, b in zip(losses, eager_losses, strict=True)) < 0.15


def test_deterministic_sigterm_then_resume_is_bitwise_identical(gpu_config, tmp_path):
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "set by tests/gpu/conftest.py"
    cfg = dict(deterministic=True, iterations=40, milestones=[30], eval_every=10)
    full = Trainer(gpu_config(**cfg), tmp_path / "full", quiet=True)
    full.fit()

    part = Trainer(gpu_config(**cfg), tmp_path / "part", quiet=True)
    step = part.train_step

    def step_then_signal(x, y):
        step(x, y)
        if part.iteration == 17:  # mid-epoch, between checkpoints and log lines
            part._on_signal(signal.SIGTERM, None)

    part.train_step = step_then_signal
    result = part.fit()
    assert (result.iteration, result.stopped, result.exit_code) == (17, "SIGTERM", 143)

    resumed = Trainer(gpu_config(**cfg), tmp_path / "part", resume="auto", quiet=True)
    assert resumed.iteration == 17
    resumed.fit()
    want, got = full.model.state_dict(), resumed.model.state_dict()
    assert next(iter(want.values())).is_cuda
    for key in want:
        assert torch.equal(want[key], got[key]), key
    s1, s2 = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert s1.keys() == s2.keys() and len(s1) > 0
    for i in s1:
        assert torch.equal(s1[i]["momentum_buffer"], s2[i]["momentum_buffer"]), i
    assert _rows(tmp_path / "full") == _rows(tmp_path / "part")
    # And what was written: the two last checkpoints hold the same tensors.
    a = read_checkpoint(tmp_path / "full" / "last.safetensors")
    b = read_checkpoint(tmp_path / "part" / "last.safetensors")
    assert a.iteration == b.iteration == 40
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)


def test_deterministic_cli_without_cublas_setting_runs_or_says_what_to_set(color_folder,
                                                                         tmp_path):
    """A user who passes --deterministic on CUDA has not set CUBLAS_WORKSPACE_CONFIG: the
    run must train, or stop with a message that names the variable, never a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "resnets", "train", "--model", "resnet8", "--data",
           str(color_folder), "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
           "--iterations", "3", "--batch-size", "16", "--val-split", "40", "--device", "cuda",
           "--precision", "fp32", "--deterministic", "--log-every", "1", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode == 0:
        assert read_checkpoint(out / "last.safetensors").iteration == 3
    else:
        assert "CUBLAS_WORKSPACE_CONFIG" in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_state_stays_on_the_gpu(gpu_config, tmp_path, precision):
    trainer = Trainer(gpu_config(precision=precision, iterations=5, save_every=5), tmp_path / "r",
                      quiet=True)
    trainer.fit()
    assert all(p.is_cuda for p in trainer.model.parameters())
    assert all(s["momentum_buffer"].is_cuda for s in trainer.optimizer.state.values())
    x, y = next(trainer.data.train_batches(0, 0))
    assert x.is_cuda and y.is_cuda
    assert x.dtype == torch.float32  # autocast casts inside the step, inputs stay fp32
    assert read_checkpoint(tmp_path / "r" / "last.safetensors").iteration == 5
