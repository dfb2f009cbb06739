"""`resnets.roofline`: per-op bytes, FLOPs and phases of a step, and the bound of each kind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets.roofline import OpRecord, copy_bandwidth_gbs, kind_of, record_ops, summarize

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_a_convolution_counts_its_operands_once_and_its_multiply_adds_twice():
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    records = record_ops(lambda: F.conv2d(x, w, padding=1))
    (conv,) = [r for r in records if r.name == "convolution"]
    out_bytes = 2 * 4 * 8 * 8 * 4
    assert conv.bytes == x.nbytes + w.nbytes + out_bytes
    assert conv.flops == 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3)  # 2 per multiply-add
    assert conv.phase == "forward" and conv.seconds >= 0


def test_an_in_place_op_reads_and_writes_its_tensor():
    x = torch.randn(1000)
    (relu,) = record_ops(lambda: x.relu_())
    assert relu.name == "relu_" and relu.bytes == 2 * x.nbytes and relu.flops == 0


def test_views_move_nothing():
    x = torch.randn(4, 5)
    assert [r.name for r in record_ops(lambda: x.view(20).unsqueeze(0).t())] == []


def test_a_training_step_is_split_into_forward_backward_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(3, 3, 6, 6), torch.tensor([0, 1, 1])

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    records = record_ops(step)
    kinds = {kind_of(r) for r in records}
    assert {"conv forward", "conv backward", "batch norm forward", "batch norm backward",
            "ReLU forward", "ReLU backward", "optimizer"} <= kinds
    # The optimizer's updates are its own, not counted as forward adds.
    assert all(r.phase == "optimizer" for r in records if r.name in ("mul_",))
    # The conv backward's FLOPs: the weight gradient and the bias gradient only (the input
    # needs no gradient), 2 per multiply-add like the forward.
    (back,) = [r for r in records if r.name == "convolution_backward"]
    assert back.flops == 2 * (3 * 4 * 6 * 6) * (3 * 3 * 3)


def test_summary_bounds_each_call_by_the_larger_of_bytes_and_flops():
    records = [OpRecord("convolution", "forward", 0.005, bytes=1_000, flops=2_000_000_000),
               OpRecord("relu_", "forward", 0.002, bytes=10_000_000, flops=0),
               OpRecord("relu_", "forward", 0.002, bytes=10_000_000, flops=0)]
    kinds = summarize(records, bandwidth_gbs=10.0, peak_tflops=1.0)
    assert [k.kind for k in kinds] == ["conv forward", "ReLU forward"]  # most time first
    conv, relu = kinds
    assert conv.kind == "conv forward" and conv.bound_by == "compute"
    assert conv.bound_seconds == pytest.approx(0.002)  # 2 GFLOP at 1 TFLOP/s
    assert conv.limit_fraction == pytest.approx(0.4)
    assert relu.kind == "ReLU forward" and relu.calls == 2 and relu.bound_by == "memory"
    assert relu.bound_seconds == pytest.approx(0.002)  # 2 x 10 MB at 10 GB/s
    assert relu.limit_fraction == pytest.approx(0.5)


def test_copy_bandwidth_is_a_positive_rate():
    assert copy_bandwidth_gbs("cpu", mib=4, repeats=2) > 0
