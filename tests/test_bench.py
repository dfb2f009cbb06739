"""`resnets bench`: throughput, matmul peak and the torchvision comparison, at tiny sizes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from resnets import bench
from resnets.bench import matmul_peak_tflops, run_benchmark, time_interleaved
from resnets.cli import main
from resnets.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_resnet8_bench_reports_speed_peak_and_fraction():
    res = run_benchmark("resnet8", device="cpu", batch_size=4, steps=2, warmup=1,
                        peak_size=512)
    assert res["img_per_s"] > 0 and res["peak_tflops"] > 0
    assert 0 < res["peak_fraction"] <= 1
    assert res["macs_per_image"] == 12_239_488 and res["flops_per_image"] == 2 * 12_239_488
    expected = res["img_per_s"] * res["flops_per_image"] / 1e12
    assert res["model_tflops"] == pytest.approx(expected)
    assert res["torchvision"] is None  # a CIFAR net has no torchvision twin
    # Inference reads the input and writes at least every conv's output once.
    assert res["bytes_per_image"] > 2 * 4 * (3 + 16) * 32 * 32 and res["bandwidth_gbs"] > 0
    expected = res["img_per_s"] * res["bytes_per_image"] / (res["bandwidth_gbs"] * 1e9)
    assert res["bandwidth_fraction"] == pytest.approx(expected)


def test_train_mode_counts_three_passes():
    res = run_benchmark("resnet8", device="cpu", batch_size=2, steps=1, warmup=0,
                        mode="train", peak_size=256)
    assert res["flops_per_image"] == 3 * 2 * res["macs_per_image"] and res["img_per_s"] > 0


def test_resnet18_is_compared_with_torchvision():
    res = run_benchmark("resnet18", device="cpu", batch_size=2, steps=1, warmup=1,
                        image_size=64, peak_size=256)
    tv = res["torchvision"]
    assert tv["img_per_s"] > 0 and tv["ratio"] == pytest.approx(tv["ours"]["img_per_s"]
                                                                / tv["img_per_s"])
    # Basic blocks: one architecture, so the main measurement is the compared one.
    assert tv["macs_per_image"] == res["macs_per_image"] and tv["ours"]["layout"] == "paper"


def test_bottleneck_nets_are_compared_in_torchvisions_layout():
    res = run_benchmark("resnet50", device="cpu", batch_size=1, steps=1, warmup=0,
                        image_size=32, peak_size=256)
    tv = res["torchvision"]
    assert res["macs_per_image"] < tv["macs_per_image"]  # stride on the 1x1 ("v1")
    assert tv["ours"]["macs_per_image"] == tv["macs_per_image"]
    assert tv["ours"]["layout"].startswith("torchvision")


def test_interleaved_timing_runs_every_step_and_reports_seconds_per_step(monkeypatch):
    """A fake clock that only the steps advance: the result is exact, not a wall-clock race."""
    now = [0.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    calls: list[str] = []
    # Seconds each call takes: warmup (2 calls, untimed) is slow on purpose; "slow" meets a
    # load spike in its second chunk, which the median over the 3 chunks leaves out.
    durations = {"fast": [1.0, 1.0] + [0.001] * 7,
                 "slow": [1.0, 1.0] + [0.004] * 3 + [0.040] * 2 + [0.005] * 2}

    def stepper(name: str):
        def step() -> None:
            now[0] += durations[name][calls.count(name)]
            calls.append(name)
        return step

    got = time_interleaved({"fast": stepper("fast"), "slow": stepper("slow")},
                           device=torch.device("cpu"), steps=7, warmup=2, rounds=3)
    assert got == pytest.approx({"fast": 0.001, "slow": 0.005}, rel=1e-9)
    # Warmup first, then 7 steps in chunks of 3, 2, 2 taken in turn (A B A B ...).
    chunks = [("fast", 2), ("slow", 2), ("fast", 3), ("slow", 3), ("fast", 2), ("slow", 2),
              ("fast", 2), ("slow", 2)]
    assert calls == [name for name, n in chunks for _ in range(n)]


def test_matmul_peak_is_positive_in_both_precisions():
    assert matmul_peak_tflops("cpu", torch.float32, size=128, repeats=2) > 0
    assert matmul_peak_tflops("cpu", torch.bfloat16, size=128, repeats=2) > 0


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        run_benchmark("resnet8", device="cpu", steps=0, peak_size=64)
    with pytest.raises(UserError, match="resnet8"):
        run_benchmark("resnet9", device="cpu")


def test_cli_ends_with_one_json_line(capsys):
    code = main(["bench", "--model", "resnet8", "--device", "cpu", "--batch-size", "2",
                 "--precision", "fp32", "--steps", "1", "--warmup", "0", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and "img/s" in lines[1]
    record = json.loads(lines[-1])
    assert record["model"] == "resnet8" and record["batch_size"] == 2
    assert record["cpu_model"] and record["cpu_model"] in record["device_name"]


def test_bench_speaks_trains_vocabulary_and_resolves_auto(capsys, monkeypatch, tmp_path):
    from resnets import bench
    from resnets.train import precision

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    # The probe is faked to pick bf16: a CPU without it in hardware would spend minutes
    # emulating the bf16 matmul peak, which is not what this test is about.
    monkeypatch.setattr(bench, "matmul_peak_tflops", lambda *a, **k: 1.0)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "measure",
                        lambda model, kwargs, batch, size, paths:
                        {p.name: {"fp32": 0.3, "fp32+channels_last": 0.2,
                                  "bf16+channels_last": 0.1}[p.name] for p in paths})
    code = main(["bench", "--model", "resnet8", "--device", "cpu", "--batch", "2",
                 "--steps", "1", "--warmup", "0", "--json"])  # --batch: the old spelling
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and record["batch_size"] == 2
    assert (record["precision"], record["channels_last"]) == ("bf16", True)
    assert record["precision_choice"].startswith("auto on ")
