"""He init counts a conv's outputs (fan_out, the default) or its inputs (fan_in) (issue 23)."""

from __future__ import annotations

import math

import pytest
import torch

from resnets.cli import build_parser
from resnets.commands.train import overrides_from_args
from resnets.errors import UserError
from resnets.models import create_model


@pytest.mark.parametrize(("mode", "counted"), [("fan_out", 64), ("fan_in", 32)])
def test_init_mode_sets_the_std_of_a_widening_conv(mode, counted):
    torch.manual_seed(0)
    kwargs = {} if mode == "fan_out" else {"init_mode": mode}
    conv = create_model("resnet20", **kwargs).layer3[0].conv1  # 32 -> 64 channels, 3x3
    assert conv.weight.shape == (64, 32, 3, 3)
    expected = math.sqrt(2 / (9 * counted))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.03)
    # A conv that keeps the width has the same std either way.
    same = create_model("resnet20", **kwargs).layer3[1].conv1
    assert same.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.03)


def test_unknown_init_mode_is_refused_with_the_choices():
    with pytest.raises(UserError, match="unknown init_mode 'fan_avg': use fan_out or fan_in"):
        create_model("resnet8", init_mode="fan_avg")


def test_the_train_flag_records_the_mode_in_model_kwargs():
    args = build_parser().parse_args(["train", "--model", "resnet8", "--init-mode", "fan_in"])
    assert overrides_from_args(args)["model_kwargs"] == {"init_mode": "fan_in"}
    args = build_parser().parse_args(["train", "--model", "resnet8"])
    assert "model_kwargs" not in overrides_from_args(args)
