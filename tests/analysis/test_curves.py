import matplotlib

matplotlib.use("Agg")  # headless, as the package draws

from matplotlib.figure import Figure  # noqa: E402

from resnets.analysis.curves import describe_setup, describe_setups, draw_panel  # noqa: E402


def _rows(val_iterations):
    train = [{"kind": "train", "iteration": i, "train_error": 0.5} for i in (10, 20, 30)]
    return train + [{"kind": "val", "iteration": i, "val_error": 0.4} for i in val_iterations]


def _lines(rows):
    ax = Figure().add_subplot()
    draw_panel(ax, {"run": rows}, "title")
    return {line.get_label(): line for line in ax.get_lines()}


def test_a_single_validation_point_is_drawn_as_a_marker():
    # a run shorter than eval_every validates once: a line of one point draws nothing
    val = _lines(_rows([30]))["run val"]
    assert val.get_marker() == "o" and list(val.get_xdata()) == [30]
    assert list(val.get_ydata()) == [40.0]


def test_curves_of_several_points_are_lines_without_markers():
    lines = _lines(_rows([15, 30]))
    assert lines["run val"].get_marker() == "None" and lines["run train"].get_marker() == "None"
    assert lines["run val"].get_linestyle() == "-" and lines["run train"].get_linestyle() == "--"


CONFIG = {"val_split": 2000, "train_subset": 10000, "iterations": 60, "batch_size": 128,
          "lr": 0.1, "milestones": [45], "gamma": 0.1, "warmup_lr": None}


def test_setup_is_described_from_the_runs_own_config_and_counts():
    run = {"train_images": 10000, "val_images": 2000}
    assert describe_setup(CONFIG, run) == (
        "trained on 10,000 images, validated on 2,000 held out of the training set; "
        "60 iterations of batch 128, lr 0.1, times 0.1 at 45")
    # before it ran, from the options; no validation and a warm-up are said as such
    cfg = {**CONFIG, "val_split": 0, "train_subset": None, "warmup_lr": 0.01,
           "milestones": [32000, 48000], "iterations": 64000}
    assert describe_setup(cfg) == (
        "trained on all the images, no validation split; 64,000 iterations of batch "
        "128, lr 0.1, times 0.1 at 32,000, 48,000, after a warm-up at 0.01")


def test_several_runs_share_one_sentence_only_when_they_agree():
    assert describe_setups({"a": "x", "b": "x"}) == "Every run: x."
    assert describe_setups({"a": "x", "b": "y"}) == "a: x. b: y."
