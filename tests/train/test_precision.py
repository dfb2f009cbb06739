"""`--precision auto` picks the faster of fp32 and bf16 by measuring, once per machine and model."""

import json

import pytest
import torch

from resnets.train import precision
from resnets.train.precision import PROBE_FILE, choose, measure

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """A CPU with native bf16 whose measured step times the test sets."""
    calls = []
    times = {"fp32": 0.10, "bf16": 0.20}

    def fake_measure(model, kwargs, batch, size):
        calls.append((model, batch, tuple(size)))
        return dict(times)

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "measure", fake_measure)
    return calls, times


def test_the_faster_candidate_wins_and_is_cached(probe, tmp_path):
    calls, times = probe
    first = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (first.bf16, first.channels_last) == (False, False)
    assert "fp32" in first.reason and "measured now" in first.reason and "100 ms" in first.reason
    times["bf16"] = 0.05  # a later, different measurement must not be taken: the cache answers
    again = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (again.bf16, "cached probe" in again.reason) == (False, True)
    assert calls == [("resnet20", 128, (3, 32, 32))]
    other = choose(CPU, "resnet56", {}, 128, cache_dir=tmp_path)  # another model: measured
    assert other.bf16 and other.channels_last and len(calls) == 2
    cached = json.loads((tmp_path / PROBE_FILE).read_text())
    keys = [json.loads(k) for k in cached]
    assert [k["model"] for k in keys] == ["resnet20", "resnet56"]
    assert all(k["cpu"] and k["threads"] >= 1 and k["torch"] == torch.__version__ for k in keys)


def test_cuda_and_cpus_without_bf16_need_no_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "measure", lambda *a: pytest.fail("no probe expected"))
    cuda = choose(torch.device("cuda"), "resnet20", {}, 128, cache_dir=tmp_path)
    assert (cuda.bf16, cuda.channels_last) == (True, True)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    cpu = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (cpu.bf16, cpu.channels_last) == (False, False)
    assert not (tmp_path / PROBE_FILE).exists()


def test_a_damaged_cache_is_measured_again(probe, tmp_path):
    calls, _ = probe
    (tmp_path / PROBE_FILE).write_text("{not json")
    assert not choose(CPU, "resnet8", {}, 16, cache_dir=tmp_path).bf16
    assert len(calls) == 1 and json.loads((tmp_path / PROBE_FILE).read_text())


def test_measuring_times_both_candidates_and_keeps_the_random_stream(one_thread):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    times = measure("resnet8", {}, 4, (3, 32, 32))
    assert set(times) == {"fp32", "bf16"} and all(t > 0 for t in times.values())
    assert torch.equal(torch.rand(3), expected)


def test_trainer_records_how_auto_chose(probe, tiny_config, tmp_path, monkeypatch):
    from resnets.train.loop import Trainer

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "user-cache"))
    _, times = probe
    times.update(fp32=0.3, bf16=0.1)
    out = tmp_path / "run"
    Trainer(tiny_config(iterations=2, precision="auto"), out, quiet=True).fit()
    run = json.loads((out / "config.json").read_text())["run"]
    assert run["precision"] == "bf16" and run["channels_last"] is True
    assert run["precision_choice"].startswith("auto on ") and "bf16" in run["precision_choice"]
    assert (tmp_path / "user-cache" / PROBE_FILE).is_file()
    segment = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert segment["kind"] == "segment" and segment["precision"] == "bf16"
