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
