import dataclasses
import json

import pytest

from resnets.cli import main
from resnets.config import TrainConfig, resolve_config
from resnets.errors import UserError
from resnets.experiments.catalog import build, degradation_checks
from resnets.experiments.runner import PRESETS, run_experiment
from resnets.report import build_report, check_rendered, find_chromium


def _row(model, train_error):
    return {"label": f"{model}-seed0", "model": model, "train_error": train_error}


def test_degradation_checks_say_what_the_numbers_show():
    rows = [_row("plain20", 0.30), _row("plain56", 0.45), _row("resnet20", 0.28),
            _row("resnet56", 0.25)]
    checks = degradation_checks(rows, [20, 56])
    assert [c["holds"] for c in checks] == [True, True, True]
    assert checks[0]["detail"] == "45.00% vs 30.00%"
    rows[1] = _row("plain56", 0.29)  # no degradation: the check must say so
    rows[3] = _row("resnet56", 0.40)
    assert [c["holds"] for c in degradation_checks(rows, [20, 56])] == [False, False, False]


TINY = {"iterations": 6, "milestones": [4], "batch_size": 16, "val_split": 40,
        "train_subset": None, "eval_every": 3, "save_every": 3, "log_every": 3,
        "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_experiments(color_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    base = {**TINY, "data": str(color_folder), "cache_dir": str(root / "cache")}
    t6 = run_experiment(build("table6", depths="8", seeds=2, out=root / "t6"),
                        out=root / "t6", preset="cpu-mini", overrides=base, quiet=True)
    deg = run_experiment(build("degradation", depths="20,32", seeds=1, out=root / "deg"),
                         out=root / "deg", preset="cpu-mini", overrides=base, quiet=True)
    return root, t6, deg


def test_table6_has_the_papers_column_and_mean_std(tiny_experiments):
    root, t6, _ = tiny_experiments
    assert [r["label"] for r in t6["rows"]] == ["resnet8-seed0", "resnet8-seed1"]
    assert all(r["iterations"] == 6 for r in t6["rows"])
    errs = [r["val_error"] for r in t6["rows"]]
    assert errs[0] != errs[1]  # two seeds, two different runs
    table = (root / "t6" / "table.md").read_text()
    assert "| depth | params (M) | paper params (M) | paper test error (%) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean = 100 * (errs[0] + errs[1]) / 2
    std = 100 * abs(errs[0] - errs[1]) / 2 ** 0.5
    best, worst = 100 * min(errs), 100 * max(errs)
    assert cells[4:] == ["2", f"{mean:.2f} ± {std:.2f}", f"{best:.2f}", f"{worst:.2f}",
                         f"{best:.2f} ({mean:.2f} ± {std:.2f})"]
    assert "never test data and never used to pick weights" in table
    saved = json.loads((root / "t6" / "summary.json").read_text())
    assert saved["paper"]["test_error"]["20"] == 8.75
    assert saved["stats"]["8"]["n"] == 2


def test_every_experiment_trains_each_net_once_per_seed(tmp_path):
    for name, depths in (("degradation", "20"), ("shortcuts", "20"), ("preact", "20")):
        labels = [v.label for v in build(name, depths=depths, seeds=2, out=tmp_path).variants]
        assert len(labels) == len(set(labels)) and all(lb.endswith(("-seed0", "-seed1"))
                                                       for lb in labels), name
        assert sum(lb.endswith("-seed1") for lb in labels) == len(labels) // 2, name


def test_one_seed_shows_no_spread_and_says_n_1():
    from resnets.experiments.catalog import best_of, error_stats, mean_std

    st = error_stats([0.1234])
    assert (mean_std(st), best_of(st)) == ("12.34 (n = 1)", "12.34 (n = 1)")
    st = error_stats([0.10, 0.12, None])
    assert st["n"] == 2 and mean_std(st) == "11.00 ± 1.41" and best_of(st) == \
        "10.00 (11.00 ± 1.41)"


def test_degradation_writes_figure_table_and_checks(tiny_experiments):
    root, _, deg = tiny_experiments
    assert [r["label"] for r in deg["rows"]] == ["plain20-seed0", "plain32-seed0",
                                                 "resnet20-seed0", "resnet32-seed0"]
    assert (root / "deg" / "degradation.png").stat().st_size > 10_000
    assert deg["figures"] == ["degradation.png"]
    assert len(deg["checks"]) == 3
    assert "plain-32 trains to a higher training error than plain-20" in \
        (root / "deg" / "table.md").read_text()


def test_finished_runs_are_reused(tiny_experiments, color_folder):
    root, _, _ = tiny_experiments
    last = root / "t6" / "resnet8-seed0" / "last.safetensors"
    before = last.stat().st_mtime_ns
    base = {**TINY, "data": str(color_folder), "cache_dir": str(root / "cache")}
    run_experiment(build("table6", depths="8", seeds=2, out=root / "t6"), out=root / "t6",
                   preset="cpu-mini", overrides=base, quiet=True)
    assert last.stat().st_mtime_ns == before


def test_report_embeds_every_figure_and_table(tiny_experiments, tmp_path):
    root, _, _ = tiny_experiments
    run_dir = root / "deg" / "resnet20-seed0"
    res = build_report([root / "t6", root / "deg", run_dir], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    # table6: settings + table + runs table; degradation: the same + figure; run: table + figure
    assert (res["figures"], res["tables"]) == (2, 7)
    assert page.count("<img data-figure=") == 2 and page.count("<table data-table=") == 7
    assert "cpu-mini preset, 6 iterations)" in page  # sections of other lengths tell apart
    assert '<table data-table="table6-settings">' in page and "<td>iterations</td>" in page
    assert 'data-expected-figures="2"' in page and "data:image/png;base64," in page
    md = (tmp_path / "r.md").read_text()
    assert "| depth | params (M) |" in md and "![" in md


def test_table_and_report_describe_each_run_from_its_own_config(tiny_experiments, tmp_path):
    root, _, _ = tiny_experiments
    run = json.loads((root / "t6" / "resnet8-seed0" / "config.json").read_text())["run"]
    setup = (f"trained on {run['train_images']:,} images, validated on 40 held out of the "
             f"training set; 6 iterations of batch 16, lr 0.1, times 0.1 at 4")
    assert run["val_images"] == 40
    table = (root / "t6" / "table.md").read_text()
    assert f"Every run: {setup}." in table
    assert "45k/5k" not in table  # not the recipe's words
    res = build_report([root / "t6", root / "deg" / "resnet20-seed0"],
                       tmp_path / "sub" / "r.html")
    md = (tmp_path / "sub" / "r.md").read_text()
    assert f"Every run: {setup}." in md  # the experiment section
    assert "What ran: trained on" in md and "800-iteration" not in md  # the single run's
    # figures are linked relative to the Markdown file, and the links resolve
    links = [line[line.index("](") + 2:-1] for line in md.splitlines() if line.startswith("![")]
    assert res["figures"] == len(links) == 1
    assert not links[0].startswith("/") and (tmp_path / "sub" / links[0]).resolve() == \
        (root / "deg" / "resnet20-seed0" / "curves.png").resolve()


def test_report_refuses_unknown_directories_and_missing_figures(tiny_experiments, tmp_path):
    with pytest.raises(UserError, match="is not an experiment"):
        build_report([tmp_path], tmp_path / "r.html")
    root, _, _ = tiny_experiments
    broken = tmp_path / "deg"
    broken.mkdir()
    for name in ("summary.json", "table.md"):
        (broken / name).write_text((root / "deg" / name).read_text())
    with pytest.raises(UserError, match="degradation.png is missing"):
        build_report([broken], tmp_path / "r.html")


@pytest.mark.skipif(find_chromium() is None,
                    reason="no headless Chromium on PATH (chromium, chromium-browser or "
                           "google-chrome): `sudo apt-get install chromium` on Debian, or run "
                           ".ci/install-chromium (as .ci/run does)")
def test_rendered_report_shows_every_figure_and_table(tiny_experiments, tmp_path):
    root, _, _ = tiny_experiments
    build_report([root / "deg"], tmp_path / "r.html")
    counts = check_rendered(tmp_path / "r.html", screenshot=tmp_path / "shot.png")
    assert counts["loaded-figures"] == counts["expected-figures"] == 1
    assert counts["rendered-tables"] == counts["expected-tables"] == 3
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    # A page whose figure cannot decode must fail the check.
    page = (tmp_path / "r.html").read_text()
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    (tmp_path / "bad.html").write_text(page[:start] + "AAAA" + page[start + 4000:])
    with pytest.raises(UserError, match="incomplete"):
        check_rendered(tmp_path / "bad.html")


def test_cli_experiment_rejects_bad_depths(capsys):
    assert main(["experiment", "table6", "--out", "x", "--depths", "20,abc"]) == 2
    assert "--depths must be comma-separated integers" in capsys.readouterr().err


def test_seeds_take_a_count_or_a_list(tmp_path, capsys):
    from resnets.experiments.catalog import parse_seeds

    assert (parse_seeds(3), parse_seeds("0,1,2"), parse_seeds("5,")) == ([0, 1, 2], [0, 1, 2], [5])
    labels = [v.label for v in build("table6", depths="20", seeds="4,7", out=tmp_path).variants]
    assert labels == ["resnet20-seed4", "resnet20-seed7"]
    for bad in ("0", "a,b", "1,1", "-1,"):
        assert main(["experiment", "table6", "--out", str(tmp_path), f"--seeds={bad}"]) == 2
        assert "--seeds takes a count N" in capsys.readouterr().err


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """Colour classes as ROOT/train/<class> and ROOT/test/<class>: a source with a test split."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("with-test")
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, size=(10, 3))
    for split, n in (("train", 20), ("test", 6)):
        for c in range(10):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                img = np.clip(palette[c] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / split / f"c{c}" / f"{i}.png")
    return root


def test_table6_final_protocol_trains_on_all_images_and_reports_test_error(split_folder,
                                                                            tmp_path):
    out = tmp_path / "t6"
    base = {**TINY, "val_split": 0, "data": str(split_folder),
            "cache_dir": str(tmp_path / "cache")}
    summary = run_experiment(build("table6", depths="8", seeds=2, out=out), out=out,
                             preset="cpu-mini", overrides=base, quiet=True, test=True)
    rows = summary["rows"]
    assert all(r["val_error"] is None and 0 <= r["test_error"] <= 1 for r in rows)
    config = json.loads((out / "resnet8-seed0" / "config.json").read_text())
    assert config["run"]["train_images"] == 200 and config["run"]["val_images"] == 0
    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| depth |"))
    assert header.endswith("| our test error mean ± std (%) |")
    row = next(line for line in table.splitlines() if line.startswith("| 8 |"))
    errs = [100 * r["test_error"] for r in rows]
    mean = sum(errs) / 2
    std = abs(errs[0] - errs[1]) / 2 ** 0.5
    assert row.endswith(f"| {mean:.2f} ± {std:.2f} |") and "| 0 | - | - | - | - |" in row
    assert ("Test error: the source's test split, nets trained on all its training images: "
            "the paper's Table 6 protocol.") in table
    assert ("The paper's column: its CIFAR-10 test error, of nets trained on all 50k training "
            "images (the paper held 5k of them out only to choose the schedule).") in table


def test_a_test_column_of_nets_trained_on_45k_does_not_claim_the_papers_protocol():
    from resnets.experiments.catalog import test_column_note

    held_out = test_column_note([{"test_error": 0.1, "trained_on_all": False},
                          {"test_error": 0.2, "trained_on_all": True}])
    assert "so not the paper's protocol" in held_out
    assert "`resnets experiment table6 --val-split 0 --test` runs that protocol" in held_out
    assert "the paper's Table 6 protocol." in test_column_note([{"test_error": 0.1,
                                                          "trained_on_all": True}])


def test_test_error_needs_a_source_with_a_test_split(color_folder, tmp_path):
    out = tmp_path / "t6"
    base = {**TINY, "data": str(color_folder), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(UserError, match="test"):
        run_experiment(build("table6", depths="8", seeds=1, out=out), out=out,
                       preset="cpu-mini", overrides=base, quiet=True, test=True)


def test_presets_set_only_train_config_fields_with_valid_values():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(PRESETS) == {"paper", "cpu-mini"}
    for name, preset in PRESETS.items():
        assert set(preset) <= fields, name
        cfg = resolve_config("cifar10-paper", model="resnet20", **preset)
        assert {k: getattr(cfg, k) for k in preset} == {
            k: tuple(v) if isinstance(v, list) else v for k, v in preset.items()}, name
