"""A metrics.jsonl whose last line was torn (SIGKILL or a full disk mid-write) is still read by
every reader (one function: plots, reports, resume), and the next run appends whole lines."""

from __future__ import annotations

import shutil

from resnets.analysis.curves import plot_run, read_metrics
from resnets.checkpoint import LAST, PREVIOUS

TORN = '{"kind": "train", "iteration": 3, "lr'


def _torn_copy(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(TORN)
    return run


def test_reader_skips_a_torn_line_and_keeps_segment_records(trained, tmp_path):
    run = _torn_copy(trained, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("\n[1, 2]\n\n")  # valid JSON that is no record, and blank lines
    rows = read_metrics(run)
    assert [(r["kind"], r["iteration"]) for r in rows] == [("segment", 0), ("train", 2)]
    assert plot_run(run).is_file()


def test_report_of_a_run_with_a_torn_line(cli, trained, tmp_path):
    run = _torn_copy(trained, tmp_path)
    code, out, err = cli("report", run, "--out", tmp_path / "report.html")
    assert code == 0, err
    assert "resnet8" in (tmp_path / "report.html").read_text()


def test_a_run_killed_before_its_first_checkpoint_restarts_on_whole_lines(cli, tiny_train_args,
                                                                         trained, tmp_path):
    run = _torn_copy(trained, tmp_path)
    for name in (LAST, PREVIOUS):
        (run / name).unlink()  # killed before any save: nothing to resume, start over
    code, out, err = cli(*tiny_train_args(run, "--resume", "auto"))
    assert code == 0, err
    assert f"done: checkpoints, metrics.jsonl, tensorboard/ and curves.png in {run}" in out
    # The rows of the killed attempt after iteration 0 are dropped with the torn line.
    rows = read_metrics(run)
    assert [(r["kind"], r["iteration"]) for r in rows] == [
        ("segment", 0), ("segment", 0), ("train", 2)]
    assert TORN not in (run / "metrics.jsonl").read_text()


def test_new_rows_never_join_a_torn_line(tiny_config, tmp_path):
    from resnets.config import TrainConfig
    from resnets.train.progress import RunLogger

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "segment", "iteration": 0}\n' + TORN)
    describe = {"device": "cpu", "precision": "fp32", "model": "resnet8", "train_images": 1,
                "val_images": 0, "data_source": "x", "steps_per_epoch": 1}
    logger = RunLogger(run, TrainConfig(iterations=5), start=0, quiet=True, describe=describe)
    logger.log({"kind": "train", "iteration": 1, "train_error": 0.5})
    logger.close(finished=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[1] == TORN
    assert [(r["kind"], r["iteration"]) for r in read_metrics(run)] == [
        ("segment", 0), ("segment", 0), ("train", 1)]
