"""`resnets bench` on CUDA: the CIFAR nets of Fig. 6 and ResNet-50 with torchvision's model
timed in the same run. Each record is appended to $RESNETS_GPU_OUT/bench_gpu.jsonl, the file
that benchmarks/gpu_session.sh brings back to be committed with the GPU named."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resnets.bench import run_benchmark

BENCH_FILE = "bench_gpu.jsonl"
CASES = [("resnet20", "bf16"), ("resnet56", "bf16"), ("resnet50", "bf16"), ("resnet50", "fp32")]


@pytest.fixture(scope="module")
def bench_file(gpu_out):
    """The JSON-lines file, emptied once per session so it holds this run's records only."""
    path = gpu_out / BENCH_FILE
    path.write_text("")
    return path


@pytest.mark.parametrize(("name", "precision"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_bench_on_cuda_against_torchvision(name, precision, bench_file):
    res = run_benchmark(name, device="cuda", precision=precision, compare_torchvision=True,
                        steps=20, warmup=5, rounds=4)
    with bench_file.open("a") as f:
        f.write(json.dumps(res) + "\n")
    assert res["device"].startswith("cuda")
    assert torch.cuda.get_device_name(0) in res["device_name"]  # the GPU is named
    assert res["batch_size"] == 256 and res["precision"] == precision
    assert res["channels_last"] is (precision == "bf16")  # native bf16: channels_last with it
    assert math.isfinite(res["img_per_s"]) and res["img_per_s"] > 0
    assert res["peak_tflops"] > 0 and 0 < res["peak_fraction"] <= 1
    assert res["versions"]["torch"] == torch.__version__
    tv = res["torchvision"]
    if name == "resnet50":
        assert tv is not None and tv["img_per_s"] > 0 and tv["ratio"] > 0
        assert tv["ratio"] == pytest.approx(tv["ours"]["img_per_s"] / tv["img_per_s"])
        # Compared in one architecture: ours in torchvision's stride layout, equal MACs.
        assert tv["ours"]["macs_per_image"] == tv["macs_per_image"]
        assert res["macs_per_image"] < tv["macs_per_image"]  # the paper's stride on the 1x1
    else:
        assert tv is None  # CIFAR nets have no torchvision twin
    lines = [json.loads(line) for line in bench_file.read_text().splitlines()]
    assert lines[-1]["model"] == name and lines[-1]["precision"] == precision
