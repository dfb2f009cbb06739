"""The full-schedule reproduction (`experiment paper-cifar`, `make reproduce`) on a tiny
schedule: runs trained side by side, finished runs kept lean, the paper's orderings checked."""

import json

import pytest
import torch

from resnets.checkpoint import BEST, LAST, PREVIOUS, build_model, read_checkpoint, save_checkpoint
from resnets.experiments.catalog import build, ordering_checks
from resnets.experiments.runner import FINAL, run_experiment, variant_config
from resnets.train.loop import Trainer

TINY = {"iterations": 6, "milestones": [4], "batch_size": 16, "val_split": 40,
        "eval_every": 3, "save_every": 3, "log_every": 3, "device": "cpu",
        "deterministic": True}


def _base(color_folder, root):
    return {**TINY, "data": str(color_folder), "cache_dir": str(root / "cache")}


@pytest.fixture(scope="module")
def side_by_side(color_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    out = root / "paper"
    summary = run_experiment(build("paper-cifar", depths="resnet20,plain20", seeds=1, out=out),
                             out=out, preset="paper", overrides=_base(color_folder, root),
                             quiet=True, parallel=2)
    return root, out, summary


def test_finished_runs_keep_final_and_best_weights_only(side_by_side):
    _, out, summary = side_by_side
    assert [r["label"] for r in summary["rows"]] == ["resnet20-seed0", "plain20-seed0"]
    assert summary["complete"] and all(r["iterations"] == 6 for r in summary["rows"])
    for label in ("resnet20-seed0", "plain20-seed0"):
        run = out / label
        assert not (run / LAST).exists() and not (run / PREVIOUS).exists()
        final = read_checkpoint(run / FINAL)
        assert final.meta["kind"] == "weights" and final.optimizer_state is None
        assert final.iteration == 6 and final.meta["config"]["iterations"] == 6
        assert read_checkpoint(run / BEST).meta["kind"] == "weights"
        segments = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                    if '"segment"' in line]
        assert len(segments) == 1 and "1 threads" in segments[0]["device"]


def test_table_names_errors_devices_and_the_orderings(side_by_side):
    _, out, summary = side_by_side
    table = (out / "table.md").read_text()
    assert "| net | params (M) | paper test error (%) | our val error (%) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| resnet20-seed0 |"))
    assert "| 0.27 | 8.75 |" in row and "| 6 |" in row and "cpu (" in row
    claims = [c["claim"] for c in summary["checks"]]
    assert claims == ["ResNet-20 has a lower training error than plain-20",
                      "ResNet-20 has a lower validation error than plain-20"]
    assert (out / "degradation.png").stat().st_size > 10_000


def test_runs_trained_side_by_side_equal_runs_trained_alone(side_by_side, color_folder,
                                                            one_thread):
    root, out, _ = side_by_side
    alone = root / "alone"
    run_experiment(build("paper-cifar", depths="plain20", seeds=1, out=alone), out=alone,
                   preset="paper", overrides=_base(color_folder, root), quiet=True)
    a = read_checkpoint(alone / "plain20-seed0" / FINAL).model_state
    b = read_checkpoint(out / "plain20-seed0" / FINAL).model_state
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_runs_are_not_trained_again(side_by_side, color_folder):
    root, out, _ = side_by_side
    before = (out / "resnet20-seed0" / FINAL).stat().st_mtime_ns
    summary = run_experiment(build("paper-cifar", depths="resnet20", seeds=1, out=out),
                             out=out, preset="paper", overrides=_base(color_folder, root),
                             quiet=True, parallel=2)
    assert (out / "resnet20-seed0" / FINAL).stat().st_mtime_ns == before
    assert summary["rows"][0]["iterations"] == 6


def _stopped_run(color_folder, tmp_path):
    """``(out, experiment)``: paper-cifar's resnet20 stopped at iteration 3 of its 6 (as a
    SIGTERM leaves it)."""
    out = tmp_path / "paper"
    exp = build("paper-cifar", depths="resnet20", seeds=1, out=out)
    cfg = variant_config(exp.variants[0], {**_base(color_folder, tmp_path), "iterations": 3,
                                           "milestones": [4]})
    Trainer(cfg, out / "resnet20-seed0", quiet=True).fit()
    return out, exp


def test_summary_only_reports_unfinished_runs_as_in_progress(color_folder, tmp_path):
    out, exp = _stopped_run(color_folder, tmp_path)
    summary = run_experiment(exp, out=out, preset="paper",
                             overrides=_base(color_folder, tmp_path), quiet=True, train=False)
    row = summary["rows"][0]
    assert (row["iterations"], row["finished"], summary["complete"]) == (3, False, False)
    assert (out / "resnet20-seed0" / LAST).exists()  # still resumable
    assert "3 of 6 (in progress)" in (out / "table.md").read_text()


def test_summary_carries_the_fingerprint_and_says_which_error_it_gives(side_by_side,
                                                                        color_folder):
    root, out, summary = side_by_side
    recorded = read_checkpoint(out / "resnet20-seed0" / FINAL).meta["data_fingerprint"]
    for row in summary["rows"]:
        assert row["data_fingerprint"] == recorded and row["data_fingerprint_recorded"]
        metrics = [json.loads(line) for line in
                   (out / row["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        # The one number per net: the validation error training logged at its end.
        assert row["val_error"] == [r for r in metrics if r["kind"] == "val"][-1]["val_error"]
    table = (out / "table.md").read_text()
    assert "as logged by training at its last evaluation" in table
    assert "shipped weights (`val_error`) and the README give" in table
    assert (f"Data: image folder {color_folder.name} (240 files, 0.7 MB): 240 images of 10 "
            f"classes (c0, c1, c2, ...), sha256 {recorded['sha256'][:12]}.") in table


def test_summary_of_a_run_from_before_fingerprints_says_so(color_folder, tmp_path):
    out, exp = _stopped_run(color_folder, tmp_path)
    last = read_checkpoint(out / "resnet20-seed0" / LAST)
    recorded = last.meta.pop("data_fingerprint")
    model = build_model(last.meta)
    model.load_state_dict(last.model_state)
    # Its weights and record as a version before fingerprints wrote them.
    save_checkpoint(out / "resnet20-seed0" / LAST, model=model,
                    meta={**last.meta, "kind": "weights"})
    summary = run_experiment(exp, out=out, preset="paper",
                             overrides=_base(color_folder, tmp_path), quiet=True, train=False)
    row = summary["rows"][0]
    assert row["data_fingerprint"] == recorded and not row["data_fingerprint_recorded"]
    assert ("(resnet20-seed0: from before fingerprints, so the data's fingerprint as it is "
            "now).") in (out / "table.md").read_text()


def _row(model, train, val):
    return {"model": model, "train_error": train, "val_error": val}


def test_ordering_checks_say_what_the_numbers_show():
    rows = [_row("plain20", 0.10, 0.20), _row("plain56", 0.15, 0.25),
            _row("resnet20", 0.08, 0.18), _row("resnet56", 0.05, 0.16)]
    checks = {c["claim"]: c["holds"] for c in ordering_checks(rows)}
    assert checks["plain-56 has a higher training error than plain-20"]
    assert checks["ResNet-56 has a lower validation error than ResNet-20"]
    assert checks["ResNet-56 has a lower training error than plain-56"]
    assert len(checks) == 8 and all(checks.values())
    rows[3] = _row("resnet56", 0.09, 0.19)  # deeper ResNet worse: the check must say so
    checks = {c["claim"]: c["holds"] for c in ordering_checks(rows)}
    assert not checks["ResNet-56 has a lower training error than ResNet-20"]
    assert ordering_checks([_row("resnet20", 0.1, 0.2)]) == []  # nothing to compare yet


def test_parallel_default_is_one_on_a_cpu_and_by_memory_on_a_gpu(monkeypatch):
    from resnets.experiments import parallel

    assert parallel.default_parallel("cpu", 6) == 1
    gib = 1024**3
    monkeypatch.setattr(parallel, "resolve_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (139 * gib, 141 * gib))
    assert parallel.default_parallel("cuda", 7) == 7  # an H200 holds every run of the list
    assert parallel.default_parallel("cuda", 100) == int(0.8 * 139 * gib) // (2 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (gib, 8 * gib))
    assert parallel.default_parallel("cuda", 7) == 1
