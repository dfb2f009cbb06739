import dataclasses
import json
import re

import pytest

from resnets.config import TrainConfig, resolve_config
from resnets.errors import UserError


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"precision": "fp16"}, "precision must be auto, fp32 or bf16"),
        ({"milestones": [5, 2]}, "milestones must be increasing"),
    ],
)
def test_out_of_range_options_are_user_errors(override, fragment):
    with pytest.raises(UserError, match=fragment):
        resolve_config("cifar10-paper", **override)


def test_unknown_option_and_recipe():
    with pytest.raises(UserError, match="unknown training option"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        resolve_config("nope")


def test_config_round_trips_through_json():
    cfg = resolve_config("cifar10-paper", model="resnet56", iterations=100,
                         model_kwargs={"shortcut": "B"})
    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert again.milestones == (50, 75)


def test_recipe_from_a_toml_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('model = "resnet32"\nlr = 0.05\niterations = 10\nmilestones = [5]\n')
    cfg = resolve_config(str(path))
    assert (cfg.model, cfg.lr, cfg.iterations, cfg.milestones) == ("resnet32", 0.05, 10, (5,))


def test_every_option_is_documented_once_in_the_config():
    from resnets.config import field_docs

    docs = field_docs()
    assert docs["lr"] == "initial learning rate"
    assert docs["batch_size"] == "mini-batch size"
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in docs]
    assert missing == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seed", 2**70, "seed must be in 0..2**63-1"),
    ("seed", -1, "seed must be in 0..2**63-1"),
    ("device", "mps", "device must be auto, cpu, cuda or cuda:N"),
    ("device", "cuda:x", "device must be auto, cpu, cuda or cuda:N"),
])
def test_recipe_values_beyond_what_torch_takes_are_refused(field, value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_config("cifar10-paper", **{field: value})
    assert resolve_config("cifar10-paper", seed=2**63 - 1, device="cuda:1").device == "cuda:1"


def test_every_option_is_declared_once_and_every_one_is_a_flag():
    """The CLI and the resume rule derive from the field declarations; `--help` reads no
    source code; every field has a flag (recipe: --recipe, model_kwargs: --shortcut/--unit)."""
    import argparse

    from resnets.cli import build_parser
    from resnets.config import CHOICES, OPTIONS, RESUMABLE_CHANGES, field_docs

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {s for a in sub.choices["train"]._actions for s in a.option_strings}
    missing = [name for name in OPTIONS if name not in ("recipe", "model_kwargs")
               and "--" + name.replace("_", "-") not in flags]
    assert missing == []
    assert {"--recipe", "--shortcut", "--unit", "--no-flip", "--plateau-patience"} <= flags
    assert field_docs() == {name: f.metadata["help"] for name, f in OPTIONS.items()}
    assert CHOICES["precision"] == ("auto", "fp32", "bf16")
    assert {"iterations", "milestones", "device", "data"} <= RESUMABLE_CHANGES
    assert not {"lr", "seed", "model", "batch_size"} & RESUMABLE_CHANGES


def test_new_flags_reach_the_config(tmp_path):
    from resnets.cli import build_parser
    from resnets.commands.train import overrides_from_args

    args = build_parser().parse_args(["train", "--no-flip", "--pad", "0", "--gamma", "0.2",
                                      "--plateau-patience", "2", "--plateau-threshold", "0.01",
                                      "--warmup-until-error", "0.5",
                                      "--warmup-max-iterations", "7", "--freeze", "stem"])
    cfg = resolve_config("cifar10-paper", **overrides_from_args(args))
    assert (cfg.flip, cfg.pad, cfg.gamma, cfg.plateau_patience, cfg.plateau_threshold,
            cfg.warmup_until_error, cfg.warmup_max_iterations, cfg.freeze) == \
        (False, 0, 0.2, 2, 0.01, 0.5, 7, ("stem",))


# --------------------------------------------------- one warm-up rule, keyed by the network
SCHEDULE_FIELDS = ("lr", "milestones", "gamma", "schedule", "iterations", "warmup_lr",
                   "warmup_until_error", "warmup_max_iterations")


def _schedule(model: str, **model_kwargs) -> tuple:
    cfg = resolve_config("cifar10-paper", model=model, model_kwargs=model_kwargs)
    return tuple(getattr(cfg, name) for name in SCHEDULE_FIELDS)


def test_every_cifar_net_and_unit_gets_the_warmup_of_its_depth():
    from resnets.models import UNITS, list_models, model_info

    names = list_models("cifar")
    assert {"resnet110", "plain110", "preact_resnet110", "resnet164", "preact_resnet164",
            "resnet1001", "preact_resnet1001", "resnet1202", "resnet20"} <= set(names)
    seen = {}
    for name in names:
        depth = model_info(name).depth
        for unit in UNITS:
            cfg = resolve_config("cifar10-paper", model=name, model_kwargs={"unit": unit})
            # He et al. 2016: 110 and 1202 warm up; 1603.05027: all its CIFAR nets (110, 164,
            # 1001); 20-56 never.
            assert cfg.warmup_lr == (0.01 if depth >= 110 else None), (name, unit)
            assert (cfg.lr, cfg.warmup_until_error) == (0.1, 0.8)
            seen.setdefault(depth, set()).add(_schedule(name, unit=unit))
    # One schedule per depth, whatever the name, the unit order or plain / residual.
    assert all(len(schedules) == 1 for schedules in seen.values()), seen
    assert set(seen) == {8, 20, 32, 44, 56, 110, 164, 1001, 1202}


def test_two_names_for_one_net_train_with_one_schedule():
    assert _schedule("resnet164", unit="full_preact") == _schedule("preact_resnet164")
    assert _schedule("resnet1001", unit="full_preact") == _schedule("preact_resnet1001")
    assert _schedule("resnet110", unit="full_preact") == _schedule("preact_resnet110")
    assert _schedule("resnet164")[SCHEDULE_FIELDS.index("warmup_lr")] == 0.01
    # The ImageNet nets of the CIFAR recipe are outside the rule (family "cifar" only).
    assert resolve_config("cifar10-paper", model="resnet152",
                          normalization="channel_mean_std").warmup_lr is None
    # A --warmup-lr given by the caller wins over the rule.
    assert resolve_config("cifar10-paper", model="resnet110", warmup_lr=0.02).warmup_lr == 0.02


def test_a_malformed_depth_rule_is_named(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text('[depth_overrides]\nmin_depth = "deep"\nfamily = "cifar"\nwarmup_lr = 0.01\n')
    with pytest.raises(UserError, match=r"\[depth_overrides\] needs family"):
        resolve_config(str(path), model="resnet110")


# --------------------------------------------- a recorded normalization is the one that ran
@pytest.mark.parametrize(("recipe", "overrides"), [
    ("imagenet-paper", {"normalization": "per_pixel_mean"}),
    ("imagenet-steps", {"normalization": "per_pixel_mean", "model": "resnet18"}),
    ("cifar10-paper", {"model": "resnet18"}),  # an ImageNet net: the folder pipeline
    ("cifar10-paper", {"model": "resnet20", "pipeline": "folder"}),
])
def test_a_normalization_the_folder_pipeline_does_not_run_is_refused(recipe, overrides):
    with pytest.raises(UserError, match="normalization per_pixel_mean is not implemented by "
                                        "the folder pipeline") as err:
        resolve_config(recipe, **overrides)
    assert "--normalization channel_mean_std" in str(err.value)


def test_a_record_stating_a_normalization_that_did_not_run_cannot_be_read():
    record = resolve_config("imagenet-paper").to_dict()
    assert (record["normalization"], record["pipeline"]) == ("channel_mean_std", "folder")
    with pytest.raises(UserError, match="not implemented by the folder pipeline"):
        TrainConfig.from_dict({**record, "normalization": "per_pixel_mean"})


def test_each_pipeline_keeps_the_normalizations_it_runs():
    cifar = resolve_config("cifar10-paper")
    assert (cifar.normalization, cifar.resolved_pipeline()) == ("per_pixel_mean", "device")
    assert resolve_config("cifar10-paper", normalization="channel_mean_std").normalization \
        == "channel_mean_std"
    net = resolve_config("imagenet-paper", model="resnet8", pipeline="device",
                         normalization="per_pixel_mean")
    assert net.resolved_pipeline() == "device"
    assert resolve_config("cifar10-paper", model="resnet18",
                          normalization="channel_mean_std").resolved_pipeline() == "folder"
    assert TrainConfig(model="no_such_net").resolved_pipeline() is None  # refused when built
