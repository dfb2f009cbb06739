import json
import math
import signal

import pytest
import torch

from resnets.checkpoint import read_checkpoint
from resnets.train.loop import NonFiniteLoss, Trainer

TIMING = {"img_per_s", "elapsed_s"}


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows if r["kind"] != "segment"]


def test_short_run_writes_every_output_and_learns(tiny_config, tmp_path):
    out = tmp_path / "run"
    result = Trainer(tiny_config(), out, quiet=True).fit()
    assert (result.iteration, result.stopped, result.exit_code) == (40, None, 0)
    for name in ("config.json", "metrics.jsonl", "last.safetensors", "previous.safetensors",
                 "best.safetensors", "curves.png"):
        assert (out / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    rows = _rows(out)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["iteration"] for r in train] == list(range(5, 45, 5))
    assert [r["iteration"] for r in val] == [10, 20, 30, 40]
    assert train[-1]["train_loss"] < train[0]["train_loss"]
    assert train[-1]["lr"] == pytest.approx(0.005)  # divided by 10 at the milestone 30
    assert val[-1]["val_error"] < 0.5  # colours are easy; chance is 0.9
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["iterations"] == 40 and cfg["versions"]["torch"] == torch.__version__
    ckpt = read_checkpoint(out / "last.safetensors")
    assert ckpt.iteration == 40 and ckpt.meta["config"]["model"] == "resnet8"
    assert ckpt.meta["normalization"]["kind"] == "per_pixel_mean"
    best = read_checkpoint(out / "best.safetensors")
    assert best.optimizer_state is None and best.meta["kind"] == "weights"


def test_sigterm_then_resume_is_bitwise_identical(tiny_config, tmp_path):
    full = Trainer(tiny_config(), tmp_path / "full", quiet=True)
    full.fit()

    part = Trainer(tiny_config(), tmp_path / "part", quiet=True)
    step = part.train_step

    def step_then_signal(x, y):
        step(x, y)
        if part.iteration == 17:  # mid-epoch, between checkpoints and log lines
            part._on_signal(signal.SIGTERM, None)

    part.train_step = step_then_signal
    result = part.fit()
    assert (result.iteration, result.stopped, result.exit_code) == (17, "SIGTERM", 143)

    resumed = Trainer(tiny_config(), tmp_path / "part", resume="auto", quiet=True)
    assert resumed.iteration == 17
    resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    s1, s2 = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(s1[i]["momentum_buffer"], s2[i]["momentum_buffer"]) for i in s1)
    assert _rows(tmp_path / "full") == _rows(tmp_path / "part")


def test_resume_with_different_options_is_refused(tiny_config, tmp_path):
    Trainer(tiny_config(iterations=10, milestones=[5]), tmp_path / "r", quiet=True).fit()
    with pytest.raises(Exception, match=r"cannot resume: .*batch_size: checkpoint 16, now 8"):
        Trainer(tiny_config(batch_size=8), tmp_path / "r", resume="auto")


def test_nonfinite_step_is_skipped(tiny_config, tmp_path):
    ref = Trainer(tiny_config(iterations=6, milestones=[]), tmp_path / "ref", quiet=True)
    ref.fit()
    run = Trainer(tiny_config(iterations=7, milestones=[]), tmp_path / "nan", quiet=True)
    compute = run.compute_loss

    def nan_at_step_6(x, y):
        loss, logits = compute(x, y)
        return (loss * math.nan if run.iteration == 6 else loss), logits

    run.compute_loss = nan_at_step_6
    run.fit()
    assert run.nonfinite_total == 1
    for a, b in zip(ref.model.state_dict().values(), run.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_repeated_nonfinite_saves_and_stops(tiny_config, tmp_path):
    run = Trainer(tiny_config(max_nonfinite=3), tmp_path / "nan", quiet=True)
    compute = run.compute_loss

    def nan_from_step_4(x, y):
        loss, logits = compute(x, y)
        return (loss * math.nan if run.iteration >= 4 else loss), logits

    run.compute_loss = nan_from_step_4
    with pytest.raises(NonFiniteLoss, match="non-finite for 3 steps in a row"):
        run.fit()
    ckpt = read_checkpoint(tmp_path / "nan" / "last.safetensors")
    assert ckpt.iteration == 7 and ckpt.meta["train_state"]["nonfinite_total"] == 3


def test_a_run_says_early_what_its_schedule_costs(tiny_config, tmp_path, capsys):
    Trainer(tiny_config(iterations=14), tmp_path / "run", quiet=True).fit()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("speed after")]
    assert len(lines) == 1
    assert lines[0].startswith("speed after 10 steps: ") and " img/s; the remaining 3 " \
        "iterations take about " in lines[0] and lines[0].endswith(" on this device")
