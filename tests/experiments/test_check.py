"""`resnets check RUN_DIR --against EXPERIMENT_DIR` on fake committed results and user runs
written in the formats of `resnets experiment` (summary.json + run directories) and
`resnets train` (config.json + metrics.jsonl)."""

from __future__ import annotations

import json

import pytest

from resnets.cli import main
from resnets.config import resolve_config
from resnets.experiments.check import check_run

DATA = "../shared/data/cifar10-jpg-train.tar.xz"
ITERATIONS = 64000
COMMITTED_VERSIONS = {"resnets": "0.1.0", "torch": "2.14.1+cu130",
                      "torchvision": "0.29.1+cu130", "python": "3.11.7"}
USER_VERSIONS = {"resnets": "0.1.0", "torch": "2.5.1", "torchvision": "0.20.1",
                 "python": "3.12.1"}
H200, LAPTOP = "NVIDIA H200", "cpu (Some CPU Model, 8 cores, 8 threads)"


def _config(**overrides) -> dict:
    values = {"model": "resnet20", "data": DATA, **overrides}
    return resolve_config("cifar10-paper", **values).to_dict()


def _fingerprint(digit: str, name: str = "cifar10-jpg-train.tar.xz") -> dict:
    """A data fingerprint as runs record it; ``digit`` makes the sha256."""
    return {"images": 50000, "classes": ["airplane", "automobile"], "image_size": [3, 32, 32],
            "sha256": digit * 64, "source": {"kind": "image-folder archive", "name": name,
                                             "bytes": 15476500, "files": None}}


def _write_run(run_dir, config: dict, *, val: list[tuple[int, float]], device: str,
               versions: dict, train_error: float = 0.01,
               fingerprint: dict | None = None) -> None:
    """config.json and metrics.jsonl as `resnets train` writes them (``fingerprint``: the
    run's data fingerprint; None: a run from before fingerprints)."""
    run_dir.mkdir(parents=True)
    run = {"model": config["model"], "device": device}
    if fingerprint:
        run["data_fingerprint"] = fingerprint
    record = {"config": config, "run": run, "versions": versions}
    (run_dir / "config.json").write_text(json.dumps(record, indent=2))
    rows = [{"kind": "segment", "iteration": 0, "device": device, "versions": versions},
            {"kind": "train", "iteration": val[-1][0], "train_error": train_error}]
    rows += [{"kind": "val", "iteration": it, "val_error": err, "val_loss": 0.3}
             for it, err in val]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _committed(root, errors: dict[int, float], model: str = "resnet20",
               unfinished: dict[int, float] | None = None, fingerprint: dict | None = None,
               in_summary: bool = False, **overrides):
    """An experiment directory with finished runs of `model` (seed -> final val error) and,
    optionally, unfinished ones; ``fingerprint`` in each run's config.json, or only in the
    summary rows (``in_summary``: runs from before fingerprints, summarized after)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, err in list(errors.items()) + list((unfinished or {}).items()):
        label = f"{model}-seed{seed}"
        finished = seed in errors
        _write_run(root / label, _config(model=model, seed=seed, **overrides),
                   val=[(ITERATIONS if finished else 1000, err)], device=H200,
                   versions=COMMITTED_VERSIONS,
                   fingerprint=None if in_summary else fingerprint)
        rows.append({"label": label, "model": model, "seed": seed, "run_dir": label,
                     "finished": finished, "val_error": err, "train_error": 0.005,
                     "devices": [H200], "data_fingerprint": fingerprint})
    summary = {"experiment": "paper-cifar", "rows": rows, "versions": COMMITTED_VERSIONS}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return root


def _user(tmp_path, error: float, *, last_iteration: int = ITERATIONS, name: str = "mine",
          fingerprint: dict | None = None, **overrides):
    run = tmp_path / name
    config = _config(seed=7, device="cpu", precision="fp32", **overrides)
    _write_run(run, config, val=[(1000, 0.5), (last_iteration, error)], device=LAPTOP,
               versions=USER_VERSIONS, fingerprint=fingerprint)
    return run


def _check(capsys, run, against, *extra) -> tuple[int, list[str]]:
    rc = main(["check", str(run), "--against", str(against), *extra])
    return rc, capsys.readouterr().out.strip().splitlines()


@pytest.fixture
def three_seeds(tmp_path):
    # mean 8.2%, sample std 0.2 points: the interval is [7.8%, 8.6%]
    return _committed(tmp_path / "paper-cifar", {0: 0.080, 1: 0.082, 2: 0.084},
                      unfinished={3: 0.5})  # an unfinished seed must not count


def test_inside_prints_versions_hardware_and_free_differences(tmp_path, three_seeds, capsys):
    rc, lines = _check(capsys, _user(tmp_path, 0.0845), three_seeds)
    assert rc == 0
    assert lines[-1] == ("inside: final val error 8.45% is inside the committed interval "
                         "[7.80%, 8.60%] of resnet20.")
    text = "\n".join(lines)
    assert ("committed interval [7.80%, 8.60%]: mean +- 2 std over 3 committed seeds (0, 1, 2: "
            "8.00%, 8.20%, 8.40%)") in text
    torch_line = next(ln for ln in lines if ln.startswith("torch "))
    assert "2.5.1" in torch_line and "2.14.1+cu130" in torch_line
    assert "0.20.1" in next(ln for ln in lines if ln.startswith("torchvision "))
    device_line = next(ln for ln in lines if ln.startswith("device "))
    assert LAPTOP in device_line and H200 in device_line
    # Seed, device and precision differ: listed, but they do not stop the comparison.
    assert '  seed: 7 vs 0, 1, 2 (free)' in lines  # every committed seed's value
    assert '  device: "cpu" vs "auto" (free)' in lines
    assert '  precision: "fp32" vs "auto" (free)' in lines


def test_a_committed_seed_checked_against_its_experiment_lists_every_seed(three_seeds, capsys):
    # the seed-0 run differs from seeds 1 and 2, not from itself: "0 vs 1" would hide that
    rc, lines = _check(capsys, three_seeds / "resnet20-seed0", three_seeds)
    assert rc == 0 and "  seed: 0 vs 0, 1, 2 (free)" in lines
    assert not any(ln.startswith("  seed: 0 vs 1") for ln in lines)


def test_outside_above_and_below(tmp_path, three_seeds, capsys):
    rc, lines = _check(capsys, _user(tmp_path, 0.095), three_seeds)
    assert rc == 1
    assert lines[-1] == ("outside: final val error 9.50% is above the committed interval "
                         "[7.80%, 8.60%] of resnet20.")
    rc, lines = _check(capsys, _user(tmp_path, 0.070, name="lucky"), three_seeds)
    assert rc == 1 and "is below the committed interval" in lines[-1]


def test_one_committed_seed_uses_the_stated_tolerance(tmp_path, capsys):
    against = _committed(tmp_path / "one", {0: 0.080})
    run = _user(tmp_path, 0.090)
    rc, lines = _check(capsys, run, against)  # default 1.5 points: [6.5%, 9.5%]
    assert rc == 0
    assert any("one committed seed (0: 8.00%), so its error +- 1.5 points (--tolerance)" in ln
               for ln in lines)
    assert "[6.50%, 9.50%]" in lines[-1]
    rc, lines = _check(capsys, run, against, "--tolerance", "0.5")
    assert rc == 1 and "above the committed interval [7.50%, 8.50%]" in lines[-1]
    assert main(["check", str(run), "--against", str(against), "--tolerance", "nan"]) == 2
    assert "--tolerance must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"lr": 0.05}, "not comparable: different recipe: lr 0.05 vs 0.1;"),
    ({"milestones": [30000, 45000]},
     "not comparable: different recipe: milestones [30000, 45000] vs [32000, 48000];"),
    ({"val_split": 1000}, "not comparable: different data/split: val_split 1000 vs 5000;"),
    ({"data": "/data/cifar-100-python.tar.gz"},
     'not comparable: different data/split: data "/data/cifar-100-python.tar.gz" vs '
     f'"{DATA}";'),
    ({"model_kwargs": {"shortcut": "B"}},
     'not comparable: different model: model_kwargs {"shortcut": "B"} vs {};'),
])
def test_other_recipe_model_or_data_is_not_comparable(tmp_path, three_seeds, capsys,
                                                      overrides, reason):
    rc, lines = _check(capsys, _user(tmp_path, 0.082, **overrides), three_seeds)
    assert rc == 2
    assert lines[-1].startswith(reason)
    assert "not a reference for this run" in lines[-1]


def test_same_data_elsewhere_is_comparable(tmp_path, three_seeds, capsys):
    # The same archive under another path (another machine), from runs without fingerprints:
    # compared by name.
    run = _user(tmp_path, 0.082, data="/mnt/datasets/cifar10-jpg-train.tar.xz")
    rc, lines = _check(capsys, run, three_seeds)
    assert rc == 0 and not any(ln.startswith("  data:") for ln in lines)


@pytest.mark.parametrize("in_summary", [False, True])
def test_data_is_compared_by_fingerprint_not_by_path(tmp_path, capsys, in_summary):
    """The same images under another path and name are comparable; other images at the very
    same path are not. Committed runs from before fingerprints take theirs from the summary."""
    against = _committed(tmp_path / "fp", {0: 0.080, 1: 0.082, 2: 0.084},
                         fingerprint=_fingerprint("a"), in_summary=in_summary)
    moved = _user(tmp_path, 0.082, data="/mnt/datasets/cifar10-copy.tar.xz",
                  fingerprint=_fingerprint("a", name="cifar10-copy.tar.xz"))
    rc, lines = _check(capsys, moved, against)
    assert rc == 0 and not any(ln.startswith("  data:") for ln in lines)
    assert any(ln.startswith("data compared by fingerprint: yours image-folder archive "
                             "cifar10-copy.tar.xz") for ln in lines)
    other = _user(tmp_path, 0.082, name="other", fingerprint=_fingerprint("b"))
    rc, lines = _check(capsys, other, against)
    assert rc == 2
    assert lines[-1].startswith('not comparable: different data/split: data "image-folder '
                                'archive cifar10-jpg-train.tar.xz')
    assert f"sha256 {'b' * 12}\" vs \"image-folder archive" in lines[-1]
    assert f"sha256 {'a' * 12}\"; the committed resnet20 runs" in lines[-1]


def test_runs_without_fingerprints_are_compared_by_data_name(tmp_path, three_seeds, capsys):
    rc, lines = _check(capsys, _user(tmp_path, 0.082, fingerprint=_fingerprint("a")),
                       three_seeds)
    assert rc == 0
    assert ("data compared by file name only: a committed run recorded no data fingerprint "
            "(written before resnets recorded them)") in lines


def test_another_net_or_an_unfinished_run_is_not_comparable(tmp_path, three_seeds, capsys):
    rc, lines = _check(capsys, _user(tmp_path, 0.07, model="resnet32"), three_seeds)
    assert rc == 2
    assert lines[-1] == (f"not comparable: no finished committed run of resnet32 in "
                         f"{three_seeds} (it holds resnet20).")
    rc, lines = _check(capsys, _user(tmp_path, 0.3, last_iteration=32000, name="half"),
                       three_seeds)
    assert rc == 2
    assert lines[-1].startswith("not comparable: ")
    assert ("has no validation row at its final iteration 64000 (its last is at iteration "
            "32000)") in lines[-1]


def test_unfinished_committed_runs_do_not_count(tmp_path, capsys):
    against = _committed(tmp_path / "busy", {}, unfinished={0: 0.4})
    rc, lines = _check(capsys, _user(tmp_path, 0.08), against)
    assert rc == 2
    assert "1 run(s) of resnet20 there, none finished" in lines[-1]


def test_json_and_api_agree(tmp_path, three_seeds, capsys):
    run = _user(tmp_path, 0.0845)
    rc = main(["check", str(run), "--against", str(three_seeds), "--json"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == record["status"] == 0 and record["verdict"] == "inside"
    assert record["seeds"] == [0, 1, 2] and record["committed"] == [0.080, 0.082, 0.084]
    assert record["interval"] == pytest.approx([0.078, 0.086])
    result = check_run(run, three_seeds)
    assert result.status == 0 and result.record["val_error"] == 0.0845


def test_missing_files_are_user_errors(tmp_path, three_seeds, capsys):
    assert main(["check", str(tmp_path / "nowhere"), "--against", str(three_seeds)]) == 2
    assert "config.json does not exist" in capsys.readouterr().err
    run = _user(tmp_path, 0.08)
    assert main(["check", str(run), "--against", str(tmp_path)]) == 2
    assert "summary.json does not exist" in capsys.readouterr().err
