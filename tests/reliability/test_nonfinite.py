"""A non-finite loss injected in the middle of a run: that step leaves weights, BN statistics
and momentum exactly as they were, and training goes on from there with finite numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resnets.checkpoint import LAST, read_checkpoint
from resnets.train.loop import Trainer

BAD_STEP = 5  # the loss of the sixth step (iteration counter 5 -> 6) is poisoned


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Weights, BN buffers and momentum buffers, copied."""
    state = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for i, st in trainer.optimizer.state_dict()["state"].items():
        state[f"momentum.{i}"] = st["momentum_buffer"].clone()
    return state


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_nonfinite_step_mid_run_changes_nothing(tiny_config, tmp_path, poison):
    cfg = tiny_config(iterations=12, milestones=[], log_every=4, eval_every=6, save_every=6,
                      precision="fp32")
    run = Trainer(cfg, tmp_path / "run", quiet=True)
    compute, step = run.compute_loss, run.train_step
    around_bad_step = []

    def poisoned_loss(x, y):
        loss, logits = compute(x, y)
        return (loss + poison if run.iteration == BAD_STEP else loss), logits

    def watched_step(x, y):
        if run.iteration == BAD_STEP:
            around_bad_step.append(_state(run))
        step(x, y)
        if run.iteration == BAD_STEP + 1:
            around_bad_step.append(_state(run))

    run.compute_loss, run.train_step = poisoned_loss, watched_step
    result = run.fit()

    assert (result.iteration, result.exit_code) == (12, 0)
    before, after = around_bad_step
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # The following steps trained normally: the weights moved on and stayed finite.
    final = _state(run)
    assert not all(torch.equal(after[k], final[k]) for k in after)
    assert all(torch.isfinite(v.float()).all() for v in final.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [r for r in rows if r["kind"] == "train"]
    assert all(math.isfinite(r["train_loss"]) for r in train)
    assert [r["nonfinite_total"] for r in train] == [0, 1, 1]
    assert all(math.isfinite(r["val_loss"]) for r in rows if r["kind"] == "val")
    state = read_checkpoint(tmp_path / "run" / LAST).meta["train_state"]
    assert (state["nonfinite_total"], state["nonfinite_in_row"]) == (1, 0)
