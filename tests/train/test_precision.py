"""`--precision auto` picks the fastest CPU training path by measuring, once per machine and
model, and refuses to trust a probe that measured load instead of the paths."""

import json

import pytest
import torch

from resnets.train import precision
from resnets.train.precision import PROBE_FILE, REPROBE_ENV, choose, measure

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """A CPU with native bf16 whose measured step times the test sets."""
    calls = []
    times = {"fp32": 0.10, "fp32+channels_last": 0.12, "bf16+channels_last": 0.20}

    def fake_measure(model, kwargs, batch, size, paths):
        calls.append((model, batch, tuple(size), tuple(p.name for p in paths)))
        return {p.name: times[p.name] for p in paths}

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(precision, "measure", fake_measure)
    return calls, times


def test_the_fastest_candidate_wins_and_is_cached(probe, tmp_path):
    calls, times = probe
    first = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (first.bf16, first.channels_last) == (False, False)
    assert "auto on " in first.reason and ": fp32 (" in first.reason
    assert "measured now" in first.reason and "100 ms in fp32" in first.reason
    assert "200 ms in bf16+channels_last" in first.reason and REPROBE_ENV in first.reason
    times["bf16+channels_last"] = 0.05  # a later measurement must not be taken: the cache answers
    again = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (again.bf16, "cached probe" in again.reason) == (False, True)
    assert calls == [("resnet20", 128, (3, 32, 32),
                      ("fp32", "fp32+channels_last", "bf16+channels_last"))]
    other = choose(CPU, "resnet56", {}, 128, cache_dir=tmp_path)  # another model: measured
    assert other.bf16 and other.channels_last and len(calls) == 2
    cached = json.loads((tmp_path / PROBE_FILE).read_text())
    keys = [json.loads(k) for k in cached]
    assert [k["model"] for k in keys] == ["resnet20", "resnet56"]
    assert all(k["cpu"] and k["threads"] >= 1 and k["torch"] == torch.__version__
               and k["probe"] == precision.PROBE_VERSION for k in keys)


def test_without_native_bf16_the_layouts_are_measured(probe, monkeypatch, tmp_path):
    calls, times = probe
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    times.update({"fp32": 0.125, "fp32+channels_last": 0.100})  # as on an AVX2-only EPYC
    choice = choose(CPU, "resnet56", {}, 128, cache_dir=tmp_path)
    assert (choice.bf16, choice.channels_last) == (False, True)
    assert "fp32+channels_last (" in choice.reason and "ms in bf16" not in choice.reason
    assert calls[0][3] == ("fp32", "fp32+channels_last")


def test_cuda_needs_no_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "measure", lambda *a: pytest.fail("no probe expected"))
    cuda = choose(torch.device("cuda"), "resnet20", {}, 128, cache_dir=tmp_path)
    assert (cuda.bf16, cuda.channels_last) == (True, True)
    assert not (tmp_path / PROBE_FILE).exists()


def test_an_implausible_probe_is_measured_again_then_not_trusted(probe, tmp_path):
    calls, times = probe
    times.update({"fp32": 0.141, "bf16+channels_last": 5.335})  # measured under load
    choice = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert len(calls) == 2  # measured once more before giving up
    assert (choice.bf16, choice.channels_last) == (True, True)  # the class's default
    assert "implausible" in choice.reason and "not cached" in choice.reason
    assert "5335 ms in bf16+channels_last" in choice.reason
    assert not (tmp_path / PROBE_FILE).exists()
    times["bf16+channels_last"] = 0.07  # quiet again: the next run measures and caches
    assert choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path).bf16
    assert len(calls) == 3 and (tmp_path / PROBE_FILE).is_file()


def test_one_implausible_round_then_a_plausible_one_is_cached(probe, monkeypatch, tmp_path):
    calls, _ = probe
    results = iter([{"fp32": 0.1, "fp32+channels_last": 0.1, "bf16+channels_last": 9.0},
                    {"fp32": 0.1, "fp32+channels_last": 0.09, "bf16+channels_last": 0.2}])
    monkeypatch.setattr(precision, "measure", lambda *a: next(results))
    choice = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert (choice.bf16, choice.channels_last) == (False, True)
    assert "measured now" in choice.reason and "90 ms in fp32+channels_last" in choice.reason


def test_reprobe_replaces_the_cached_entry(probe, monkeypatch, tmp_path):
    calls, times = probe
    assert not choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path).bf16
    times["bf16+channels_last"] = 0.05
    monkeypatch.setenv(REPROBE_ENV, "1")
    assert choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path).bf16
    monkeypatch.delenv(REPROBE_ENV)
    again = choose(CPU, "resnet20", {}, 128, cache_dir=tmp_path)
    assert again.bf16 and "cached probe" in again.reason and len(calls) == 2


def test_a_damaged_cache_is_measured_again(probe, tmp_path):
    calls, _ = probe
    (tmp_path / PROBE_FILE).write_text("{not json")
    assert not choose(CPU, "resnet8", {}, 16, cache_dir=tmp_path).bf16
    assert len(calls) == 1 and json.loads((tmp_path / PROBE_FILE).read_text())


def test_measuring_times_every_path_and_keeps_the_random_stream(one_thread):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    paths = (precision.FP32, precision.FP32_CL, precision.BF16_CL)
    times = measure("resnet8", {}, 4, (3, 32, 32), paths)
    assert set(times) == {"fp32", "fp32+channels_last", "bf16+channels_last"}
    assert all(t > 0 for t in times.values())
    assert torch.equal(torch.rand(3), expected)


def test_trainer_records_how_auto_chose(probe, tiny_config, tmp_path, monkeypatch):
    from resnets.train.loop import Trainer

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "user-cache"))
    _, times = probe
    times.update({"fp32": 0.3, "bf16+channels_last": 0.1})
    out = tmp_path / "run"
    Trainer(tiny_config(iterations=2, precision="auto"), out, quiet=True).fit()
    run = json.loads((out / "config.json").read_text())["run"]
    assert run["precision"] == "bf16" and run["channels_last"] is True
    assert run["precision_choice"].startswith("auto on ") and "bf16" in run["precision_choice"]
    assert (tmp_path / "user-cache" / PROBE_FILE).is_file()
    segment = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert segment["kind"] == "segment" and segment["precision"] == "bf16"
